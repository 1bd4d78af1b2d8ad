/**
 * Review of issue 11 (Debezium): the real chain (PostgreSQL -> Kafka Connect + Debezium -> Kafka ->
 * indexer) on what the chain test does not do: a primary-key change (Debezium's delete of the old
 * key and create of the new one), a row inserted and then truncated in one transaction (the
 * truncate must win by LSN order inside the transaction), and an update after both.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Pipeline } from '../../../src/pipeline/pipeline.js';
import { startDebezium } from '../../support/debezium.js';
import { services, waitFor } from '../../support/helpers.js';
import { pipelineHarness } from '../../support/pipeline-harness.js';

async function sinkTitles(pipeline: Pipeline): Promise<string> {
  const titles: string[] = [];
  for await (const record of (pipeline.sink as NonNullable<Pipeline['sink']>).scan()) titles.push(`${record.itemId}=${String(record.payload.title)}`);
  return titles.sort().join(',');
}

async function tableTitles(db: pg.Client, table: string): Promise<string> {
  const { rows } = await db.query<{ id: number; title: string }>(`SELECT id, title FROM ${table}`);
  return rows.map((r) => `${r.id}=${r.title}`).sort().join(',');
}

describe('review: Debezium chain, primary-key change and insert+truncate in one transaction', () => {
  const { cleanups, setup, start } = pipelineHarness('review-dbz');

  it('keeps the sink equal to the table', async () => {
    const { postgresUrl, kafkaBrokers } = services();
    const suffix = randomUUID().slice(0, 8);
    const table = `review_dbz_${suffix}`;
    const db = new pg.Client({ connectionString: postgresUrl });
    await db.connect();
    cleanups.push(async () => {
      await db.query(`DROP TABLE IF EXISTS ${table}`);
      await db.end();
    });
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, title text NOT NULL)`);
    await db.query(`INSERT INTO ${table} VALUES (1, 'one'), (2, 'two'), (3, 'three')`);

    const name = `rvw${suffix}`;
    const { config } = await setup({ EVENT_TEXT_TEMPLATE: '{title}', KAFKA_TOPICS: `${name}.public.${table}` });
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    const capture = await startDebezium({ name, postgresUrl, kafkaBrokers, table, schemas: false });
    cleanups.push(() => capture.stop());
    const sinkIsTable = async () => (await sinkTitles(pipeline)) === (await tableTitles(db, table));
    await waitFor('the snapshot indexed', sinkIsTable, { timeoutMs: 90_000, intervalMs: 250 });

    // Primary-key change: Debezium emits d(key 1), a tombstone, c(key 100).
    await db.query(`UPDATE ${table} SET id = 100, title = 'one moved' WHERE id = 1`);
    await waitFor('the key change indexed', async () => (await sinkTitles(pipeline)) === '100=one moved,2=two,3=three', { timeoutMs: 60_000, intervalMs: 250 });

    // A row inserted, then the table truncated, in one transaction; then rows after it.
    await db.query('BEGIN');
    await db.query(`INSERT INTO ${table} VALUES (4, 'four')`);
    await db.query(`UPDATE ${table} SET title = 'two edited' WHERE id = 2`);
    await db.query(`TRUNCATE ${table}`);
    await db.query(`INSERT INTO ${table} VALUES (5, 'five')`);
    await db.query('COMMIT');
    await db.query(`INSERT INTO ${table} VALUES (2, 'two again')`);
    await waitFor('the truncate and what followed indexed', async () => (await sinkTitles(pipeline)) === '2=two again,5=five', { timeoutMs: 60_000, intervalMs: 250 });
    expect(await sinkIsTable()).toBe(true);
    expect(await pipeline.deadLetters.list(100)).toEqual([]);
  });
});
