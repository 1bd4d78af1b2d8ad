import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ItemStateStore } from '../../../src/state/item-state.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

// A recorded write gives its lease back (the leases live in one hash per prefix, and a writer still
// holding an item's lease records its write without reading the item's hash again). These walk the
// lease through every outcome of a write (w newer, w not newer, r, u), two writers, a late writer
// whose lease was taken over, duplicates in one call, and tombstones, and check that a lease given
// back is free to exactly one claimant and never left held.
const LEASE_MS = 60_000;
let redis: Redis;
let prefix: string;
let state: ItemStateStore;

beforeAll(() => {
  redis = new Redis(services().redisUrl);
});
afterAll(() => redis.disconnect());
afterEach(() => deletePrefix(services().redisUrl, prefix));

function fresh(): void {
  prefix = uniqueName('review-lease');
  state = new ItemStateStore(redis, prefix, 3600);
}
const leaseOf = async (id: string) => (await redis.hget(state.leasesKey, state.key(id))) ?? '';
const claim = async (id: string, writer: string) => (await state.claimForWrite([id], writer, LEASE_MS))[0]?.claimed;
const write = (id: string, version: number, deleted = false) => ({ itemId: id, version, deleted, contentHash: deleted ? undefined : 'h', model: deleted ? undefined : 'm' });

describe('the write lease emptied by a recorded write', () => {
  it('is free to the next writer after a write recorded, and to exactly one of two racing claimants', async () => {
    fresh();
    expect(await claim('i', 'A')).toBe(true);
    await state.recordWritten([write('i', 1)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await leaseOf('i')).toBe('');
    const [b, c] = await Promise.all([claim('i', 'B'), claim('i', 'C')]);
    expect([b, c].filter(Boolean), 'two writers both took an emptied lease').toHaveLength(1);
  });

  it('is not renewed by the writer that gave it back', async () => {
    fresh();
    await claim('i', 'A');
    await state.recordWritten([write('i', 1)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
    expect(await leaseOf('i')).toBe('');
  });

  it('is released when the write is not newer than what the sink holds', async () => {
    fresh();
    await claim('i', 'A');
    await state.recordWritten([write('i', 5)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    await claim('i', 'A');
    await state.recordWritten([write('i', 3)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await state.get('i')).toMatchObject({ writtenVersion: 5 });
    expect(await claim('i', 'B')).toBe(true);
  });

  it("stays with the writer that took it over when a late writer records its write, and passes to no one on 'u'", async () => {
    fresh();
    await claim('i', 'A');
    // A's lease expired and B took it: A's late record must not free B's item.
    await redis.hset(state.leasesKey, state.key('i'), 'A|1');
    expect(await claim('i', 'B')).toBe(true);
    await state.recordWritten([write('i', 2)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await leaseOf('i')).toMatch(/^B\|/);
    expect(await claim('i', 'C')).toBe(false);
    await state.recordWritten([], { writerId: 'B', leaseMs: LEASE_MS, released: [], uncertain: ['i'] });
    expect(await leaseOf('i')).toMatch(/^~\|/);
    expect(await claim('i', 'B'), 'an uncertain write passes the lease to no one, this writer included').toBe(false);
    expect(await claim('i', 'C')).toBe(false);
  });

  it('handles one item twice in one record, and released with written', async () => {
    fresh();
    await claim('i', 'A');
    await state.recordWritten([write('i', 1), write('i', 2)], { writerId: 'A', leaseMs: LEASE_MS, released: ['i'] });
    expect(await state.get('i')).toMatchObject({ writtenVersion: 2 });
    expect(await leaseOf('i')).toBe('');
    expect(await claim('i', 'B')).toBe(true);
  });

  it('leaves a tombstone that expires, and a later upsert that persists, with the lease free', async () => {
    fresh();
    await claim('i', 'A');
    await state.recordWritten([write('i', 1, true)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await redis.ttl(state.key('i'))).toBeGreaterThan(0);
    expect(await claim('i', 'B')).toBe(true);
    await state.recordWritten([write('i', 2)], { writerId: 'B', leaseMs: LEASE_MS, released: [] });
    expect(await redis.ttl(state.key('i'))).toBe(-1);
    expect(await leaseOf('i')).toBe('');
  });
});
