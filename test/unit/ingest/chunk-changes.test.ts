import { describe, expect, it } from 'vitest';
import { chunkChanges } from '../../../src/ingest/ingest-consumer.js';
import type { QueuedChange } from '../../../src/queue/jobs.js';

const change = (i: number, bytes: number) => ({ change: { itemId: `i${i}`, op: 'upsert', version: 1, versionSource: 'version', updatedAt: undefined, text: 'x', metadata: {}, source: undefined, acceptedAt: 0 } as QueuedChange, bytes });

describe('chunkChanges', () => {
  it('bounds each embed job by items and by bytes, keeps the order, and gives each its own id', () => {
    const chunks = chunkChanges(Array.from({ length: 10 }, (_, i) => change(i, 100)), 4, 250);
    expect(chunks.map((c) => c.changes.map((s) => s.change.itemId))).toEqual([['i0', 'i1'], ['i2', 'i3'], ['i4', 'i5'], ['i6', 'i7'], ['i8', 'i9']]);
    expect(new Set(chunks.map((c) => c.jobId)).size).toBe(5);
    expect(chunkChanges(Array.from({ length: 9 }, (_, i) => change(i, 1)), 4, 1_000_000).map((c) => c.changes.length)).toEqual([4, 4, 1]);
  });

  it('sends a change larger than the byte bound alone rather than refusing it', () => {
    const chunks = chunkChanges([change(0, 10), change(1, 5000), change(2, 10)], 100, 1000);
    expect(chunks.map((c) => c.changes.map((s) => s.change.itemId))).toEqual([['i0'], ['i1'], ['i2']]);
    expect(chunkChanges([], 10, 10)).toEqual([]);
  });
});
