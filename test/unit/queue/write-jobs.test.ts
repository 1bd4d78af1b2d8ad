import { describe, expect, it } from 'vitest';
import { encodeVector, type ItemWrite } from '../../../src/queue/jobs.js';
import { hasBlob, packWrites, remainingWrites, unpackWrites, writeLetter } from '../../../src/queue/write-jobs.js';

const base = { version: 7, updatedAt: undefined, acceptedAt: 1_795_000_000_000, metadata: { title: 'Mug' }, model: 'm', embeddedAt: '2026-11-24T08:00:00.000Z' };
const upsert = (itemId: string, ...values: number[]): ItemWrite => ({ ...base, itemId, op: 'upsert', contentHash: `hash-${itemId}`, vector: Float32Array.from(values), textTokens: 3, truncated: false, heldBy: 'wJob' });
const del = (itemId: string): ItemWrite => ({ ...base, itemId, op: 'delete', metadata: {}, contentHash: undefined, model: undefined, vector: undefined, embeddedAt: undefined });

/** Through JSON, as BullMQ stores the data, and a Buffer at an odd offset, as a socket may hand one over. */
function roundTrip(writes: ItemWrite[]): ItemWrite[] {
  const { data, blob } = packWrites(writes);
  const unaligned = blob === undefined ? undefined : Buffer.concat([Buffer.alloc(1), blob]).subarray(1);
  return unpackWrites(JSON.parse(JSON.stringify(data)), unaligned);
}

describe('write jobs: vectors beside the job', () => {
  it('keeps the vectors out of the JSON and gives every write back as it was, in order', () => {
    const writes = [upsert('a', 1, 2, 3), del('b'), upsert('c', 4, 5, 6)];
    const { data, blob } = packWrites(writes);
    expect(JSON.stringify(data)).not.toContain('vector');
    expect(data.dimensions).toBe(3);
    expect(blob?.byteLength).toBe(2 * 3 * 4);
    expect(roundTrip(writes)).toEqual([{ ...writes[0], slot: 0 }, writes[1], { ...writes[2], slot: 1 }]);
  });

  it('has no blob when no write carries a vector', () => {
    const { data, blob } = packWrites([del('a')]);
    expect(blob).toBeUndefined();
    expect(hasBlob(data)).toBe(false);
    expect(data.dimensions).toBeUndefined();
  });

  it('refuses vectors of different sizes in one job', () => {
    expect(() => packWrites([upsert('a', 1, 2, 3), upsert('b', 1, 2)])).toThrow(/one dimension \(3\); got 3, 2/);
  });

  it('keeps each remaining write at its slot when the job shrinks, so the blob stays valid', () => {
    const writes = [upsert('a', 1, 1), upsert('b', 2, 2), upsert('c', 3, 3)];
    const { data, blob } = packWrites(writes);
    const [, b, c] = unpackWrites(data, blob);
    const shrunk = remainingWrites([c as ItemWrite, b as ItemWrite], data.dimensions);
    expect(unpackWrites(JSON.parse(JSON.stringify(shrunk)), blob).map((w) => [w.itemId, Array.from(w.vector as Float32Array)])).toEqual([
      ['c', [3, 3]],
      ['b', [2, 2]],
    ]);
  });

  it('still names the blob when the job shrinks to writes without a vector, so it is removed when the job completes', () => {
    const { data } = packWrites([upsert('a', 1, 2), del('b')]);
    const [, b] = unpackWrites(data, undefined);
    expect(hasBlob(remainingWrites([b as ItemWrite], data.dimensions))).toBe(true);
  });

  it('keeps the inline vectors of a job an older version queued when it shrinks', () => {
    const old = (itemId: string, ...values: number[]) => {
      const { vector: _, ...rest } = upsert(itemId);
      return { ...rest, vector: encodeVector(Float32Array.from(values)) };
    };
    const writes = unpackWrites({ writes: [old('a', 1, 2), old('b', 3, 4)] }, undefined);
    const shrunk = JSON.parse(JSON.stringify(remainingWrites([writes[1] as ItemWrite], undefined)));
    expect(hasBlob(shrunk)).toBe(false);
    expect(unpackWrites(shrunk, undefined).map((w) => Array.from(w.vector as Float32Array))).toEqual([[3, 4]]);
  });

  it('gives an upsert back without its vector when the blob is gone (the writer dead-letters it if it still needs it)', () => {
    const { data } = packWrites([upsert('a', 1, 2), del('b')]);
    const [a, b] = unpackWrites(data, null);
    expect(a?.vector).toBeUndefined();
    expect(a?.slot).toBe(0);
    expect(b).toEqual(del('b'));
  });

  it('reads a job an older version queued, its vectors base64 inside the data', () => {
    const { vector: _, ...rest } = upsert('a', 1, 2, 3);
    const [a] = unpackWrites({ writes: [{ ...rest, vector: encodeVector(Float32Array.of(1, 2, 3)) }] }, undefined);
    expect(a?.vector).toEqual(Float32Array.of(1, 2, 3));
  });

  it('dead-letters a write with its vector as base64 and without its slot, as dlq retry reads it', () => {
    const [a] = roundTrip([upsert('a', 1, 2, 3)]);
    const letter = JSON.parse(JSON.stringify(writeLetter(a as ItemWrite))) as Record<string, unknown>;
    expect(letter.vector).toBe(encodeVector(Float32Array.of(1, 2, 3)));
    expect(letter).not.toHaveProperty('slot');
    expect(writeLetter(del('b'))).toEqual(del('b'));
  });
});
