import { Queue, Worker } from 'bullmq';
import type { Config } from '../config/config.js';
import { Releasers } from '../core/lifecycle.js';
import { DeadLetterStore } from '../deadletter/dead-letter-store.js';
import { createProvider } from '../embed/create-provider.js';
import { EmbedStage } from '../embed/embed-stage.js';
import { InflightVectors } from '../embed/inflight-vectors.js';
import { Tokenizer } from '../embed/tokenizer.js';
import { UsageStore } from '../embed/usage.js';
import type { EmbeddingProvider, EndpointHealth } from '../embed/provider.js';
import { IngestConsumer } from '../ingest/ingest-consumer.js';
import { TableTruncates } from '../ingest/table-truncates.js';
import { createKafka, ensureTopicsExist } from '../ingest/kafka.js';
import { checkRedisAtStart, CommitGate } from '../queue/redis-durability.js';
import { committedOffsets, epochKey, openEpoch } from '../state/epoch.js';
import type { Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { recordPauseReason } from '../observability/pause-reason.js';
import { createRedis } from '../queue/connection.js';
import { atBatchJobBoundary, type BatchJobDeps } from '../queue/job-boundary.js';
import { defaultJobOptions, EMBED_QUEUE, WRITE_QUEUE, type EmbedJobData, type WriteJobData } from '../queue/jobs.js';
import { hasBlob, readBlob, remainingWrites, removeBlob, removeOrphanedVectors, unpackWrites, writeLetter } from '../queue/write-jobs.js';
import { PeriodicTask } from '../core/periodic.js';
import { createSink } from '../sinks/create-sink.js';
import { BACKFILL_QUEUE, type BackfillJobData, type BackfillProgress } from '../backfill/backfill-job.js';
import { BackfillRunner } from '../backfill/backfill-runner.js';
import { BackfillStore } from '../backfill/backfill-store.js';
import { BatchApiEmbedder } from '../backfill/batch-api-embedder.js';
import { BatchApiClient } from '../embed/batch-api.js';
import type { VectorSink } from '../sinks/vector-sink.js';
import { ItemStateStore } from '../state/item-state.js';
import { WriteStage } from '../write/write-stage.js';
import { WriteQueueBudget } from '../queue/write-budget.js';

/** BullMQ's own stall limit, out of reach: our job boundary applies JOB_STALL_LIMIT and dead-letters. */
const BULLMQ_MAX_STALLED = 1_000_000;
/**
 * How often a writer looks for vectors keys whose write job is gone, and how long such a key must
 * have gone unread. The look walks the whole keyspace (SCAN): hourly, not more.
 */
const ORPHANED_VECTORS_SWEEP_MS = 60 * 60_000;
const ORPHANED_VECTORS_MIN_IDLE_S = 60 * 60;

export const ROLES = ['ingest', 'embed', 'write', 'backfill'] as const;
export type Role = (typeof ROLES)[number];

export interface PipelineOptions {
  roles: readonly Role[];
  logger: Logger;
  metrics?: Metrics;
  /** Injected by tests and the demo; otherwise built from the config. */
  provider?: EmbeddingProvider;
  sink?: VectorSink;
  /** Told when a role stops for good (ingest's Kafka consumer crashed past restarting): the process should exit non-zero. */
  onFatal?: (error: Error) => void;
}

export interface Pipeline {
  readonly roles: readonly Role[];
  readonly metrics: Metrics;
  readonly deadLetters: DeadLetterStore;
  readonly state: ItemStateStore;
  readonly embedQueue: Queue<EmbedJobData>;
  readonly writeQueue: Queue<WriteJobData>;
  /** Present when this process runs the write role. */
  readonly sink: VectorSink | undefined;
  /** Whether this process can do its work now: false while every embeddings circuit is open. */
  readiness(): Readiness;
  /** What `indexer status` shows of this process (published by its heartbeat): no I/O. */
  snapshot(): PipelineSnapshot;
  /** Stops taking work, finishes what is in hand, releases everything. Idempotent. */
  close(): Promise<void>;
}

/** The state of one pipeline's roles in this process, as the operator sees it. */
export interface PipelineSnapshot {
  /** The embed role's endpoints (circuit, limits in force); null without the embed role. */
  embeddings: EndpointHealth[] | null;
  /** The write role's sink; null without the write role. */
  sink: { available: boolean; reason?: string } | null;
  /** The ingest role; null without it. */
  ingest: { pausedByHighWater: boolean; held: string[] } | null;
}

export interface Readiness {
  ready: boolean;
  /** Why not, in words, when not. */
  reasons: string[];
  embeddings: EndpointHealth[] | undefined;
}

/** BullMQ reports its Redis connection problems through 'error'; it reconnects on its own. */
const WORKER_ERROR_ACTION = 'queue worker error: BullMQ reconnects and retries on its own; if it repeats, check that Redis at REDIS_URL is reachable and has memory';

/**
 * Builds the roles this process runs. Each role can run alone (scale each on its own) or all
 * together; they only meet through Kafka, the two queues and the sink.
 */
export async function startPipeline(config: Config, options: PipelineOptions): Promise<Pipeline> {
  const { logger } = options;
  const metrics = options.metrics ?? new Metrics();
  const releasers = new Releasers();
  const onCloseError = (name: string, error: unknown) => logger.error({ resource: name, err: (error as Error).message }, 'error while closing: nothing is lost (unfinished jobs are taken over after JOB_LOCK_MS); if it repeats, check the resource the error names');
  try {
    const redis = createRedis(config.redis.url, `indexer-${options.roles.join('+')}`);
    releasers.add('redis', () => redis.quit());
    const durability = await checkRedisAtStart(redis, config.redis.minReplicas, logger);
    const prefix = config.redis.prefix;
    const embedQueue = new Queue<EmbedJobData>(EMBED_QUEUE, { connection: redis, prefix });
    releasers.add('embed queue', () => embedQueue.close());
    const writeQueue = new Queue<WriteJobData>(WRITE_QUEUE, { connection: redis, prefix });
    releasers.add('write queue', () => writeQueue.close());
    const deadLetters = new DeadLetterStore(redis, prefix);
    const state = new ItemStateStore(redis, prefix, config.redis.tombstoneRetentionSeconds);
    const inflight = new InflightVectors(redis, prefix);
    const backfills = new BackfillStore(redis, prefix);
    const jobOptions = defaultJobOptions(config.redis.jobAttempts, config.redis.jobBackoffMs);
    const deps: BatchJobDeps = { deadLetters, logger, metrics, stallLimit: config.redis.jobStallLimit };
    // A live worker renews its jobs' locks every half lock, however long a batch waits on the API;
    // the lock only runs out when the worker is gone, and the stalled check then hands its jobs
    // to another worker.
    // Aborted first when the pipeline closes: in-hand work that would wait or retry goes back to the queue.
    const shutdown = new AbortController();
    const lockOptions = { lockDuration: config.redis.jobLockMs, stalledInterval: config.redis.jobLockMs, maxStalledCount: BULLMQ_MAX_STALLED };

    let sink: VectorSink | undefined;
    let writeStage: WriteStage | undefined;
    let embedProvider: EmbeddingProvider | undefined;
    if (options.roles.includes('write')) {
      const writeSink = options.sink ?? createSink(config.sink, config.embeddings.dimensions);
      sink = writeSink;
      // Invariant 4: refuse to start against a collection of another size or distance.
      await writeSink.open();
      releasers.add('sink', () => writeSink.close());
      const stage = new WriteStage({ sink: writeSink, state, inflight, embedQueue, jobOptions, backfills, batchSize: config.workers.writeBatchSize, lingerMs: config.workers.writeLingerMs, leaseMs: writeLeaseMs(config), stopping: shutdown.signal, logger: logger.child({ role: 'write' }), metrics });
      writeStage = stage;
      const worker = new Worker<WriteJobData>(
        WRITE_QUEUE,
        async (job, token) => {
          const blob = hasBlob(job.data) ? await readBlob(redis, prefix, job.id as string) : undefined;
          await atBatchJobBoundary(job, token, deps, { stage: 'write', items: unpackWrites(job.data, blob), withItems: (writes) => remainingWrites(writes, job.data.dimensions), letterOf: writeLetter, work: (writes) => stage.process(writes) });
          // Reached when the job completes (every write done, skipped or dead-lettered with its
          // vector); a retry or a deferral threw above, and keeps the blob.
          if (blob !== undefined) await removeBlob(redis, prefix, job.id as string);
        },
        { connection: redis, prefix, concurrency: config.workers.writeConcurrency, ...lockOptions },
      );
      worker.on('error', (error) => logger.error({ role: 'write', err: error.message }, WORKER_ERROR_ACTION));
      releasers.add('write worker', async () => {
        await worker.close();
        await stage.drain();
      });
      const sweep = new PeriodicTask(
        async () => {
          const removed = await removeOrphanedVectors(redis, prefix, ORPHANED_VECTORS_MIN_IDLE_S, shutdown.signal);
          if (removed > 0) logger.info({ role: 'write', removed }, 'removed the vectors keys of write jobs that no longer exist (removed by hand, or failed and trimmed)');
        },
        ORPHANED_VECTORS_SWEEP_MS,
        logger,
        { failing: 'could not look for the vectors keys of removed write jobs; tried again in an hour', recovered: 'looked for the vectors keys of removed write jobs again' },
      );
      sweep.start({ firstRunNow: false });
      releasers.add('orphaned vectors sweep', () => sweep.stop());
    }

    if (options.roles.includes('embed')) {
      const provider = options.provider ?? createProvider(config.embeddings, { redis, prefix, logger: logger.child({ role: 'embed' }), metrics });
      if (!options.provider) releasers.add('embeddings provider', () => provider.close());
      embedProvider = provider;
      const stage = new EmbedStage({
        provider,
        writeQueue,
        writeBudget: new WriteQueueBudget(redis, prefix, config.workers.writeQueueMaxBytes),
        state,
        inflight,
        backfills,
        jobOptions,
        usage: new UsageStore(redis, prefix, config.embeddings.prices),
        tokenizer: new Tokenizer(config.embeddings.tokenizer, config.embeddings.maxInputTokens, config.embeddings.truncate),
        batchSize: config.embeddings.batchSize,
        maxBatchTokens: config.embeddings.maxBatchTokens,
        pauseForOperator: async (error) => {
          const fix = error.code === 'EMBEDDINGS_UNAUTHORIZED' ? 'Fix EMBEDDINGS_API_KEY and restart the workers' : 'Add credit or raise the limit';
          // The reason first: a status read between the two never shows a pause without its cause.
          await recordPauseReason(redis, prefix, EMBED_QUEUE, { code: error.code, message: error.message, fix: `${fix}, then run \`indexer resume\`` });
          await embedQueue.pause();
          logger.error(
            { role: 'embed', code: error.code, err: error.message },
            `EMBEDDINGS STOPPED (${error.code}): the embed queue is paused for every worker; jobs wait in it. ${fix}, then run \`indexer resume\``,
          );
        },
        lingerMs: config.workers.embedLingerMs,
        stopping: shutdown.signal,
        logger: logger.child({ role: 'embed' }),
        metrics,
      });
      const worker = new Worker<EmbedJobData>(
        EMBED_QUEUE,
        (job, token) => atBatchJobBoundary(job, token, deps, { stage: 'embed', items: job.data.changes, withItems: (changes) => ({ changes }), work: (changes) => stage.process(changes), released: (ids, jobId) => state.releaseQueued(ids, jobId) }),
        {
          connection: redis,
          prefix,
          concurrency: config.workers.embedConcurrency,
          ...lockOptions,
        },
      );
      worker.on('error', (error) => logger.error({ role: 'embed', err: error.message }, WORKER_ERROR_ACTION));
      releasers.add('embed worker', async () => {
        await worker.close();
        await stage.drain();
      });
      logger.info({ provider: provider.kind, model: provider.model, dimensions: provider.dimensions }, 'embed role started');
    }

    if (options.roles.includes('backfill')) {
      const runner = new BackfillRunner({
        config,
        embedQueue,
        state,
        deadLetters,
        store: backfills,
        jobOptions,
        openSink: async () => {
          const sink = createSink(config.sink, config.embeddings.dimensions);
          await sink.open();
          return sink;
        },
        writeQueue,
        inflight,
        // The prefix of ingest's: a replay of a Debezium topic applies truncates as ingest does.
        truncates: new TableTruncates(redis, prefix),
        batchApi: batchApiEmbedder(config, state, redis, logger.child({ role: 'backfill' })),
        logger: logger.child({ role: 'backfill' }),
        metrics,
      });
      const stopping = new AbortController();
      const worker = new Worker<BackfillJobData, BackfillProgress>(BACKFILL_QUEUE, (job, token) => runner.run(job, token, stopping.signal), {
        connection: redis,
        prefix,
        concurrency: config.backfill.concurrency,
        lockDuration: config.redis.jobLockMs,
        stalledInterval: config.redis.jobLockMs,
        // A backfill that keeps dying (its process killed again and again) fails; its checkpoint stays in the job.
        maxStalledCount: config.redis.jobStallLimit,
      });
      worker.on('error', (error) => logger.error({ role: 'backfill', err: error.message }, WORKER_ERROR_ACTION));
      worker.on('failed', (job, error) => logger.error({ role: 'backfill', backfill: job?.id, err: error.message, attempt: job?.attemptsMade }, 'backfill attempt failed: it resumes from its checkpoint on the next attempt; fix what the error names (the source reachable, POSTGRES_URL), then `indexer backfill status`'));
      releasers.add('backfill worker', async () => {
        // A backfill runs for hours: it stops at its next page and goes back to the queue.
        stopping.abort();
        await worker.close();
      });
    }

    let ingest: IngestConsumer | undefined;
    if (options.roles.includes('ingest')) {
      const kafka = createKafka(config.kafka, logger);
      await ensureTopicsExist(kafka, config.kafka.topics);
      const epoch = await openEpoch(redis, prefix, () => committedOffsets(kafka, config.kafka.groupId, config.kafka.topics), logger);
      // WAIT and WAITAOF block the connection they are sent on: a connection of the gate's own.
      const gateRedis = createRedis(config.redis.url, 'indexer-commit-gate');
      // Its connection errors are the main connection's too, which readiness reports.
      gateRedis.on('error', () => undefined);
      releasers.add('commit gate redis', () => gateRedis.quit());
      const gate = new CommitGate(gateRedis, { key: epochKey(prefix), value: epoch }, durability, config.redis.durabilityTimeoutMs);
      const truncates = new TableTruncates(redis, prefix);
      const consumer = new IngestConsumer({ kafka, config, embedQueue, writeQueue, jobOptions, state, deadLetters, gate, truncates, onFatal: options.onFatal, logger: logger.child({ role: 'ingest' }), metrics });
      ingest = consumer;
      releasers.add('ingest', () => consumer.close());
      await consumer.start();
      logger.info({ waitAof: durability.localFsync, minReplicas: durability.replicas }, 'ingest commits offsets once Redis confirms the jobs');
    }

    return {
      roles: options.roles,
      metrics,
      deadLetters,
      state,
      embedQueue,
      writeQueue,
      sink,
      readiness: () => readinessOf(embedProvider, writeStage, ingest, redis),
      snapshot: () => ({
        embeddings: embedProvider ? (embedProvider.health?.() ?? []) : null,
        sink: writeStage ? (({ sinkAvailable, reason }) => ({ available: sinkAvailable, reason }))(writeStage.health()) : null,
        ingest: ingest ? { pausedByHighWater: ingest.pausedByHighWater, held: ingest.health() } : null,
      }),
      close: () => {
        shutdown.abort();
        return releasers.close(onCloseError);
      },
    };
  } catch (error) {
    await releasers.close(onCloseError);
    throw error;
  }
}

/**
 * An item's write lease outlasts one sink request with room to spare (it is renewed before each retry
 * attempt), and never undercuts the job lock: a writer that is alive keeps its items.
 */
function writeLeaseMs(config: Config): number {
  return Math.max(config.redis.jobLockMs, 2 * (config.sink.qdrant?.timeoutMs ?? 30_000));
}

/** The Batch API path of backfills: OpenAI's own API only (other servers have no /v1/batches). */
function batchApiEmbedder(config: Config, state: ItemStateStore, redis: ReturnType<typeof createRedis>, logger: Logger): BatchApiEmbedder | undefined {
  const e = config.embeddings;
  if (e.provider !== 'openai' || e.preset !== 'openai') return undefined;
  return new BatchApiEmbedder({
    client: new BatchApiClient({ baseUrl: e.baseUrl, apiKey: e.apiKey, timeoutMs: Math.max(e.timeoutMs, 120_000) }),
    state,
    tokenizer: new Tokenizer(e.tokenizer, e.maxInputTokens, e.truncate),
    usage: new UsageStore(redis, config.redis.prefix, e.prices),
    model: e.model,
    dimensions: e.dimensions,
    sendDimensions: e.sendDimensions,
    pollMs: config.backfill.batchApiPollMs,
    logger,
  });
}

function readinessOf(provider: EmbeddingProvider | undefined, writer: WriteStage | undefined, ingest: IngestConsumer | undefined, redis: ReturnType<typeof createRedis>): Readiness {
  const endpoints = provider?.health?.();
  const reasons: string[] = [];
  // Every role works through Redis: while it is away, nothing moves (commands wait for it).
  if (redis.status !== 'ready') reasons.push(`Redis is not connected (${redis.status}): every role waits for it`);
  reasons.push(...(ingest?.health() ?? []));
  const sink = writer?.health();
  if (sink && !sink.sinkAvailable) reasons.push(sink.reason as string);
  if (endpoints && endpoints.length > 0 && endpoints.every((e) => e.circuit === 'open')) {
    reasons.push(`every embeddings endpoint's circuit is open (${endpoints.map((e) => e.name).join(', ')}): embed jobs wait in the queue`);
  }
  return { ready: reasons.length === 0, reasons, embeddings: endpoints };
}
