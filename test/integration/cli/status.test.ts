/**
 * `indexer status` as an operator runs it (a real process) against real queues, a real consumer
 * group and a real pause: each queue state, the pause's reason, Kafka lag, a dead letter, a running
 * backfill, usage, and a worker's published state; then the gauges behind the dashboards.
 */
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BackfillControl } from '../../../src/backfill/backfill-control.js';
import { BACKFILL_QUEUE, type BackfillProgress } from '../../../src/backfill/backfill-job.js';
import { loadConfig, type Config } from '../../../src/config/config.js';
import { UsageStore } from '../../../src/embed/usage.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { KafkaLagReader } from '../../../src/observability/kafka-lag.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { Metrics } from '../../../src/observability/metrics.js';
import { QueueSampler } from '../../../src/observability/queue-sampler.js';
import type { StatusReport } from '../../../src/observability/status-report.js';
import { readWorkers, workerKey, WorkerHeartbeat } from '../../../src/observability/worker-heartbeat.js';
import { EMBED_QUEUE, WRITE_QUEUE } from '../../../src/queue/jobs.js';
import { ensureTopic } from '../../../src/ingest/produce.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { freePort, testKafka, waitFor } from '../../support/helpers.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';
import { isolatedWorkerEnv, runIndexer, spawnWorker } from '../../support/processes.js';

const QUOTA_EXHAUSTED = { status: 429, body: { error: { message: 'You exceeded your current quota', type: 'insufficient_quota', param: null, code: 'insufficient_quota' } } };


/** The environment that gives the CLI the test's config. */
function envOf(config: Config): Record<string, string> {
  return {
    KAFKA_BROKERS: config.kafka.brokers.join(','),
    REDIS_URL: config.redis.url,
    KAFKA_TOPICS: config.kafka.topics.join(','),
    KAFKA_GROUP_ID: config.kafka.groupId,
    QUEUE_PREFIX: config.redis.prefix,
    EMBEDDINGS_BASE_URL: config.embeddings.baseUrl,
    EMBEDDINGS_MODEL: config.embeddings.model,
    EMBEDDINGS_DIMENSIONS: String(config.embeddings.dimensions),
    EMBEDDINGS_PRICES: `${config.embeddings.model}=0.5`,
    LOG_LEVEL: 'warn',
    KAFKAJS_NO_PARTITIONER_WARNING: '1',
  };
}


describe('indexer status', () => {
  const h = pipelineHarness('status');

  it('shows each queue state, why embed is paused, the lag, a dead letter, a running backfill, usage and the workers', async () => {
    const { stub, config, produce } = await h.setup({}, {}, 1);
    const { cleanups } = h;
    const prefix = config.redis.prefix;
    const topic = config.kafka.topics[0] as string;
    const env = envOf(config);
    const redis = new Redis(config.redis.url, { maxRetriesPerRequest: null });
    cleanups.push(async () => {
      await testKafka(config.kafka.brokers).admin().deleteGroups([config.kafka.groupId]).catch(() => undefined);
      redis.disconnect();
    });

    // A real pause: the embeddings quota runs out while ingest and embed run; a line that is not JSON is dead-lettered.
    stub.failNext(QUOTA_EXHAUSTED);
    await produce([upsertEvent('a', 1, 'alpha'), 'this line is not JSON']);
    const pipeline = await h.start(config, ['ingest', 'embed']);
    await waitFor('the embed queue paused by the exhausted quota', () => pipeline.embedQueue.isPaused());
    await waitFor('the dead letter', async () => (await pipeline.deadLetters.count()) === 1);
    const admin = testKafka(config.kafka.brokers).admin();
    await admin.connect();
    cleanups.push(() => admin.disconnect());
    await waitFor('both events committed', async () => (await admin.fetchOffsets({ groupId: config.kafka.groupId, topics: [topic] }))[0]?.partitions[0]?.offset === '2');
    await pipeline.close();
    // Three events the group has not read: lag 3.
    await produce([upsertEvent('b', 1, 'beta'), upsertEvent('c', 1, 'gamma'), upsertEvent('d', 1, 'delta')]);
    const embedQueue = new Queue(EMBED_QUEUE, { connection: redis, prefix });
    cleanups.push(() => embedQueue.close());
    await embedQueue.add('e', { changes: [] });
    await embedQueue.add('e', { changes: [] });

    // The write queue in every state: failed, active (held by a worker), waiting behind it, delayed.
    const writeQueue = new Queue(WRITE_QUEUE, { connection: redis, prefix });
    cleanups.push(() => writeQueue.close());
    const failing = new Worker(WRITE_QUEUE, () => Promise.reject(new Error('refused by the test')), { connection: redis.duplicate(), prefix });
    await writeQueue.add('fail', { writes: [] }, { attempts: 1 });
    await waitFor('a failed write job', async () => (await writeQueue.getJobCounts('failed')).failed === 1);
    await failing.close();
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const holding = new Worker(WRITE_QUEUE, () => held, { connection: redis.duplicate(), prefix, concurrency: 1 });
    cleanups.push(async () => {
      release();
      await holding.close();
    });
    await writeQueue.add('hold', { writes: [] });
    await waitFor('an active write job', async () => (await writeQueue.getJobCounts('active')).active === 1);
    await writeQueue.add('wait', { writes: [] });
    await writeQueue.add('later', { writes: [] }, { delay: 3_600_000 });

    // A running backfill, with its progress.
    const control = new BackfillControl(redis, prefix, { attempts: 1, backoffMs: 100 });
    cleanups.push(() => control.close());
    const backfillId = await control.start({ source: { kind: 'file', path: '/data/catalog.ndjson' } });
    const progress: BackfillProgress = { phase: 'reading', cursor: '100', read: 100, enqueued: 90, unchanged: 8, failed: 2, pruned: 0, total: 400, startedAt: Date.now() - 10_000, updatedAt: Date.now() };
    let releaseBackfill: () => void = () => undefined;
    const backfillHeld = new Promise<void>((resolve) => (releaseBackfill = resolve));
    const backfillWorker = new Worker(
      BACKFILL_QUEUE,
      async (job: Job) => {
        await job.updateProgress(progress);
        await backfillHeld;
      },
      { connection: redis.duplicate(), prefix },
    );
    cleanups.push(async () => {
      releaseBackfill();
      await backfillWorker.close();
    });
    await waitFor('the backfill running with its progress', async () => (await control.status(backfillId))?.progress?.read === 100);

    await new UsageStore(redis, prefix, {}).record(config.embeddings.model, 4, 2_000);

    // A worker's published state: its circuit open, its sink down, its ingest above the high-water mark.
    const metrics = new Metrics();
    metrics.eventsConsumed.inc(5);
    metrics.sinkWrites.inc({ sink: 'lancedb', op: 'upsert' }, 3);
    const heartbeat = new WorkerHeartbeat({
      redis,
      prefix,
      roles: ['ingest', 'embed', 'write'],
      metrics,
      logger: silentLogger,
      snapshot: () => ({
        serving: 1,
        generations: [
          {
            generation: 1,
            model: config.embeddings.model,
            embeddings: [{ name: 'primary', url: 'http://embeddings.test', circuit: 'open', rpm: 3000, tpm: 0 }],
            sink: { available: false, reason: 'the sink has been unavailable since 2026-01-01T00:00:00.000Z (connect ECONNREFUSED)' },
            ingest: { pausedByHighWater: true, held: [] },
          },
        ],
      }),
    });
    heartbeat.start();
    cleanups.push(() => heartbeat.close());
    await waitFor('the heartbeat published', async () => (await redis.exists(workerKey(prefix, heartbeat.id))) === 1);

    const run = await runIndexer(env, 'status', '--json');
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const report = JSON.parse(run.stdout) as StatusReport;
    expect(report).toMatchObject({ version: 1, prefix, servingGeneration: 1, errors: [] });
    expect(report.generations).toHaveLength(1);
    const g = report.generations[0] as StatusReport['generations'][number];
    const embed = g.queues.find((q) => q.queue === 'embed');
    const write = g.queues.find((q) => q.queue === 'write');
    expect(embed).toMatchObject({ paused: true, pauseReason: { code: 'EMBEDDINGS_QUOTA_EXHAUSTED' }, held: ['embeddings circuit open on primary'] });
    expect(embed?.pauseReason?.fix).toContain('indexer resume');
    // The two added while paused, and the one deferred by the pause (waiting, or delayed until its recheck).
    expect((embed?.waiting ?? 0) + (embed?.delayed ?? 0)).toBe(3);
    expect(write).toMatchObject({ waiting: 1, active: 1, delayed: 1, failed: 1, paused: false, pauseReason: null });
    expect(write?.held[0]).toMatch(/^sink unreachable: the sink has been unavailable since/);
    expect(g.kafka).toMatchObject({ group: config.kafka.groupId, totalLag: 3, error: null, pausedByHighWater: [heartbeat.id] });
    expect(g.kafka.partitions).toEqual([{ topic, partition: 0, committed: '2', end: '5', lag: 3 }]);
    expect(g.deadLetters).toEqual({ total: 1, byStageAndCode: [{ stage: 'ingest', code: 'EVENT_INVALID', count: 1 }], uncounted: 0 });
    expect(g.backfills).toHaveLength(1);
    expect(g.backfills[0]).toMatchObject({ id: backfillId, state: 'active', source: 'file:/data/catalog.ndjson', progress: { read: 100, enqueued: 90, total: 400 } });
    expect(g.usage).toEqual([{ model: config.embeddings.model, requests: 1, inputs: 4, tokens: 2_000, estimatedCostUsd: 0.001 }]);
    expect(report.usage).toEqual({ totalCostUsd: 0.001, modelsWithoutPrice: [] });
    expect(report.workers).toHaveLength(1);
    expect(report.workers[0]).toMatchObject({ id: heartbeat.id, pid: process.pid, roles: ['ingest', 'embed', 'write'], counters: { eventsConsumed: 5, itemsWritten: 3 } });
    expect(report.rates.workers).toBe(1);
    expect(report.embeddings).toEqual([{ generation: 1, model: config.embeddings.model, name: 'primary', url: 'http://embeddings.test', circuit: 'open', workers: { closed: 0, half_open: 0, open: 1 }, rpm: 3000, tpm: 0 }]);

    // The same, on one screen.
    const screen = await runIndexer(env, 'status');
    expect(screen.status).toBe(0);
    expect(screen.stdout).toMatch(/^ {2}embed +\d+ +0 +\d+ +0 {2}PAUSED since \S+: EMBEDDINGS_QUOTA_EXHAUSTED: .*indexer resume/m);
    expect(screen.stdout).toMatch(/^ {2}write +1 +1 +1 +1 {2}held: sink unreachable: /m);
    expect(screen.stdout).toMatch(new RegExp(`^ {2}${topic} +0 +2 +5 +3$`, 'm'));
    expect(screen.stdout).toMatch(/^ {2}ingest +EVENT_INVALID +1$/m);
    expect(screen.stdout).toContain(backfillId);
    expect(screen.stdout).toContain('USAGE  estimated $0.0010 so far');

    // The gauges a worker process exports, from the same state.
    const sampled = new Metrics();
    const sampler = new QueueSampler({ config, redis, metrics: sampled, lag: new KafkaLagReader(createKafka(config.kafka, silentLogger)), logger: silentLogger });
    cleanups.push(() => sampler.close());
    await sampler.sample();
    const exposition = await sampled.registry.metrics();
    expect(exposition).toContain('indexer_queue_jobs{queue="write",state="failed"} 1');
    expect(exposition).toContain('indexer_queue_jobs{queue="write",state="active"} 1');
    expect(exposition).toContain('indexer_queue_paused{queue="embed"} 1');
    expect(exposition).toContain('indexer_queue_paused{queue="write"} 0');
    expect(exposition).toContain(`indexer_kafka_consumer_lag{topic="${topic}",partition="0"} 3`);

    // `indexer resume` lifts the pause and its reason; a stopped worker leaves the list at once.
    expect((await runIndexer(env, 'resume')).stdout).toContain('embed queue resumed');
    await heartbeat.close();
    const after = JSON.parse((await runIndexer(env, 'status', '--json')).stdout) as StatusReport;
    expect(after.generations[0]?.queues.find((q) => q.queue === 'embed')).toMatchObject({ paused: false, pauseReason: null, held: [] });
    expect(after.workers).toEqual([]);
  });

  it('lists a live worker process with its roles and endpoints, exports the gauges, and forgets the worker once it drained', async () => {
    const stub = new EmbeddingsStub({ dimensions: 8 });
    const port = await freePort();
    const { env, workers } = await isolatedWorkerEnv(stub, { METRICS_PORT: String(port), LOG_LEVEL: 'warn' }, h.cleanups);
    const topic = env.KAFKA_TOPICS as string;
    await ensureTopic(createKafka(loadConfig(env).kafka, silentLogger), topic, 1);
    const redis = new Redis(env.REDIS_URL as string);
    h.cleanups.push(async () => {
      await testKafka([env.KAFKA_BROKERS as string]).admin().deleteGroups([env.KAFKA_GROUP_ID as string]).catch(() => undefined);
      redis.disconnect();
    });
    const worker = spawnWorker('ingest,embed,write', env);
    workers.push(worker);
    await waitFor('the worker heartbeat', async () => (await readWorkers(redis, env.QUEUE_PREFIX as string)).length === 1, { timeoutMs: 90_000 });
    const gauges = await waitFor('the queue and lag gauges', async () => {
      const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return body.includes('indexer_queue_paused{queue="embed"} 0') && body.includes(`indexer_kafka_consumer_lag{topic="${topic}",partition="0"} 0`) ? body : undefined;
    });
    expect(gauges).toContain('indexer_queue_jobs{queue="write",state="waiting"} 0');

    const report = JSON.parse((await runIndexer(env, 'status', '--json')).stdout) as StatusReport;
    expect(report.workers).toHaveLength(1);
    expect(report.workers[0]).toMatchObject({ pid: worker.child.pid, roles: ['ingest', 'embed', 'write'], servingGeneration: 1 });
    expect(report.workers[0]?.generations).toMatchObject([{ generation: 1, sink: { available: true }, ingest: { pausedByHighWater: false } }]);
    expect(report.embeddings).toMatchObject([{ generation: 1, circuit: 'closed', workers: { closed: 1, half_open: 0, open: 0 } }]);

    worker.child.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    expect(await readWorkers(redis, env.QUEUE_PREFIX as string)).toEqual([]);
  });

  it('exits 1 naming Redis when it cannot be reached', async () => {
    const run = await runIndexer({ REDIS_URL: `redis://127.0.0.1:${await freePort()}`, LOG_LEVEL: 'warn' }, 'status', '--json');
    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^indexer status: cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+ \(connect ECONNREFUSED .*\): is it running, and is REDIS_URL right\?\n$/);
  });
});
