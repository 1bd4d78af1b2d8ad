import { describe, expect, it } from 'vitest';
import { parseItemWrite } from '../../../src/cli/dlq.js';
import { encodeVector } from '../../../src/queue/jobs.js';

const letter = (vector: unknown) =>
  Buffer.from(JSON.stringify({ itemId: 'sku-1', op: 'upsert', version: 3, metadata: {}, contentHash: 'h', model: 'm', embeddedAt: 'e', acceptedAt: 1, slot: 4, vector }));

describe('a write dead letter read back for dlq retry', () => {
  it('gives the vector back as float32, without the slot of the job it came from', () => {
    const write = parseItemWrite(letter(encodeVector(Float32Array.of(1, 2, 3))), 3);
    expect(write.vector).toEqual(Float32Array.of(1, 2, 3));
    expect(write).not.toHaveProperty('slot');
  });

  it.each([
    ['base64 of bytes that are not whole float32 values', Buffer.from([1, 2, 3, 4, 5]).toString('base64'), /not base64 of float32 values \(it decodes to 5 bytes\)/],
    ['an empty vector', '', /not base64 of float32 values \(it decodes to 0 bytes\)/],
    ['a vector of another dimension', encodeVector(Float32Array.of(1, 2)), /has 2 dimensions, the configured model 3 \(EMBEDDINGS_DIMENSIONS\)/],
  ])('refuses %s, naming the vector', (_what, vector, reason) => {
    expect(() => parseItemWrite(letter(vector), 3)).toThrow(reason);
  });
});
