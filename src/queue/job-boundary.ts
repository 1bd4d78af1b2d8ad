import { DelayedError, type Job } from 'bullmq';
import { DeferredError, errorMessage, IndexerError, isRetryable, retryAfterOf } from '../core/errors.js';
import type { Outcome } from '../core/micro-batcher.js';
import type { DeadLetter, DeadLetterStage, DeadLetterStore } from '../deadletter/dead-letter-store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';

/** A deferred job is back after the time its cause named, within these bounds. */
const MIN_DEFERRAL_MS = 200;
const MAX_DEFERRAL_MS = 60_000;

export interface BatchJobDeps {
  deadLetters: DeadLetterStore;
  logger: Logger;
  metrics: Metrics;
  /**
   * Times a job may be found stalled (its worker died or hung past its lock) and run again; past
   * this, its items are dead-lettered with code JOB_STALLED. BullMQ's own limit is set out of
   * reach, because BullMQ fails such a job without running our code: its items would sit in a
   * failed set nobody reads, instead of the dead-letter store.
   */
  stallLimit: number;
}

export interface BatchJobSpec<T extends { itemId: string }, D> {
  stage: DeadLetterStage;
  items: T[];
  /** The job's data holding only these items: what a retry carries. */
  withItems: (items: T[]) => D;
  /** An item as its dead letter holds it, as JSON (default: the item itself). */
  letterOf?: (item: T) => unknown;
  /** Runs the batch; one outcome per item, in order. Throwing counts as every item failing so. */
  work: (items: T[]) => Promise<Outcome<void>[]>;
  /** Items dead-lettered from a job that goes on without them (so a replay of them is not mistaken for a change still queued). */
  released?: (itemIds: string[], jobId: string) => Promise<void>;
}

/** Thrown to have BullMQ retry a job whose data now holds only the items that may still succeed. */
export class ItemsToRetryError extends Error {
  constructor(count: number, of: number, cause: unknown) {
    super(`${count} of ${of} items failed and will be retried: ${errorMessage(cause)}`, { cause });
    this.name = 'ItemsToRetryError';
  }
}

/**
 * Where a batch job's per-item outcomes become instructions to BullMQ, so that one bad item never
 * fails its neighbours:
 * - items that succeeded are done;
 * - an item that failed for good (a non-retryable error, or a retryable one at the job's last
 *   attempt) goes to the dead-letter store alone, with its reason and its own data;
 * - items that may still succeed stay in the job: its data shrinks to them and the job is retried
 *   with backoff (an attempt spent), or, when the failure was a deferral (an open circuit, a
 *   quota pause, a rate limit outlasting the in-process retries), delayed without spending one.
 * So a job always completes once every item is written or dead-lettered; it fails only when the
 * dead-letter store itself cannot be reached at its last attempt.
 */
export async function atBatchJobBoundary<T extends { itemId: string }, D>(job: Job<D>, token: string | undefined, deps: BatchJobDeps, spec: BatchJobSpec<T, D>): Promise<void> {
  const { stage, items } = spec;
  if (job.stalledCounter > deps.stallLimit) {
    const error = new IndexerError('JOB_STALLED', `the job stalled ${job.stalledCounter} times (its worker died or hung past its lock each time); over JOB_STALL_LIMIT=${deps.stallLimit}`, { canRetry: false });
    await deadLetter(job, deps, stage, items.map((item) => ({ item, error })), spec.letterOf);
    return;
  }

  let outcomes: Outcome<void>[];
  try {
    outcomes = await spec.work(items);
  } catch (error) {
    outcomes = items.map(() => ({ ok: false, error }));
  }

  const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
  const final: { item: T; error: unknown }[] = [];
  const remaining: T[] = [];
  let deferral: DeferredError | undefined;
  let retryCause: unknown;
  outcomes.forEach((outcome, i) => {
    const item = items[i] as T;
    if (outcome.ok) return;
    if (outcome.error instanceof DeferredError) {
      deferral ??= outcome.error;
      remaining.push(item);
    } else if (isRetryable(outcome.error) && !lastAttempt) {
      retryCause ??= outcome.error;
      remaining.push(item);
    } else {
      final.push({ item, error: outcome.error });
    }
  });

  await deadLetter(job, deps, stage, final, spec.letterOf);
  if (remaining.length === 0) return;
  if (final.length > 0) await spec.released?.(final.map((f) => f.item.itemId), job.id as string);
  if (remaining.length < items.length) await job.updateData(spec.withItems(remaining));
  if (deferral) {
    // Delayed rather than put back at once: the worker goes on with other jobs, and this one
    // returns when the wait is over (a paused queue keeps it until it is resumed).
    const waitMs = Math.min(MAX_DEFERRAL_MS, Math.max(MIN_DEFERRAL_MS, retryAfterOf(deferral) ?? MIN_DEFERRAL_MS));
    deps.metrics.jobsDeferred.inc({ stage, reason: deferral.code });
    deps.logger.debug({ stage, jobId: job.id, items: remaining.length, code: deferral.code, waitMs }, 'job deferred: it waits without spending an attempt');
    await job.moveToDelayed(Date.now() + waitMs, token);
    throw new DelayedError();
  }
  deps.logger.info({ stage, jobId: job.id, items: remaining.length, of: items.length, attempt: job.attemptsMade + 1, err: errorMessage(retryCause) }, 'items failed; their job will be retried');
  throw new ItemsToRetryError(remaining.length, items.length, retryCause);
}

async function deadLetter<T extends { itemId: string }>(job: Job, deps: BatchJobDeps, stage: DeadLetterStage, failed: { item: T; error: unknown }[], letterOf: (item: T) => unknown = (item) => item): Promise<void> {
  if (failed.length === 0) return;
  const letters: DeadLetter[] = failed.map(({ item, error }) => ({
    stage,
    code: error instanceof IndexerError ? error.code : 'UNEXPECTED',
    reason: errorMessage(error),
    itemId: item.itemId,
    original: Buffer.from(JSON.stringify(letterOf(item))),
    key: Buffer.from(item.itemId),
    source: `${stage}:${job.id}`,
  }));
  await deps.deadLetters.add(letters);
  deps.metrics.deadLettered.inc({ stage }, letters.length);
  deps.logger.warn({ stage, jobId: job.id, items: letters.length, first: { itemId: letters[0]?.itemId, code: letters[0]?.code, reason: letters[0]?.reason } }, 'items failed for good; sent to the dead-letter store');
}
