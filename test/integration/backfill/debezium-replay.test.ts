/**
 * A `kafka:` backfill replaying a Debezium topic (what a re-index of a Debezium-fed index does):
 * tombstones are skipped, not dead-lettered, and a TRUNCATE deletes the table's rows as live
 * ingest does. Otherwise rows truncated in the database come back in the new index, and a pass
 * with --prune skips its prune (a dead-lettered row turns it off).
 */
import { describe, expect, it } from 'vitest';
import { contentHash } from '../../../src/embed/content-hash.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { silentLogger } from '../../../src/observability/logger.js';
import type { Pipeline } from '../../../src/pipeline/pipeline.js';
import { backfillControl, backfillEnded, writeNdjson } from '../../support/backfill-harness.js';
import { waitFor } from '../../support/helpers.js';
import { HARNESS_DIMENSIONS, HARNESS_MODEL, pipelineHarness } from '../../support/pipeline-harness.js';

const TEMPLATE = { EVENT_TEXT_TEMPLATE: '{title}\\n{description}' };

interface Row {
  id: number;
  title: string;
  description: string;
}

const source = (table: string, lsn: number) => ({ version: '3.4.3.Final', connector: 'postgresql', name: 'shop', ts_ms: 1_764_000_000_000 + lsn, db: 'shop', schema: 'public', table, lsn });
const key = (id: number) => JSON.stringify({ id });
const upsert = (table: string, op: 'c' | 'u', row: Row, lsn: number) => ({ key: key(row.id), value: JSON.stringify({ before: null, after: row, source: source(table, lsn), op, ts_ms: 1_764_000_000_001 }) });
const remove = (table: string, id: number, lsn: number) => [
  { key: key(id), value: JSON.stringify({ before: { id }, after: null, source: source(table, lsn), op: 'd', ts_ms: 1_764_000_000_001 }) },
  // Debezium follows each delete with a tombstone, for log compaction.
  { key: key(id), value: null },
];
const truncate = (table: string, lsn: number) => ({ key: null, value: JSON.stringify({ before: null, after: null, source: source(table, lsn), op: 't', ts_ms: 1_764_000_000_001 }) });

const row = (id: number, title: string, description = `row ${id}`): Row => ({ id, title, description });

async function sinkRows(pipeline: Pipeline): Promise<{ id: string; title: unknown; description: unknown; content_hash: unknown }[]> {
  const rows = [];
  for await (const record of (pipeline.sink as NonNullable<Pipeline['sink']>).scan()) {
    rows.push({ id: record.itemId, title: record.payload.title, description: record.payload.description, content_hash: record.payload.content_hash });
  }
  return rows.sort((a, b) => Number(a.id) - Number(b.id));
}

const expected = (rows: Row[]) => rows.map((r) => ({ id: String(r.id), title: r.title, description: r.description, content_hash: contentHash(`${r.title}\n${r.description}`, HARNESS_MODEL, HARNESS_DIMENSIONS) }));

describe('kafka: backfill of a Debezium topic', () => {
  const { cleanups, setup, start } = pipelineHarness('debezium-replay');

  it('ends with the final table: tombstones skipped, rows from before a TRUNCATE gone, nothing dead-lettered, the prune run', async () => {
    // Small pages: the truncate, the rows it removes and the rows after it fall in different pages.
    const { config } = await setup({ ...TEMPLATE, BACKFILL_PAGE_SIZE: '2' });
    const topic = config.kafka.topics[0] as string;
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const control = backfillControl(config, cleanups);

    // An item the topic never had, indexed earlier from a file: the pruning pass must remove it.
    const stale = writeNdjson([JSON.stringify({ id: '999', version: 1, title: 'Stale', description: 'gone from the topic' })], cleanups);
    const seeded = await backfillEnded(control, await control.start({ source: { kind: 'file', path: stale } }));
    expect(seeded.state).toBe('completed');
    expect((await sinkRows(pipeline)).map((r) => r.id)).toEqual(['999']);

    const producer = createKafka(config.kafka, silentLogger).producer();
    await producer.connect();
    try {
      const send = (partition: number, messages: { key: string | null; value: string | null }[]) => producer.send({ topic, messages: messages.map((m) => ({ ...m, partition })) });
      // Partition 1: rows of products before the truncate (inserts, an update, a delete and its
      // tombstone), then rows inserted after it; partition 0: rows from before it, the truncate
      // (no key), a row after it. In pages of two, rows 8 and 2 are queued before the truncate is
      // read (its deletes undo them), row 9 shares its page (its mark turns it into a delete), and
      // row 7 is either, by the order in which Kafka hands the partitions over.
      await send(1, [
        upsert('products', 'c', row(1, 'Trail tent'), 100),
        upsert('products', 'c', row(3, 'Head lamp'), 120),
        upsert('products', 'u', row(1, 'Trail tent XL'), 130),
        ...remove('products', 3, 140),
        upsert('articles', 'c', row(90, 'Packing list'), 150),
        upsert('products', 'c', row(7, 'Pocket knife'), 160),
        upsert('products', 'c', row(4, 'Sleeping mat'), 210),
        upsert('products', 'c', row(1, 'Trail tent', 'Back in stock'), 220),
        upsert('products', 'c', row(5, 'Stove'), 230),
        upsert('products', 'u', row(4, 'Sleeping mat', 'Self-inflating'), 240),
        ...remove('products', 5, 250),
      ]);
      await send(0, [
        upsert('products', 'c', row(8, 'Water filter'), 105),
        upsert('products', 'c', row(2, 'Steel cup'), 110),
        upsert('products', 'c', row(9, 'Map case'), 115),
        truncate('products', 200),
        upsert('products', 'c', row(6, 'Compass'), 260),
      ]);
    } finally {
      await producer.disconnect();
    }

    const id = await control.start({ source: { kind: 'kafka', topic }, prune: true });
    const done = await backfillEnded(control, id);
    expect(done.state).toBe('completed');
    expect(done.progress).toMatchObject({ phase: 'done', read: 18, failed: 0, pruned: 1 });
    // The final table: rows inserted after the truncate (less the one deleted since), the other table's row.
    await waitFor('the sink equal to the final table', async () => {
      expect(await sinkRows(pipeline)).toEqual(expected([row(1, 'Trail tent', 'Back in stock'), row(4, 'Sleeping mat', 'Self-inflating'), row(6, 'Compass'), row(90, 'Packing list')]));
      return true;
    });
    expect(await pipeline.deadLetters.list(100)).toEqual([]);
    const outcome = async (name: string) => (await pipeline.metrics.backfillRows.get()).values.find((v) => v.labels.outcome === name)?.value ?? 0;
    expect(await outcome('skipped')).toBe(3);
    expect(await outcome('truncated')).toBeGreaterThan(0);
  });
});
