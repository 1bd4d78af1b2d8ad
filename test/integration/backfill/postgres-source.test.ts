/**
 * The postgres: source's keyset pagination (timestamps as keys, NULL keys, text keys,
 * bigint keys beyond 2^53) and on its rows (larger than EVENT_MAX_BYTES).
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { BackfillControl, BackfillStatus } from '../../../src/backfill/backfill-control.js';
import type { BackfillJobData } from '../../../src/backfill/backfill-job.js';
import type { Config } from '../../../src/config/config.js';
import { services, uniqueName, waitFor } from '../../support/helpers.js';
import { backfillControl } from '../../support/backfill-harness.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

describe('postgres source', () => {
  const { cleanups, setup, start } = pipelineHarness('pg');

  const control = (config: Config) => backfillControl(config, cleanups);

  /** A fresh table, dropped after the test. */
  async function table(columns: string): Promise<{ name: string; client: pg.Client }> {
    const client = new pg.Client({ connectionString: services().postgresUrl });
    await client.connect();
    const name = uniqueName('pgsrc').replace(/-/g, '_');
    cleanups.push(async () => {
      await client.query(`DROP TABLE IF EXISTS ${name}`);
      await client.end();
    });
    await client.query(`CREATE TABLE ${name} (${columns})`);
    return { name, client };
  }

  /** Runs a backfill until it finishes, or until it has read more rows than the table holds (a loop). */
  async function run(c: BackfillControl, data: BackfillJobData, rows: number): Promise<BackfillStatus> {
    const id = await c.start(data);
    return waitFor(`backfill ${id} finished (or reading past the ${rows} rows)`, async () => {
      const s = await c.status(id);
      return s?.state === 'completed' || s?.state === 'failed' || (s?.progress?.read ?? 0) > rows ? s : undefined;
    });
  }

  it('pages on a timestamptz key whose values differ below the millisecond, reading every row once', async () => {
    const { name, client } = await table('id text PRIMARY KEY, version bigint NOT NULL, text text NOT NULL, changed_at timestamptz UNIQUE NOT NULL');
    // clock_timestamp() or a bulk load gives distinct microsecond values within one millisecond.
    await client.query(
      `INSERT INTO ${name} VALUES ('ts-1', 1, 'first', '2026-01-01 00:00:00.000100+00'), ('ts-2', 1, 'second', '2026-01-01 00:00:00.000200+00'), ('ts-3', 1, 'third', '2026-01-01 00:00:00.000300+00')`,
    );
    const { config } = await setup({ BACKFILL_PAGE_SIZE: '2' });
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const c = control(config);
    const status = await run(c, { source: { kind: 'postgres', table: name, keyColumn: 'changed_at' } }, 3);
    // The cursor is the key as an ISO string (milliseconds), so "changed_at > cursor" reads the
    // same page again and again.
    expect(status.progress?.read, `the backfill read ${status.progress?.read} rows of a 3-row table (state ${status.state}): the timestamp cursor lost its microseconds`).toBe(3);
    expect(status.state).toBe('completed');
    expect(await pipeline.sink?.count()).toBe(3);
  });

  it('refuses a key column holding NULLs (keyset paging would skip those rows), so nothing is pruned', async () => {
    const { name, client } = await table('id text PRIMARY KEY, version bigint NOT NULL, text text NOT NULL, seq bigint');
    await client.query(`INSERT INTO ${name} VALUES ('n-1', 1, 'one', 1), ('n-2', 1, 'two', 2), ('n-null', 1, 'no sequence number yet', NULL)`);
    const { config, produce } = await setup({ BACKFILL_PAGE_SIZE: '2' });
    const pipeline = await start(config, ['ingest', 'embed', 'write', 'backfill']);
    // n-null is a live item, in the sink before the backfill.
    await produce([upsertEvent('n-null', 1, 'no sequence number yet')]);
    await waitFor('the live item written', async () => (await pipeline.sink?.count()) === 1);

    const status = await run(control(config), { source: { kind: 'postgres', table: name, keyColumn: 'seq' }, prune: true }, 3);
    expect(status.state).toBe('failed');
    expect(status.failedReason).toMatch(/BACKFILL_INVALID: 1 rows have a NULL in the key column "seq"/);
    expect(status.attempts).toBe(1);
    expect((await pipeline.sink?.retrieve(['n-null']))?.map((r) => r.itemId)).toEqual(['n-null']);
  });

  it('cancels a backfill whose query waits on the database (a lock held by another transaction)', async () => {
    const { name, client } = await table('id text PRIMARY KEY, version bigint NOT NULL, text text NOT NULL');
    await client.query(`INSERT INTO ${name} VALUES ('l-1', 1, 'locked row')`);
    const locker = new pg.Client({ connectionString: services().postgresUrl });
    await locker.connect();
    cleanups.push(async () => {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    });
    await locker.query('BEGIN');
    await locker.query(`LOCK TABLE ${name} IN ACCESS EXCLUSIVE MODE`);

    const { config } = await setup();
    await start(config, ['backfill']);
    const c = control(config);
    const id = await c.start({ source: { kind: 'postgres', table: name } });
    await waitFor('the backfill query waiting on the lock', async () => {
      const { rows } = await client.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'embedding-indexer-backfill' AND wait_event_type = 'Lock'`);
      return (rows[0] as { n: number }).n > 0;
    });
    expect(await c.cancel(id)).toBe('cancelling');
    const cancelled = await waitFor('the backfill failed as cancelled', async () => {
      const s = await c.status(id);
      return s?.state === 'failed' ? s : undefined;
    });
    expect(cancelled.failedReason).toContain('BACKFILL_CANCELLED');
  });

  it('pages on text keys (case, accents) and on bigint keys beyond 2^53 without losing or repeating a row', async () => {
    const { name, client } = await table('id text PRIMARY KEY, version bigint NOT NULL, text text NOT NULL, big bigint UNIQUE NOT NULL');
    const ids = ['a', 'B', 'b', 'é', 'e', 'Z', 'z', '10', '9', 'ß'];
    const base = 9007199254740993n; // 2^53 + 1: not representable as a JS number
    await client.query(`INSERT INTO ${name} SELECT * FROM json_populate_recordset(null::${name}, $1)`, [JSON.stringify(ids.map((id, i) => ({ id, version: 1, text: `text of ${id}`, big: (base + BigInt(i)).toString() })))]);
    const { config } = await setup({ BACKFILL_PAGE_SIZE: '1' });
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const c = control(config);
    for (const keyColumn of ['id', 'big']) {
      const status = await run(c, { source: { kind: 'postgres', table: name, keyColumn } }, ids.length);
      expect(status.state).toBe('completed');
      expect(status.progress?.read, `key ${keyColumn}`).toBe(ids.length);
    }
    expect(await pipeline.sink?.count()).toBe(ids.length);
  });

  it('dead-letters a row larger than EVENT_MAX_BYTES, as ingest does with a Kafka event and the file source with a line', async () => {
    const { name, client } = await table('id text PRIMARY KEY, version bigint NOT NULL, text text NOT NULL');
    await client.query(`INSERT INTO ${name} VALUES ('small', 1, 'a small row'), ('huge', 1, repeat('huge row ', 2000))`);
    const { config } = await setup({ EVENT_MAX_BYTES: '4096' });
    await start(config, ['embed', 'write', 'backfill']);
    const status = await run(control(config), { source: { kind: 'postgres', table: name } }, 2);
    expect(status.state).toBe('completed');
    expect(status.progress, 'an 18 kB row went into an embed job although EVENT_MAX_BYTES is 4096 (rows skip the size check)').toMatchObject({ read: 2, enqueued: 1, failed: 1 });
  });
});
