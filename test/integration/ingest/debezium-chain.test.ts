/**
 * Debezium change events, end to end: a PostgreSQL table captured by the Debezium PostgreSQL
 * connector on a real Kafka Connect worker, into Kafka, into the indexer, until the sink holds
 * exactly the table. And a TRUNCATE read before an older change of the table that another
 * partition brings later: the row was gone by then, and must stay gone.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { contentHash } from '../../../src/embed/content-hash.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { silentLogger } from '../../../src/observability/logger.js';
import type { Pipeline } from '../../../src/pipeline/pipeline.js';
import { startDebezium } from '../../support/debezium.js';
import { services, waitFor } from '../../support/helpers.js';
import { consumed, HARNESS_DIMENSIONS, HARNESS_MODEL, pipelineHarness } from '../../support/pipeline-harness.js';

const TEMPLATE = { EVENT_TEXT_TEMPLATE: '{title}\\n{description}' };
const textOf = (row: { title: string; description: string | null }) => `${row.title}\n${row.description ?? ''}`.trim();

interface ProductRow {
  id: number;
  title: string;
  description: string | null;
  price: number | null;
}

/** Every record of the sink, by item id. */
async function sinkRecords(pipeline: Pipeline): Promise<Map<string, Record<string, unknown>>> {
  const records = new Map<string, Record<string, unknown>>();
  for await (const record of (pipeline.sink as NonNullable<Pipeline['sink']>).scan()) records.set(record.itemId, record.payload);
  return records;
}

/** Throws what differs (waitFor reports the last one at its deadline); true once the sink is the table. */
async function sinkEqualsTable(pipeline: Pipeline, db: pg.Client, table: string): Promise<true> {
  const { rows } = await db.query<ProductRow>(`SELECT id, title, description, price::float8 AS price FROM ${table} ORDER BY id`);
  const records = await sinkRecords(pipeline);
  const expected = rows.map((row) => ({
    id: String(row.id),
    title: row.title,
    description: row.description,
    price: row.price,
    content_hash: contentHash(textOf(row), HARNESS_MODEL, HARNESS_DIMENSIONS),
  }));
  const actual = [...records.entries()]
    .map(([id, p]) => ({ id, title: p.title, description: p.description, price: p.price, content_hash: p.content_hash }))
    .sort((a, b) => Number(a.id) - Number(b.id));
  expect(actual).toEqual(expected);
  return true;
}

describe('Debezium: PostgreSQL -> Kafka Connect -> Kafka -> indexer', () => {
  const { cleanups, setup, start } = pipelineHarness('debezium');

  it('keeps the sink equal to the table through a snapshot, inserts, updates, deletes and a TRUNCATE', async () => {
    const { postgresUrl, kafkaBrokers } = services();
    const suffix = randomUUID().slice(0, 8);
    const table = `dbz_products_${suffix}`;
    const db = new pg.Client({ connectionString: postgresUrl });
    await db.connect();
    cleanups.push(async () => {
      await db.query(`DROP TABLE IF EXISTS ${table}`);
      await db.end();
    });
    const { rows: walLevel } = await db.query<{ wal_level: string }>('SHOW wal_level');
    expect(walLevel[0]?.wal_level, 'Debezium needs wal_level=logical (scripts/services/postgres.sh start sets it on its own server)').toBe('logical');

    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, title text NOT NULL, description text, price numeric(10, 2), updated_at timestamptz NOT NULL DEFAULT now())`);
    // Read by Debezium's initial snapshot (op "r"), all at one LSN.
    await db.query(`INSERT INTO ${table} (id, title, description, price) VALUES
      (1, 'Trail tent', 'Two doors, 2.1 kg', 249.00), (2, 'Steel cup', 'Holds 350 ml', 9.50), (3, 'Head lamp', '300 lumen', 35.00),
      (4, 'Sleeping mat', 'Self-inflating', 79.90), (5, 'Stove', NULL, 59.00)`);

    const name = `dbz${suffix}`;
    const { config } = await setup({ ...TEMPLATE, KAFKA_TOPICS: `${name}.public.${table}` });
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    // JsonConverter with schemas: the wrapped form, the larger and the more common default.
    const capture = await startDebezium({ name, postgresUrl, kafkaBrokers, table, schemas: true });
    cleanups.push(() => capture.stop());
    await waitFor('the snapshot indexed', () => sinkEqualsTable(pipeline, db, table), { timeoutMs: 60_000, intervalMs: 250 });

    await db.query(`UPDATE ${table} SET title = 'Trail tent XL' WHERE id = 1`);
    await db.query(`UPDATE ${table} SET price = 8.00 WHERE id = 2`);
    await db.query(`DELETE FROM ${table} WHERE id = 3`);
    await db.query(`INSERT INTO ${table} (id, title, description, price) VALUES (6, 'Water filter', 'Removes bacteria', 39.00)`);
    await waitFor('the inserts, updates and deletes indexed', () => sinkEqualsTable(pipeline, db, table), { timeoutMs: 60_000, intervalMs: 250 });

    // Rows re-inserted after the truncate have higher LSNs than it: they stay.
    await db.query('BEGIN');
    await db.query(`TRUNCATE ${table}`);
    await db.query(`INSERT INTO ${table} (id, title, description, price) VALUES (1, 'Trail tent', 'Back in stock', 229.00)`);
    await db.query('COMMIT');
    await db.query(`INSERT INTO ${table} (id, title, description, price) VALUES (7, 'Compass', 'Liquid-filled', 25.00), (8, 'Map case', NULL, 12.00)`);
    await db.query(`UPDATE ${table} SET description = 'Waterproof' WHERE id = 8`);
    await waitFor('the truncate and the rows after it indexed', () => sinkEqualsTable(pipeline, db, table), { timeoutMs: 60_000, intervalMs: 250 });

    expect(await pipeline.deadLetters.list(100)).toEqual([]);
    expect((await pipeline.metrics.eventsSkipped.get()).values.find((v) => v.labels.reason === 'tombstone')?.value).toBeGreaterThan(0);
  });
});

describe('Debezium TRUNCATE across partitions', () => {
  const { setup, start } = pipelineHarness('debezium-truncate');
  const source = (table: string, lsn: number) => ({ version: '3.4.3.Final', connector: 'postgresql', name: 'shop', ts_ms: 1_764_000_000_000, db: 'shop', schema: 'public', table, lsn });
  const create = (table: string, id: number, lsn: number) => ({
    key: JSON.stringify({ id }),
    value: JSON.stringify({ before: null, after: { id, title: `item ${id}`, description: `of ${table}` }, source: source(table, lsn), op: 'c', ts_ms: 1_764_000_000_001 }),
  });
  const truncate = (table: string, lsn: number) => ({ key: null, value: JSON.stringify({ before: null, after: null, source: source(table, lsn), op: 't', ts_ms: 1_764_000_000_001 }) });

  it('deletes the table\'s items at the truncate\'s LSN, also those whose older change arrives after it, and nothing of other tables', async () => {
    const { config } = await setup(TEMPLATE);
    const topic = config.kafka.topics[0] as string;
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    const producer = createKafka(config.kafka, silentLogger).producer();
    await producer.connect();
    const send = async (partition: number, messages: { key: string | null; value: string | null }[]) => producer.send({ topic, messages: messages.map((m) => ({ ...m, partition })) });
    const ids = async () => [...(await sinkRecords(pipeline)).keys()].sort();
    try {
      await send(1, [create('products', 10, 100), create('products', 11, 110), create('articles', 90, 120)]);
      await waitFor('the rows indexed', async () => (await ids()).join() === '10,11,90');

      await send(0, [truncate('products', 200)]);
      await waitFor('the truncated table\'s items deleted', async () => (await ids()).join() === '90');

      // An older truncate read late (a redelivery) leaves the table's mark at the newer one.
      await send(0, [truncate('products', 180)]);
      await waitFor('the older truncate consumed', async () => (await consumed(pipeline)) === 5);

      // Changes of the table from before the truncate, read after it (their partition lagged), a
      // Debezium tombstone, and a change from after the truncate.
      await send(1, [create('products', 12, 150), create('products', 14, 190), { key: JSON.stringify({ id: 11 }), value: null }, create('products', 13, 250)]);
      await waitFor('the row inserted after the truncate indexed', async () => (await ids()).join() === '13,90');
      for (const id of ['12', '14']) expect(await pipeline.state.get(id)).toMatchObject({ seen: 200, seenDeleted: true });
      expect(await pipeline.deadLetters.list(100)).toEqual([]);
    } finally {
      await producer.disconnect();
    }
  });
});
