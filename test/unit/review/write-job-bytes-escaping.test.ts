import { describe, expect, it } from 'vitest';
import { writeJobBytes, type ItemWrite } from '../../../src/queue/jobs.js';

// The write queue's byte budget (WRITE_QUEUE_MAX_BYTES) is charged writeJobBytes per job, and BullMQ
// stores the job as JSON: a text or id whose characters JSON escapes (quotes, backslashes, newlines,
// control characters, lone surrogates) takes up to six bytes per character in Redis.
const payload = (itemId: string, text: string): ItemWrite => ({
  itemId,
  op: 'payload',
  version: 1,
  updatedAt: undefined,
  acceptedAt: 1_795_000_000_000,
  metadata: {},
  contentHash: 'f'.repeat(64),
  model: 'm',
  vector: undefined,
  embeddedAt: undefined,
  text,
  versionSource: 'version',
  textTokens: 1,
  truncated: false,
  heldBy: 'wAbCdEfGhIjKl',
});

describe('writeJobBytes against texts that JSON escapes', () => {
  it.each([
    ['quotes and backslashes', '"\\'.repeat(20_000)],
    ['newlines and tabs (source code, CSV)', 'a\n\tb\r\n'.repeat(10_000)],
    ['control characters', '\u0001\u0002\u001f'.repeat(10_000)],
    ['lone surrogates', '\ud800x\udfff'.repeat(10_000)],
  ])('never counts a payload write of %s below its JSON size', (_what, text) => {
    const job = [payload('sku-"1"\n', text)];
    expect(writeJobBytes(job)).toBeGreaterThanOrEqual(Buffer.byteLength(JSON.stringify({ writes: job })));
  });
});
