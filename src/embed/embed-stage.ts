import type { Queue } from 'bullmq';
import { DeferredError, IndexerError, isRetryable, retryAfterOf } from '../core/errors.js';
import { isolateFailures, MicroBatcher, type Outcome } from '../core/micro-batcher.js';
import { withRetry, type RetryPolicy } from '../core/retry.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { encodeVector, type defaultJobOptions, type EmbedJobData, type WriteJobData } from '../queue/jobs.js';
import type { ItemState, ItemStateStore } from '../state/item-state.js';
import { contentHash } from './content-hash.js';
import type { EmbeddingProvider } from './provider.js';
import type { PreparedText, Tokenizer } from './tokenizer.js';
import type { UsageStore } from './usage.js';
import { checkVector } from './vectors.js';

export interface EmbedStageOptions {
  provider: EmbeddingProvider;
  writeQueue: Queue<WriteJobData>;
  state: ItemStateStore;
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
  /**
   * Stops every worker from taking new embed jobs for this long (BullMQ's global rate limit): on
   * a 429, and while every endpoint's circuit is open.
   */
  holdQueue: (waitMs: number) => Promise<void>;
  /** In-process retries of one embeddings request before the job itself is failed and retried. */
  retryPolicy?: RetryPolicy;
}

export interface EmbedTask {
  jobId: string;
  data: EmbedJobData;
}

/** A task with its text cut to the token limit: what is hashed, weighed and sent. */
interface PreparedTask extends EmbedTask {
  prepared: PreparedText | undefined;
}

/**
 * Embed jobs arrive one by one (one BullMQ job per item); they are grouped into embeddings
 * requests, and every embedded item becomes one job on the write queue, which holds its vector
 * until the sink has it: a sink outage never makes us pay for the same text twice.
 *
 * Before anything is sent, each job is checked against the item's state: a job older than the
 * newest version seen is dropped (a newer job is on its way), and text whose vector the sink
 * already holds for this model (same content hash) becomes a payload-only write.
 */
export class EmbedStage {
  private readonly batcher: MicroBatcher<PreparedTask, void>;
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
    });
  }

  process(task: EmbedTask): Promise<void> {
    const prepared = task.data.op === 'upsert' ? this.options.tokenizer.prepare(task.data.text as string) : undefined;
    if (prepared?.truncated) this.options.metrics.truncations.inc();
    return this.batcher.submit({ ...task, prepared });
  }

  drain(): Promise<void> {
    return this.batcher.drain();
  }

  private async runBatch(tasks: PreparedTask[]): Promise<Outcome<void>[]> {
    const { provider, metrics } = this.options;
    const outcomes: Outcome<void>[] = tasks.map(() => ({ ok: true, value: undefined }));
    const writes: { name: string; data: WriteJobData; opts: ReturnType<typeof defaultJobOptions> & { jobId: string } }[] = [];
    const states = await this.options.state.getMany(tasks.map((t) => t.data.itemId));

    const superseded = (i: number) => {
      const seen = (states[i] as ItemState).seen;
      return seen !== undefined && (tasks[i] as EmbedTask).data.version < seen;
    };
    // The hash is over the text as embedded: after templating and truncation.
    const hashes = tasks.map((t) => (t.prepared ? contentHash(t.prepared.text, provider.model, provider.dimensions) : undefined));
    const alreadyEmbedded = (i: number) => {
      const s = states[i] as ItemState;
      return hashes[i] !== undefined && s.writtenVersion !== undefined && !s.deleted && s.contentHash === hashes[i] && s.model === provider.model;
    };
    const needsEmbedding = (i: number) => (tasks[i] as EmbedTask).data.op === 'upsert' && !superseded(i) && !alreadyEmbedded(i);

    // Identical texts (of different items) are sent once.
    const tokensOf = new Map<string, number>();
    tasks.forEach((t, i) => {
      if (needsEmbedding(i)) tokensOf.set((t.prepared as PreparedText).text, (t.prepared as PreparedText).tokens);
    });
    const uniqueTexts = [...tokensOf.keys()];
    const embedded = new Map<string, Outcome<Float32Array>>();
    const results = await this.embedIsolating(uniqueTexts, tokensOf);
    uniqueTexts.forEach((text, i) => embedded.set(text, results[i] as Outcome<Float32Array>));

    const embeddedAt = new Date().toISOString();
    tasks.forEach((task, i) => {
      const d = task.data;
      let write: WriteJobData;
      if (superseded(i)) {
        metrics.eventsSkipped.inc({ reason: 'superseded' });
        return;
      }
      if (d.op === 'upsert' && alreadyEmbedded(i)) {
        metrics.embeddingsAvoided.inc();
        write = { itemId: d.itemId, op: 'payload', version: d.version, updatedAt: d.updatedAt, metadata: d.metadata, contentHash: hashes[i], model: provider.model, vector: undefined, embeddedAt: undefined, acceptedAt: d.acceptedAt, text: d.text, textTokens: task.prepared?.tokens, truncated: task.prepared?.truncated };
        writes.push({ name: write.op, data: write, opts: { ...this.options.jobOptions, jobId: task.jobId } });
        return;
      }
      if (d.op === 'delete') {
        write = { itemId: d.itemId, op: 'delete', version: d.version, updatedAt: d.updatedAt, metadata: {}, contentHash: undefined, model: undefined, vector: undefined, embeddedAt: undefined, acceptedAt: d.acceptedAt };
      } else {
        const result = embedded.get((task.prepared as PreparedText).text);
        if (!result?.ok) {
          outcomes[i] = { ok: false, error: result?.error ?? new Error('text was not embedded') };
          return;
        }
        try {
          checkVector(result.value, provider.dimensions, d.itemId);
        } catch (error) {
          outcomes[i] = { ok: false, error };
          return;
        }
        write = {
          itemId: d.itemId,
          op: 'upsert',
          version: d.version,
          updatedAt: d.updatedAt,
          metadata: d.metadata,
          contentHash: hashes[i],
          model: provider.model,
          vector: encodeVector(result.value),
          embeddedAt,
          acceptedAt: d.acceptedAt,
          textTokens: task.prepared?.tokens,
          truncated: task.prepared?.truncated,
        };
      }
      writes.push({ name: write.op, data: write, opts: { ...this.options.jobOptions, jobId: task.jobId } });
    });

    if (writes.length > 0) {
      // If Redis refuses, every item of the batch fails and is retried by the queue.
      await this.options.writeQueue.addBulk(writes);
      this.options.metrics.jobsEnqueued.inc({ queue: 'write' }, writes.length);
    }
    return outcomes;
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
          const result = await withRetry(() => provider.embed(batch, { estimatedTokens }), {
            policy: this.options.retryPolicy,
            onRetry: ({ attempt, delayMs, error }) => {
              logger.warn({ attempt, delayMs, err: (error as Error).message }, 'embeddings request failed; retrying');
              // This batch waits in process (its items stay batched together); the queue stops
              // handing out new jobs to every worker for as long.
              if (error instanceof IndexerError && error.code === 'EMBEDDINGS_RATE_LIMITED') void this.options.holdQueue(delayMs).catch(() => undefined);
            },
          });
          metrics.embeddingRequests.inc({ model: provider.model, outcome: 'ok' });
          metrics.embeddingInputs.inc({ model: provider.model }, batch.length);
          metrics.embeddingTokens.inc({ model: provider.model }, result.usage.totalTokens);
          metrics.embeddingCostUsd.inc({ model: provider.model }, this.options.usage.costOf(provider.model, result.usage.totalTokens) ?? 0);
          await this.options.usage.record(provider.model, batch.length, result.usage.totalTokens);
          return result.vectors;
        } catch (error) {
          metrics.embeddingRequests.inc({ model: provider.model, outcome: error instanceof IndexerError ? error.code : 'error' });
          throw await this.deferIfWaiting(error);
        }
      },
      (error) => !isRetryable(error) && error instanceof IndexerError && error.code === 'EMBEDDINGS_REJECTED' && isInputError(error),
    );
  }

  /**
   * Failures that no attempt of this job can fix, but time or a person will, become deferrals:
   * the queue is held or paused first, then the jobs go back to it without spending an attempt.
   * An outage of any length therefore dead-letters nothing.
   */
  private async deferIfWaiting(error: unknown): Promise<unknown> {
    if (!(error instanceof IndexerError)) return error;
    if (error.code === 'EMBEDDINGS_QUOTA_EXHAUSTED' || error.code === 'EMBEDDINGS_UNAUTHORIZED') {
      this.pausing ??= this.options.pauseForOperator(error).finally(() => {
        this.pausing = undefined;
      });
      await this.pausing;
      return new DeferredError('EMBEDDINGS_PAUSED', `${error.message}; the embed queue is paused until \`indexer resume\``, { details: { pausedBy: error.code } });
    }
    if (error instanceof DeferredError || error.code === 'EMBEDDINGS_RATE_LIMITED') {
      const waitMs = retryAfterOf(error) ?? 1000;
      await this.options.holdQueue(waitMs);
      return error instanceof DeferredError ? error : new DeferredError('EMBEDDINGS_RATE_LIMITED', `${error.message} (still, after every in-process retry); the embed queue waits ${waitMs} ms`, { retryAfterMs: waitMs });
    }
    return error;
  }
}

/** 400/413/422 blame the input; 401/403 blame the credentials and splitting would not help. */
function isInputError(error: IndexerError): boolean {
  const status = error.details?.status;
  return status === 400 || status === 413 || status === 422;
}
