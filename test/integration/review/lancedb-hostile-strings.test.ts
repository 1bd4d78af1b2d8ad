import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LanceDbSink } from '../../../src/sinks/lancedb/lancedb-sink.js';
import { buildPayload, type Payload, type SinkRecord } from '../../../src/sinks/vector-sink.js';

// The LanceDB writer now fills its Arrow columns from buffers (utf8Data, columnData) and builds
// payloads with Object.assign: what goes in must come back out of the real LanceDB unchanged,
// whatever the source sent (JSON-valid, so anything JSON.parse can produce).
const DIMENSIONS = 4;
const dir = mkdtempSync(join(tmpdir(), 'review-lancedb-hostile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HOSTILE_METADATA: Record<string, unknown>[] = [
  JSON.parse('{"__proto__": {"polluted": true}, "title": "a key named __proto__"}') as Record<string, unknown>,
  { title: 'NUL \u0000 inside', note: 'lone \ud800 high and \udc00 low surrogate', quote: '"\'\\`', emoji: '😀👍🏽', big: 'x'.repeat(200_000) },
  { version: 'metadata must not win over a system field', item_id: 'nor this', truncated: 'nor this' },
  { n: -0, nan: null, nested: { deep: [1, { a: [] }] }, t: true, f: false },
  {},
];
const ITEM_IDS = ['plain', 'NUL\u0000id', '"quoted" \'id\' \\', '😀 emoji id ü', 'i'.repeat(512)];

function record(itemId: string, i: number, metadata: Record<string, unknown>): SinkRecord {
  const payload = buildPayload(metadata, {
    item_id: itemId,
    version: i,
    content_hash: `h${i}`,
    model: 'm',
    source_updated_at: i % 2 === 0 ? null : '2026-11-24T08:00:00.000Z',
    embedded_at: '2026-11-24T08:00:01.000Z',
    indexed_at: '2026-11-24T08:00:02.000Z',
    text_tokens: i * 1000,
    truncated: i % 2 === 1,
  });
  return { itemId, vector: Float32Array.from({ length: DIMENSIONS }, (_, d) => i + d / 10), payload };
}

/** What the payload should read back as: metadata as JSON carries it, system fields winning. */
function expected(r: SinkRecord): Payload {
  return JSON.parse(JSON.stringify(r.payload)) as Payload;
}

describe('LanceDB round trip of hostile strings and values', () => {
  it('keeps every metadata key (a key named __proto__ included) in the payload the writer builds', () => {
    const payload = buildPayload(HOSTILE_METADATA[0] as Record<string, unknown>, record('x', 0, {}).payload);
    expect(Object.keys(payload), 'the metadata key "__proto__" was dropped (Object.assign sets the prototype instead)').toContain('__proto__');
    expect(Object.getPrototypeOf(payload)).toBe(Object.prototype);
  });

  it('stores and reads back every id, string, null, number and boolean as written, in one upsert and after a payload update', async () => {
    const sink = new LanceDbSink({ name: 'hostile', dimensions: DIMENSIONS, distance: 'cosine' }, dir);
    await sink.open();
    try {
      const records = ITEM_IDS.map((id, i) => record(id, i, HOSTILE_METADATA[i] as Record<string, unknown>));
      await sink.upsert(records);
      const back = new Map((await sink.retrieve(ITEM_IDS, { withVectors: true })).map((r) => [r.itemId, r]));
      for (const r of records) {
        expect(back.get(r.itemId)?.payload, `payload of ${JSON.stringify(r.itemId.slice(0, 20))}`).toEqual(expected(r));
        expect(back.get(r.itemId)?.vector).toEqual(Array.from(r.vector));
      }
      // A metadata-only change goes through payloadRows (Object.assign over the stored row's payload).
      const updates = records.map((r, i) => {
        const next = record(r.itemId, i + 10, HOSTILE_METADATA[(i + 1) % HOSTILE_METADATA.length] as Record<string, unknown>);
        next.payload.content_hash = r.payload.content_hash;
        next.payload.embedded_at = '';
        return { itemId: r.itemId, payload: next.payload };
      });
      const { missing } = await sink.updatePayload(updates);
      expect(missing).toEqual([]);
      const updated = new Map((await sink.retrieve(ITEM_IDS)).map((r) => [r.itemId, r]));
      for (const u of updates) {
        expect(updated.get(u.itemId)?.payload).toEqual({ ...expected({ itemId: u.itemId, vector: new Float32Array(), payload: u.payload }), embedded_at: '2026-11-24T08:00:01.000Z' });
      }
    } finally {
      await sink.close();
    }
  });
});
