import type { Queue } from 'bullmq';
import { backfillShare } from '../backfill/backfill-job.js';
import type { BackfillStore } from '../backfill/backfill-store.js';
import { isAfter } from '../core/change-order.js';
import { DeferredError, handBackOnShutdown, IndexerError, isRetryable, retryAfterOf } from '../core/errors.js';
import { isolateFailures, MicroBatcher, type Outcome } from '../core/micro-batcher.js';
import { withRetry, type RetryPolicy } from '../core/retry.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { newJobId, writeJobBytes, type defaultJobOptions, type ItemWrite, type QueuedChange, type WriteJobData } from '../queue/jobs.js';
import { addWriteJob } from '../queue/write-jobs.js';
import type { ItemState, ItemStateStore } from '../state/item-state.js';
import { contentHash } from './content-hash.js';
import type { InflightVectors } from './inflight-vectors.js';
import { RecentPurchases } from './recent-purchases.js';
import type { EmbeddingProvider } from './provider.js';
import type { PreparedText, Tokenizer } from './tokenizer.js';
import type { UsageStore } from './usage.js';
import type { WriteQueueBudget } from '../queue/write-budget.js';
import { checkVector } from './vectors.js';

/** A job deferred by a paused queue looks again this often; a paused queue does not hand it out meanwhile. */
const PAUSED_RECHECK_MS = 5_000;
/** An embed job held back by a full write queue looks again this often. */
const WRITE_QUEUE_FULL_RECHECK_MS = 1_000;

export interface EmbedStageOptions {
  provider: EmbeddingProvider;
  writeQueue: Queue<WriteJobData>;
  /** The write queue's byte budget: no vectors are bought while it is spent. */
  writeBudget: WriteQueueBudget;
  state: ItemStateStore;
  inflight: InflightVectors;
  /** Where write jobs of backfill rows are counted against their backfill. */
  backfills: BackfillStore;
  jobOptions: ReturnType<typeof defaultJobOptions>;
  tokenizer: Tokenizer;
  usage: UsageStore;
  batchSize: number;
  /** Most tokens per embeddings request. */
  maxBatchTokens: number;
  lingerMs: number;
  logger: Logger;
  metrics: Metrics;
  /**
   * Called once when the provider says something only a person can fix (the quota is exhausted,
   * the key is refused): retrying cannot help, so the pipeline pauses the embed queue for every
   * worker until someone fixes it and runs `indexer resume`.
   */
  pauseForOperator: (error: IndexerError) => Promise<void>;
  /** In-process retries of one embeddings request before the job itself is failed and retried. */
  retryPolicy?: RetryPolicy;
  /** Aborted when the process stops: no new attempt or rate-limit wait starts (see handBackOnShutdown). */
  stopping?: AbortSignal;
}

/** A change with its text cut to the token limit: what is hashed, weighed and sent. */
interface PreparedTask {
  change: QueuedChange;
  prepared: PreparedText | undefined;
}

/**
 * Embed jobs carry many changes; their changes (from every job this worker holds) are grouped into
 * embeddings requests, and each request's results become one job on the write queue, which holds
 * the vectors until the sink has them: a sink outage never makes us pay for the same text twice.
 *
 * Before anything is sent, each change is checked against the item's state: a change older than
 * the newest version seen is dropped (a newer one is on its way), text whose vector the sink
 * already holds for this model (same content hash) becomes a payload-only write, and text whose
 * vector is bought and waiting in the write queue is taken from there rather than bought again.
 */
export class EmbedStage {
  private readonly batcher: MicroBatcher<PreparedTask, void>;
  /** Texts being bought, or just bought, by batches of this process. */
  private readonly purchases = new RecentPurchases<Outcome<Float32Array>>();
  /** The pause in progress: batches failing together pause (and say so) once. */
  private pausing: Promise<void> | undefined;

  constructor(private readonly options: EmbedStageOptions) {
    this.batcher = new MicroBatcher({
      maxSize: options.batchSize,
      lingerMs: options.lingerMs,
      run: (tasks) => this.runBatch(tasks),
      // Requests are bounded by tokens as well as inputs; the same text twice is sent once, so
      // this over-counts a little, which errs on the safe side.
      weigh: (task) => task.prepared?.tokens ?? 0,
      maxWeight: options.maxBatchTokens,
      // A live change goes out in a request of live changes, not behind a backfill's batch.
      urgent: (task) => task.change.backfill === undefined,
    });
  }

  /**
   * One embed job's changes: one outcome per change, in order. While the write queue holds its
   * byte budget (the sink is down or slow), the job waits in the embed queue, spending no attempt.
   */
  async process(changes: QueuedChange[]): Promise<Outcome<void>[]> {
    const { writeBudget } = this.options;
    if (await writeBudget.spent()) {
      const error = new DeferredError('WRITE_QUEUE_FULL', `the write queue holds its budget (WRITE_QUEUE_MAX_BYTES=${writeBudget.maxBytes}): the embed job waits until the writers catch up`, { retryAfterMs: WRITE_QUEUE_FULL_RECHECK_MS });
      return changes.map(() => ({ ok: false, error }));
    }
    return this.batcher.submitAll(changes.map((change) => this.prepare(change)));
  }

  drain(): Promise<void> {
    return this.batcher.drain();
  }

  private prepare(change: QueuedChange): PreparedTask {
    const prepared = change.op === 'upsert' ? this.options.tokenizer.prepare(change.text as string) : undefined;
    if (prepared?.truncated) this.options.metrics.truncations.inc();
    return { change, prepared };
  }

  private async runBatch(tasks: PreparedTask[]): Promise<Outcome<void>[]> {
    const reader = this.purchases.beginRead();
    try {
      return await this.readAndBuy(tasks, reader);
    } finally {
      this.purchases.endRead(reader);
    }
  }

  private async readAndBuy(tasks: PreparedTask[], reader: number): Promise<Outcome<void>[]> {
    const { provider, metrics } = this.options;
    const outcomes: Outcome<void>[] = tasks.map(() => ({ ok: true, value: undefined }));
    // The hash is over the text as embedded: after templating and truncation.
    const hashes = tasks.map((t) => (t.prepared ? contentHash(t.prepared.text, provider.model, provider.dimensions) : undefined));
    // The vectors in flight and the state are read together, in that order on one connection: the
    // writer records a write before it forgets the vector in flight (also in order), so a vector
    // missed here is one the state read after it already shows as written. The lookup asks for
    // every text's hash, a superset of those that will need a vector, in one HMGET.
    const [inflight, states] = await Promise.all([this.options.inflight.lookup([...new Set(hashes.filter((h): h is string => h !== undefined))]), this.options.state.getMany(tasks.map((t) => t.change.itemId))]);

    const superseded = (i: number) => isSuperseded((tasks[i] as PreparedTask).change, states[i] as ItemState);
    const alreadyEmbedded = (i: number) => sinkHolds(hashes[i], provider.model, states[i] as ItemState);
    const needsVector = (i: number) => (tasks[i] as PreparedTask).change.op === 'upsert' && !superseded(i) && !alreadyEmbedded(i);

    // A vector bought earlier and still waiting in the write queue is taken from there.
    const wanted = new Set(tasks.flatMap((_, i) => (needsVector(i) ? [hashes[i] as string] : [])));
    const reused = await this.options.inflight.vectorsFrom(new Map([...inflight].filter(([hash]) => wanted.has(hash))));
    // A write job announced at the first read may have finished since (its vector is now in the
    // sink, the job gone): those items' state is read again, so the vector is not bought twice.
    const vanished = tasks.flatMap((_, i) => (needsVector(i) && inflight.has(hashes[i] as string) && !reused.has(hashes[i] as string) ? [i] : []));
    if (vanished.length > 0) {
      const fresh = await this.options.state.getMany(vanished.map((i) => (tasks[i] as PreparedTask).change.itemId));
      vanished.forEach((i, k) => (states[i] = fresh[k] as ItemState));
    }
    if (reused.size > 0) metrics.embeddingsAvoided.inc({ reason: 'in_flight' }, tasks.filter((_, i) => needsVector(i) && reused.has(hashes[i] as string)).length);

    // Identical texts (of different items) are sent once.
    const tokensOf = new Map<string, number>();
    tasks.forEach((t, i) => {
      if (needsVector(i) && !reused.has(hashes[i] as string)) tokensOf.set((t.prepared as PreparedText).text, (t.prepared as PreparedText).tokens);
    });
    // A text another batch of this process is buying (or bought since this one began reading) is
    // awaited, not bought again; the texts this batch buys are visible to others until every batch
    // that read Redis before its write job was announced has looked.
    const mine = [...tokensOf.keys()].filter((text) => this.purchases.get(text) === undefined);
    const theirs = [...tokensOf.keys()].filter((text) => this.purchases.get(text) !== undefined).map((text) => [text, this.purchases.get(text) as Promise<Outcome<Float32Array>>] as const);
    this.purchases.endRead(reader);
    const purchase = this.embedIsolating(mine, tokensOf);
    mine.forEach((text, i) => {
      const one = purchase.then((results) => results[i] as Outcome<Float32Array>);
      one.catch(() => undefined);
      this.purchases.register(text, one);
    });
    try {
      return await this.finishBatch(tasks, hashes, outcomes, states, reused, mine, purchase, theirs);
    } finally {
      this.purchases.retire(mine);
    }
  }

  private async finishBatch(
    tasks: PreparedTask[],
    hashes: (string | undefined)[],
    outcomes: Outcome<void>[],
    states: ItemState[],
    reused: Map<string, Float32Array>,
    mine: string[],
    purchase: Promise<Outcome<Float32Array>[]>,
    theirs: (readonly [string, Promise<Outcome<Float32Array>>])[],
  ): Promise<Outcome<void>[]> {
    const { provider, metrics } = this.options;
    const results = await purchase;
    const bought = new Map<string, Outcome<Float32Array>>();
    mine.forEach((text, i) => bought.set(text, results[i] as Outcome<Float32Array>));
    for (const [text, pending] of theirs) bought.set(text, await pending);
    if (theirs.length > 0) metrics.embeddingsAvoided.inc({ reason: 'in_flight' }, theirs.length);
    const superseded = (i: number) => isSuperseded((tasks[i] as PreparedTask).change, states[i] as ItemState);
    const alreadyEmbedded = (i: number) => sinkHolds(hashes[i], provider.model, states[i] as ItemState);

    const embeddedAt = new Date().toISOString();
    const writes: ItemWrite[] = [];
    tasks.forEach((task, i) => {
      const c = task.change;
      if (superseded(i)) {
        metrics.eventsSkipped.inc({ reason: 'superseded' });
        return;
      }
      if (c.op === 'delete') {
        writes.push(itemWrite(c, { op: 'delete', metadata: {}, contentHash: undefined, model: undefined, vector: undefined, embeddedAt: undefined }));
        return;
      }
      const prepared = task.prepared as PreparedText;
      if (alreadyEmbedded(i)) {
        metrics.embeddingsAvoided.inc({ reason: 'in_sink' });
        const write = itemWrite(c, { op: 'payload', metadata: c.metadata, contentHash: hashes[i], model: provider.model, vector: undefined, embeddedAt: undefined }, prepared);
        write.text = c.text;
        write.versionSource = c.versionSource;
        writes.push(write);
        return;
      }
      const vector = this.vectorFor(hashes[i] as string, prepared.text, reused, bought, c.itemId);
      if (!vector.ok) {
        outcomes[i] = vector;
        return;
      }
      writes.push(itemWrite(c, { op: 'upsert', metadata: c.metadata, contentHash: hashes[i], model: provider.model, vector: vector.value, embeddedAt }, prepared));
    });

    if (writes.length > 0) await this.enqueueWrites(writes);
    return outcomes;
  }

  /** The vector for a text: taken from the write queue, or just bought and checked (invariant 4). */
  private vectorFor(hash: string, text: string, reused: Map<string, Float32Array>, bought: Map<string, Outcome<Float32Array>>, itemId: string): Outcome<Float32Array> {
    const { provider } = this.options;
    const held = reused.get(hash);
    try {
      if (held !== undefined) {
        checkVector(held, provider.dimensions, itemId);
        return { ok: true, value: held };
      }
      const result = bought.get(text);
      if (!result?.ok) return { ok: false, error: result?.error ?? new Error('text was not embedded') };
      checkVector(result.value, provider.dimensions, itemId);
      return { ok: true, value: result.value };
    } catch (error) {
      return { ok: false, error };
    }
  }

  /**
   * One write job for the batch. Its vectors are announced by hash first, so that the announcement
   * never outlives a job that was written already; if Redis refuses the job, every item of the
   * batch fails (retryably) and is retried by the queue, and the vectors bought are lost: retrying
   * the enqueue in process first keeps that rare.
   */
  private async enqueueWrites(writes: ItemWrite[]): Promise<void> {
    const jobId = newJobId('w');
    for (const write of writes) write.heldBy = jobId;
    const { backfills, priority } = backfillShare(writes);
    await withRetry(
      async () => {
        await this.options.inflight.announce(writes, jobId);
        if (backfills.length > 0) await this.options.backfills.addJobs(backfills, [jobId]);
        await addWriteJob(this.options.writeQueue, writes, { ...this.options.jobOptions, ...priority, jobId });
      },
      { policy: this.options.retryPolicy },
    );
    await this.options.writeBudget.record(jobId, writeJobBytes(writes)).catch((error: unknown) => this.options.logger.warn({ err: (error as Error).message, jobId }, 'could not count a write job against the write queue budget'));
    this.options.metrics.jobsEnqueued.inc({ queue: 'write' });
  }

  /** Embeds texts; a request the provider rejects is split until the offending input is alone. */
  private async embedIsolating(texts: string[], tokensOf: Map<string, number>): Promise<Outcome<Float32Array>[]> {
    const { provider, metrics, logger } = this.options;
    return isolateFailures(
      texts,
      async (batch) => {
        metrics.batchSize.observe({ stage: 'embed' }, batch.length);
        const estimatedTokens = batch.reduce((sum, text) => sum + (tokensOf.get(text) ?? 0), 0);
        try {
          const result = await withRetry(() => provider.embed(batch, { estimatedTokens, stopping: this.options.stopping }), {
            policy: this.options.retryPolicy,
            signal: this.options.stopping,
            // This batch waits in process (its items stay batched together); on a 429 the endpoint's
            // shared limiter holds every replica's requests for the Retry-After as well.
            onRetry: ({ attempt, delayMs, error }) => logger.warn({ attempt, delayMs, err: (error as Error).message }, 'embeddings request failed; retrying'),
          });
          metrics.embeddingRequests.inc({ model: provider.model, outcome: 'ok' });
          metrics.embeddingInputs.inc({ model: provider.model }, batch.length);
          metrics.embeddingTokens.inc({ model: provider.model }, result.usage.totalTokens);
          metrics.embeddingCostUsd.inc({ model: provider.model }, this.options.usage.costOf(provider.model, result.usage.totalTokens) ?? 0);
          await this.recordUsage(batch.length, result.usage.totalTokens);
          return result.vectors;
        } catch (error) {
          metrics.embeddingRequests.inc({ model: provider.model, outcome: error instanceof IndexerError ? error.code : 'error' });
          throw handBackOnShutdown(await this.deferIfWaiting(error), this.options.stopping);
        }
      },
      (error) => !isRetryable(error) && error instanceof IndexerError && error.code === 'EMBEDDINGS_REJECTED' && isInputError(error),
    );
  }

  /**
   * Best effort: the vectors just bought are worth more than their line in the usage ledger. A
   * Redis that refuses the record (OOM, a failover) costs the ledger this request, never the vectors.
   */
  private async recordUsage(inputs: number, tokens: number): Promise<void> {
    const { provider, usage, logger } = this.options;
    try {
      await usage.record(provider.model, inputs, tokens);
    } catch (error) {
      logger.warn({ err: (error as Error).message, inputs, tokens }, 'could not record embeddings usage; the vectors go on to be written (`indexer usage` will undercount this request)');
    }
  }

  /**
   * Failures that no attempt of this job can fix, but time or a person will, become deferrals: the
   * job waits (delayed by the time left, or until an operator resumes the paused queue) without
   * spending an attempt. An outage of any length therefore dead-letters nothing.
   */
  private async deferIfWaiting(error: unknown): Promise<unknown> {
    if (!(error instanceof IndexerError)) return error;
    if (error.code === 'EMBEDDINGS_QUOTA_EXHAUSTED' || error.code === 'EMBEDDINGS_UNAUTHORIZED') {
      this.pausing ??= this.options.pauseForOperator(error).finally(() => {
        this.pausing = undefined;
      });
      await this.pausing;
      return new DeferredError('EMBEDDINGS_PAUSED', `${error.message}; the embed queue is paused until \`indexer resume\``, { retryAfterMs: PAUSED_RECHECK_MS, details: { pausedBy: error.code } });
    }
    if (error instanceof DeferredError) return error;
    if (error.code === 'EMBEDDINGS_RATE_LIMITED') {
      const waitMs = retryAfterOf(error) ?? 1000;
      return new DeferredError('EMBEDDINGS_RATE_LIMITED', `${error.message} (still, after every in-process retry); the job waits ${waitMs} ms`, { retryAfterMs: waitMs });
    }
    return error;
  }
}

/**
 * One item's write, built field by field: V8 (Node 20) copies an object spread property by
 * property, about 10 µs per write here, which was a tenth of the embed stage's time.
 */
function itemWrite(c: QueuedChange, what: Pick<ItemWrite, 'op' | 'metadata' | 'contentHash' | 'model' | 'vector' | 'embeddedAt'>, prepared?: PreparedText): ItemWrite {
  const write: ItemWrite = { itemId: c.itemId, op: what.op, version: c.version, updatedAt: c.updatedAt, acceptedAt: c.acceptedAt, metadata: what.metadata, contentHash: what.contentHash, model: what.model, vector: what.vector, embeddedAt: what.embeddedAt };
  if (prepared !== undefined) {
    write.textTokens = prepared.tokens;
    write.truncated = prepared.truncated;
  }
  if (c.backfill !== undefined) write.backfill = c.backfill;
  return write;
}

/** A newer change of the item was accepted: this one need not be embedded or written. */
function isSuperseded(change: QueuedChange, state: ItemState): boolean {
  return state.seen !== undefined && isAfter({ version: state.seen, op: state.seenDeleted ? 'delete' : 'upsert' }, change);
}

/** The sink holds this text's vector (same content hash and model) for the item. */
function sinkHolds(hash: string | undefined, model: string, state: ItemState): boolean {
  return hash !== undefined && state.writtenVersion !== undefined && !state.deleted && state.contentHash === hash && state.model === model;
}

/** 400/413/422 blame the input; 401/403 blame the credentials and splitting would not help. */
function isInputError(error: IndexerError): boolean {
  const status = error.details?.status;
  return status === 400 || status === 413 || status === 422;
}
