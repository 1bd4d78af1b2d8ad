import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { DeferredError, errorMessage, IndexerError, isRetryable } from '../core/errors.js';
import type { DeadLetterStage, DeadLetterStore } from '../deadletter/dead-letter-store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';

/**
 * Where our typed errors become instructions to BullMQ: a retryable error is rethrown (the job is
 * retried with backoff); a non-retryable one becomes UnrecoverableError (no further attempts). A
 * job that will not be tried again goes to the dead-letter store with its reason and data. A
 * DeferredError puts the job back in its queue untouched: no attempt spent, nothing dead-lettered.
 */
export async function atJobBoundary<T>(
  job: Job<{ itemId: string }>,
  stage: DeadLetterStage,
  deps: { deadLetters: DeadLetterStore; logger: Logger; metrics: Metrics },
  work: () => Promise<T>,
): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof DeferredError) {
      deps.metrics.jobsDeferred.inc({ stage, reason: error.code });
      deps.logger.debug({ stage, jobId: job.id, itemId: job.data.itemId, code: error.code }, 'job deferred: back to the queue');
      throw Worker.RateLimitError();
    }
    const retryable = isRetryable(error);
    const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    const log = { stage, jobId: job.id, itemId: job.data.itemId, attempt: job.attemptsMade + 1, err: errorMessage(error) };
    if (!retryable || lastAttempt) {
      deps.logger.warn(log, 'job failed for good; sent to the dead-letter store');
      deps.metrics.deadLettered.inc({ stage });
      await deps.deadLetters.add([
        {
          stage,
          code: error instanceof IndexerError ? error.code : 'UNEXPECTED',
          reason: errorMessage(error),
          itemId: job.data.itemId,
          original: Buffer.from(JSON.stringify(job.data)),
          key: Buffer.from(job.data.itemId),
          source: `${stage}:${job.id}`,
        },
      ]);
    } else {
      deps.logger.info(log, 'job failed; it will be retried');
    }
    if (!retryable) throw new UnrecoverableError(errorMessage(error));
    throw error;
  }
}
