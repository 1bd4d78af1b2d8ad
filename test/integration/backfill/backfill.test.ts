/**
 * Backfills on the real parts: a file, a Kafka topic and a PostgreSQL table backfilled into an
 * empty LanceDB sink; a re-run that costs nothing; a worker killed mid-backfill that resumes from
 * its checkpoint; live events winning over older rows; a prune; live jobs before backfill jobs;
 * cancelling; and job data that is refused with the field named.
 */
import { readFileSync } from 'node:fs';
import { Queue } from 'bullmq';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { BackfillControl } from '../../../src/backfill/backfill-control.js';
import { BACKFILL_QUEUE, type BackfillJobData } from '../../../src/backfill/backfill-job.js';
import { loadConfig, type Config } from '../../../src/config/config.js';
import { createRedis } from '../../../src/queue/connection.js';
import { UsageStore } from '../../../src/embed/usage.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import type { VectorSink } from '../../../src/sinks/vector-sink.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { backfillControl, backfillEnded, writeNdjson } from '../../support/backfill-harness.js';
import { services, uniqueName, waitFor } from '../../support/helpers.js';
import { consumed, HARNESS_DIMENSIONS, HARNESS_MODEL, pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';
import { isolatedWorkerEnv, spawnWorker, type WorkerProcess } from '../../support/processes.js';
import { expectedState, sinkMatchesEvents, type ScriptedEvent } from '../../support/stream.js';

const CATALOG = readFileSync(new URL('../../../data/sample-catalog.ndjson', import.meta.url), 'utf8').trim().split('\n');
const catalogEvents: ScriptedEvent[] = CATALOG.map((line) => JSON.parse(line) as ScriptedEvent);
const embedding = { model: HARNESS_MODEL, dimensions: HARNESS_DIMENSIONS };

const servedInputs = (stub: EmbeddingsStub) => stub.served.flatMap((r) => r.inputs);

describe('backfills', () => {
  const { cleanups, setup, start } = pipelineHarness('backfill');

  const control = (config: Config) => backfillControl(config, cleanups);
  const ndjson = (lines: string[]) => writeNdjson(lines, cleanups);
  const runToEnd = async (c: BackfillControl, data: BackfillJobData) => backfillEnded(c, await c.start(data));

  const matches = (sink: VectorSink | undefined, events: ScriptedEvent[]) => sinkMatchesEvents(sink as VectorSink, events, embedding);

  it('backfills the sample catalog from a file into an empty sink, and a re-run makes no embeddings request', async () => {
    const { stub, config } = await setup();
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const c = control(config);
    const file = ndjson(CATALOG);

    const first = await runToEnd(c, { source: { kind: 'file', path: file } });
    expect(first.state).toBe('completed');
    expect(first.progress).toMatchObject({ phase: 'done', read: CATALOG.length, failed: 0, total: CATALOG.length });
    expect(await matches(pipeline.sink, catalogEvents)).toBe(true);
    const live = expectedState(catalogEvents);
    expect(await pipeline.sink?.count()).toBe(live.size);
    // Every live item's final text was bought, and no text twice.
    const bought = servedInputs(stub);
    expect(new Set(bought).size).toBe(bought.length);

    const requests = stub.served.length;
    const again = await runToEnd(c, { source: { kind: 'file', path: file } });
    expect(again.progress).toMatchObject({ phase: 'done', read: CATALOG.length, enqueued: 0, unchanged: CATALOG.length });
    expect(stub.served.length).toBe(requests);
  });

  it('backfills from a Kafka topic, up to the end offsets taken when it started', async () => {
    const { config, produce } = await setup();
    await produce(CATALOG);
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const c = control(config);
    const status = await runToEnd(c, { source: { kind: 'kafka', topic: config.kafka.topics[0] as string } });
    expect(status.state).toBe('completed');
    expect(status.progress).toMatchObject({ read: CATALOG.length, failed: 0 });
    expect(await matches(pipeline.sink, catalogEvents)).toBe(true);
  });

  it('backfills from a PostgreSQL table, paged on its key', async () => {
    const { postgresUrl } = services();
    const client = new pg.Client({ connectionString: postgresUrl });
    await client.connect();
    const table = uniqueName('products').replace(/-/g, '_');
    cleanups.push(async () => {
      await client.query(`DROP TABLE IF EXISTS ${table}`);
      await client.end();
    });
    // The table holds each item's current row: what the catalog's events leave.
    await client.query(`CREATE TABLE ${table} (id text PRIMARY KEY, version bigint NOT NULL, updated_at timestamptz, text text NOT NULL, metadata jsonb)`);
    const rows = [...expectedState(catalogEvents)].map(([id, item]) => ({ id, version: item.version, text: item.text, metadata: item.metadata, updated_at: '2026-11-20T08:00:00.000Z' }));
    await client.query(`INSERT INTO ${table} SELECT * FROM json_populate_recordset(null::${table}, $1)`, [JSON.stringify(rows)]);

    const { config } = await setup({ BACKFILL_PAGE_SIZE: '250' });
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const status = await runToEnd(control(config), { source: { kind: 'postgres', table, keyColumn: 'id' } });
    expect(status.state).toBe('completed');
    expect(status.progress).toMatchObject({ read: rows.length, failed: 0, total: rows.length });
    expect(await matches(pipeline.sink, catalogEvents)).toBe(true);
    expect(await pipeline.sink?.count()).toBe(rows.length);
  });

  it('resumes from its checkpoint after the worker is killed (SIGKILL): nothing missing, nothing paid twice beyond the jobs in flight', async () => {
    const stub = new EmbeddingsStub({ dimensions: HARNESS_DIMENSIONS, latencyMs: 40 });
    const { env, workers } = await isolatedWorkerEnv(stub, {
      EMBEDDINGS_BATCH_SIZE: '32',
      BACKFILL_PAGE_SIZE: '32',
      EMBED_JOB_MAX_ITEMS: '32',
      BACKFILL_MAX_JOBS_IN_FLIGHT: '2',
      // A dead worker's backfill is taken over this long after its last lock renewal.
      JOB_LOCK_MS: '2000',
      EMBED_BATCH_LINGER_MS: '5',
      WRITE_BATCH_LINGER_MS: '5',
    }, cleanups);
    const config = loadConfig(env);
    const c = control(config);
    const rows = CATALOG.slice(0, 1500);
    const id = await c.start({ source: { kind: 'file', path: ndjson(rows) } });

    workers.push(spawnWorker('embed,write,backfill', env));
    await waitFor('a third of the file read', async () => ((await c.status(id))?.progress?.read ?? 0) >= 500, { timeoutMs: 90_000 });
    (workers[0] as WorkerProcess).child.kill('SIGKILL');
    await (workers[0] as WorkerProcess).exited;
    const readAtKill = (await c.status(id))?.progress?.read ?? 0;
    expect(readAtKill).toBeLessThan(rows.length);

    workers.push(spawnWorker('embed,write,backfill', env));
    const done = await waitFor('the backfill completed by the second worker', async () => {
      const s = await c.status(id);
      return s?.state === 'completed' ? s : undefined;
    }, { timeoutMs: 120_000 });
    expect((workers[1] as WorkerProcess).output()).toMatch(/"read":[1-9]\d*,"msg":"backfill resumes from its checkpoint"/);
    expect(done.progress?.read).toBe(rows.length);

    const sink = createSink(config.sink, HARNESS_DIMENSIONS);
    await sink.open();
    try {
      expect(await sinkMatchesEvents(sink, rows.map((l) => JSON.parse(l) as ScriptedEvent), embedding)).toBe(true);
    } finally {
      await sink.close();
    }
    // What the killed worker held and had bought but not handed to a write job is bought again:
    // at most its jobs in flight (2 jobs of 32 changes). Everything else once.
    const inputs = servedInputs(stub);
    const repeats = inputs.length - new Set(inputs).size;
    expect(repeats).toBeLessThanOrEqual(2 * 32);
  });

  it('never writes a backfill row over a newer version that a live event wrote', async () => {
    const { stub, config, produce } = await setup();
    const pipeline = await start(config, ['ingest', 'embed', 'write', 'backfill']);
    await produce([upsertEvent('live-1', 10, 'live text at ten', { price: 10 })]);
    await waitFor('the live event written', async () => (await pipeline.sink?.retrieve(['live-1']))?.[0]?.payload.version === 10);

    const file = ndjson([upsertEvent('live-1', 5, 'old catalog text', { price: 5 }), upsertEvent('other-1', 1, 'another item')]);
    const status = await runToEnd(control(config), { source: { kind: 'file', path: file } });
    expect(status.progress).toMatchObject({ read: 2, enqueued: 1, unchanged: 1 });
    await waitFor('the other item written', async () => (await pipeline.sink?.retrieve(['other-1']))?.length === 1);
    const [held] = (await pipeline.sink?.retrieve(['live-1'])) ?? [];
    expect(held?.payload).toMatchObject({ version: 10, price: 10 });
    expect(servedInputs(stub)).not.toContain('old catalog text');
  });

  it('completes only once an item it had to embed again (the sink lost its vector) is written', async () => {
    const { stub, config, produce } = await setup();
    const pipeline = await start(config, ['ingest', 'embed', 'write', 'backfill']);
    await produce([upsertEvent('lost-1', 1, 'a text the sink will lose', { price: 1 })]);
    await waitFor('the live event written', async () => (await pipeline.sink?.retrieve(['lost-1']))?.length === 1);
    // The sink loses the point behind the state's back: the state still records its vector.
    await pipeline.sink?.delete([{ itemId: 'lost-1', version: 1 }]);
    // A slow embeddings request from here on: the job that embeds it again outlasts the backfill's
    // check of its jobs in flight by far, so a backfill that did not count it would complete first.
    stub.options.latencyMs = 1500;
    // Same text, new price: a payload-only row, which finds no point and embeds the text again, in
    // an embed job of its own that the backfill must wait for.
    const file = ndjson([upsertEvent('lost-1', 2, 'a text the sink will lose', { price: 2 })]);
    const status = await runToEnd(control(config), { source: { kind: 'file', path: file } });
    expect(status.state).toBe('completed');
    const [held] = (await pipeline.sink?.retrieve(['lost-1'])) ?? [];
    expect(held?.payload, 'written when the backfill completed').toMatchObject({ version: 2, price: 2 });
    expect(servedInputs(stub).filter((t) => t === 'a text the sink will lose')).toHaveLength(2);
  });

  it('prunes only what the source lacks, and keeps an item a live event created after the pass started', async () => {
    const { config, produce } = await setup({ BACKFILL_PAGE_SIZE: '20', EMBED_JOB_MAX_ITEMS: '20', BACKFILL_MAX_JOBS_IN_FLIGHT: '1' });
    const pipeline = await start(config, ['ingest', 'embed', 'write', 'backfill']);
    await produce(['keep-a', 'keep-b', 'gone-c'].map((id) => upsertEvent(id, 1, `text of ${id}`)));
    await waitFor('three live items', async () => (await pipeline.sink?.count()) === 3);

    const fillers = Array.from({ length: 400 }, (_, i) => upsertEvent(`filler-${i}`, 1, `filler text ${i}`));
    const file = ndjson([upsertEvent('keep-a', 1, 'text of keep-a'), upsertEvent('keep-b', 1, 'text of keep-b'), ...fillers]);
    const c = control(config);
    const id = await c.start({ source: { kind: 'file', path: file }, prune: true });
    await waitFor('the pass under way', async () => ((await c.status(id))?.progress?.read ?? 0) > 0);
    await produce([upsertEvent('live-d', 1, 'created while the backfill runs')]);
    await waitFor('live-d ingested', async () => (await consumed(pipeline)) === 4);

    const status = await waitFor('the backfill finished', async () => {
      const s = await c.status(id);
      return s?.state === 'completed' || s?.state === 'failed' ? s : undefined;
    });
    expect(status.state).toBe('completed');
    expect(status.progress?.pruned).toBe(1);
    await waitFor('live-d written', async () => (await pipeline.sink?.retrieve(['live-d']))?.length === 1);
    const held = new Set((await pipeline.sink?.retrieve(['keep-a', 'keep-b', 'gone-c', 'live-d', 'filler-0', 'filler-399']))?.map((r) => r.itemId));
    expect([...held].sort()).toEqual(['filler-0', 'filler-399', 'keep-a', 'keep-b', 'live-d']);
    expect(await pipeline.sink?.count()).toBe(2 + 400 + 1);
  });

  it('hands out a waiting live job before every waiting backfill job', async () => {
    const { stub, config, produce } = await setup({ EMBED_CONCURRENCY: '1', EMBEDDINGS_BATCH_SIZE: '10', EMBED_JOB_MAX_ITEMS: '10', BACKFILL_PAGE_SIZE: '10', BACKFILL_MAX_JOBS_IN_FLIGHT: '5' });
    // No embed worker yet: the backfill queues its first jobs and waits at its bound.
    const front = await start(config, ['ingest', 'backfill']);
    const c = control(config);
    const id = await c.start({ source: { kind: 'file', path: ndjson(Array.from({ length: 200 }, (_, i) => upsertEvent(`bulk-${i}`, 1, `bulk text ${i}`))) } });
    await waitFor('five backfill jobs waiting', async () => (await front.embedQueue.getPrioritizedCount()) === 5);
    await produce([upsertEvent('urgent-1', 1, 'live text that must not wait')]);
    await waitFor('the live job waiting', async () => (await front.embedQueue.getWaitingCount()) === 1);

    const workers = await start(config, ['embed', 'write']);
    await waitFor('the backfill finished', async () => (await c.status(id))?.state === 'completed');
    expect(stub.served[0]?.inputs).toEqual(['live text that must not wait']);
    expect(await workers.sink?.count()).toBe(201);
  });

  it('buys a backfill\'s embeddings through the Batch API (JSONL file, batch, output mapped back by custom_id), and sends its failures the normal way', async () => {
    const { stub, config } = await setup({ BATCH_API_MAX_INPUTS: '100', BATCH_API_POLL_MS: '100', BACKFILL_PAGE_SIZE: '50' }, { batchDelayMs: 300, batchFailMarker: 'FLAKY' });
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const lines = Array.from({ length: 250 }, (_, i) => upsertEvent(`batch-${i}`, 1, i % 100 === 7 ? `FLAKY text ${i}` : `batch text ${i}`, { n: i }));
    const status = await runToEnd(control(config), { source: { kind: 'file', path: ndjson(lines) }, batchApi: true });
    expect(status.state).toBe('completed');
    expect(status.progress).toMatchObject({ read: 250, failed: 0, batchInputs: 247, batchFailed: 3 });
    expect(await matches(pipeline.sink, lines.map((l) => JSON.parse(l) as ScriptedEvent))).toBe(true);

    // Three rounds of at most 100 rows, each one batch over one uploaded JSONL file.
    expect(stub.batches.size).toBe(3);
    expect([...stub.files.values()].filter((f) => f.purpose === 'batch')).toHaveLength(3);
    expect(stub.batchInputs).toBe(247);
    // Only the three requests the batches failed were sent synchronously.
    expect(servedInputs(stub).sort()).toEqual(['FLAKY text 107', 'FLAKY text 207', 'FLAKY text 7']);
    const redis = createRedis(config.redis.url, 'backfill-test-usage');
    cleanups.push(async () => void (await redis.quit()));
    const usage = await new UsageStore(redis, config.redis.prefix, {}).totals();
    expect(usage.find((u) => u.model === `${HARNESS_MODEL} (batch)`)?.inputs).toBe(247);
  });

  it('takes over a Batch API batch after the worker that submitted it is killed, without submitting it again', async () => {
    const stub = new EmbeddingsStub({ dimensions: HARNESS_DIMENSIONS, batchDelayMs: 4_000 });
    const { env, workers } = await isolatedWorkerEnv(stub, { BACKFILL_PAGE_SIZE: '40', BATCH_API_POLL_MS: '100', JOB_LOCK_MS: '2000' }, cleanups);
    const config = loadConfig(env);
    const c = control(config);
    const lines = Array.from({ length: 150 }, (_, i) => upsertEvent(`bk-${i}`, 1, `batch kill text ${i}`));
    const id = await c.start({ source: { kind: 'file', path: ndjson(lines) }, batchApi: true });

    workers.push(spawnWorker('embed,write,backfill', env));
    await waitFor('the batch submitted and checkpointed', async () => stub.batches.size === 1 && (await c.status(id))?.progress?.batch !== undefined, { timeoutMs: 60_000 });
    (workers[0] as WorkerProcess).child.kill('SIGKILL');
    await (workers[0] as WorkerProcess).exited;

    workers.push(spawnWorker('embed,write,backfill', env));
    const done = await waitFor('the backfill completed by the second worker', async () => {
      const s = await c.status(id);
      return s?.state === 'completed' ? s : undefined;
    }, { timeoutMs: 120_000 });
    expect(done.progress).toMatchObject({ read: 150, batchInputs: 150, batchFailed: 0 });
    expect(stub.batches.size).toBe(1);
    expect(stub.batchInputs).toBe(150);
    expect(stub.served).toHaveLength(0);
    const sink = createSink(config.sink, HARNESS_DIMENSIONS);
    await sink.open();
    try {
      expect(await sinkMatchesEvents(sink, lines.map((l) => JSON.parse(l) as ScriptedEvent), embedding)).toBe(true);
    } finally {
      await sink.close();
    }
  });

  it('cancels a running backfill at its next page, and refuses invalid job data naming the field', async () => {
    const { config } = await setup({ BACKFILL_PAGE_SIZE: '10', BACKFILL_MAX_JOBS_IN_FLIGHT: '1' });
    // Without embed workers the backfill stays at its bound: running, never finishing.
    await start(config, ['backfill']);
    const c = control(config);
    const id = await c.start({ source: { kind: 'file', path: ndjson(Array.from({ length: 100 }, (_, i) => upsertEvent(`c-${i}`, 1, `text ${i}`))) } });
    await waitFor('the backfill running', async () => ((await c.status(id))?.progress?.read ?? 0) > 0);
    expect(await c.cancel(id)).toBe('cancelling');
    const cancelled = await waitFor('the backfill failed as cancelled', async () => {
      const s = await c.status(id);
      return s?.state === 'failed' ? s : undefined;
    });
    expect(cancelled.failedReason).toContain('BACKFILL_CANCELLED');
    expect(cancelled.progress?.read).toBeLessThan(100);

    // Job data from another service, put straight on the queue: refused at once, without retries.
    const redis = createRedis(config.redis.url, 'backfill-test-raw');
    const queue = new Queue(BACKFILL_QUEUE, { connection: redis, prefix: config.redis.prefix });
    cleanups.push(async () => {
      await queue.close();
      await redis.quit();
    });
    await queue.add('file', { source: { kind: 'file', path: 'relative/catalog.ndjson' } }, { jobId: 'bad-1', attempts: 5 });
    const bad = await waitFor('the invalid job failed', async () => {
      const s = await c.status('bad-1');
      return s?.state === 'failed' ? s : undefined;
    });
    expect(bad.failedReason).toMatch(/BACKFILL_INVALID: .*source\.path: expected an absolute path/);
    expect(bad.attempts).toBe(1);
  });
});
