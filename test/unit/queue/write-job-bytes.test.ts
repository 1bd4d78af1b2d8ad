import { describe, expect, it } from 'vitest';
import { writeJobBytes, type ItemWrite } from '../../../src/queue/jobs.js';
import { packWrites } from '../../../src/queue/write-jobs.js';

/** What a write job takes in Redis: its data as JSON, and its vectors' blob. */
function stored(writes: ItemWrite[]): number {
  const { data, blob } = packWrites(writes);
  return Buffer.byteLength(JSON.stringify(data)) + (blob?.byteLength ?? 0);
}

const base = { version: 1_795_000_000_123, updatedAt: '2026-11-24T08:00:00.000Z', acceptedAt: Date.now() };
const vector = Float32Array.from({ length: 384 }, (_, i) => Math.sin(i));
const writes: ItemWrite[][] = [
  [{ ...base, itemId: 'sku-1', op: 'upsert', metadata: { title: 'Mug', price: 12.5, tags: ['a', 'b'] }, contentHash: 'f'.repeat(64), model: 'text-embedding-3-small', vector, embeddedAt: new Date().toISOString(), textTokens: 12, truncated: false, heldBy: 'wAbCdEfGhIjKl' }],
  [{ ...base, itemId: 'sku-ü-2', op: 'payload', metadata: { title: 'Tasse ☕' }, contentHash: 'a'.repeat(64), model: 'm', vector: undefined, embeddedAt: undefined, text: 'Große Tasse, 350 ml ☕ '.repeat(40), versionSource: 'kafka_timestamp', textTokens: 400, truncated: true, backfill: 'b123456789012' }],
  [{ ...base, itemId: 'sku-3', op: 'delete', metadata: {}, contentHash: undefined, model: undefined, vector: undefined, embeddedAt: undefined }],
];

describe('writeJobBytes', () => {
  it.each(writes.map((w) => [w[0]?.op, w] as const))('never counts a %s write below its size in Redis, nor far above it', (_op, job) => {
    const exact = stored(job);
    expect(writeJobBytes(job)).toBeGreaterThanOrEqual(exact);
    expect(writeJobBytes(job)).toBeLessThanOrEqual(exact + 400);
  });

  it('counts a job of many writes as the sum of its writes, within the same margin per write', () => {
    const job = Array.from({ length: 128 }, (_, i) => ({ ...(writes[i % 3] as ItemWrite[])[0] as ItemWrite, itemId: `sku-${i}` }));
    const exact = stored(job);
    expect(writeJobBytes(job)).toBeGreaterThanOrEqual(exact);
    expect(writeJobBytes(job)).toBeLessThanOrEqual(exact + 400 * 128);
  });
});

// BullMQ stores the job as JSON: a text or id whose characters JSON escapes (quotes, backslashes,
// newlines, control characters, lone surrogates) takes up to six bytes per character in Redis,
// and the write queue's byte budget (WRITE_QUEUE_MAX_BYTES) is charged what writeJobBytes says.
describe('writeJobBytes against texts that JSON escapes', () => {
  const payload = (itemId: string, text: string): ItemWrite => ({ ...base, itemId, op: 'payload', metadata: {}, contentHash: 'f'.repeat(64), model: 'm', vector: undefined, embeddedAt: undefined, text, versionSource: 'version', textTokens: 1, truncated: false, heldBy: 'wAbCdEfGhIjKl' });

  it.each([
    ['quotes and backslashes', '"\\'.repeat(20_000)],
    ['newlines and tabs (source code, CSV)', 'a\n\tb\r\n'.repeat(10_000)],
    ['control characters', '\u0001\u0002\u001f'.repeat(10_000)],
    ['lone surrogates', '\ud800x\udfff'.repeat(10_000)],
  ])('never counts a payload write of %s below its JSON size', (_what, text) => {
    const job = [payload('sku-"1"\n', text)];
    expect(writeJobBytes(job)).toBeGreaterThanOrEqual(stored(job));
  });
});
