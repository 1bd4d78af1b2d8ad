import { setTimeout as sleep } from 'node:timers/promises';
import { Queue, type Job, type JobState } from 'bullmq';
import type { Redis } from 'ioredis';
import { newJobId } from '../queue/jobs.js';
import { BACKFILL_QUEUE, isBackfillProgress, parseBackfillJob, type BackfillJobData, type BackfillProgress } from './backfill-job.js';
import { BackfillStore } from './backfill-store.js';

/** A backfill as `status` shows it. */
export interface BackfillStatus {
  id: string;
  state: JobState | 'unknown';
  source: BackfillJobData['source'];
  prune: boolean;
  progress: BackfillProgress | undefined;
  /** Rows per second over the pass so far. */
  rowsPerSecond: number | undefined;
  /** Seconds left at that rate, when the source's size is known. */
  etaSeconds: number | undefined;
  attempts: number;
  failedReason: string | undefined;
  createdAt: string;
  finishedAt: string | undefined;
}

/** Finished backfills are kept this long (and at most this many), for `status`. */
const KEEP_FINISHED = { age: 30 * 24 * 3600, count: 1000 };

/**
 * Starting, watching and cancelling backfills: what the CLI does, usable by any service. A backfill
 * is a job on the `backfill` queue; the workers running the backfill role do the work.
 */
export class BackfillControl {
  private readonly queue: Queue<BackfillJobData, BackfillProgress>;
  private readonly store: BackfillStore;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly retry: { attempts: number; backoffMs: number },
    /** Only reads (status): a plain Queue writes its meta key on open. */
    readOnly = false,
  ) {
    this.queue = new Queue(BACKFILL_QUEUE, { connection: redis, prefix, skipMetasUpdate: readOnly });
    this.store = new BackfillStore(redis, prefix);
  }

  /** Validates the job data and queues it; returns the backfill's id. */
  async start(data: BackfillJobData): Promise<string> {
    parseBackfillJob(data);
    const jobId = newJobId('b');
    await this.queue.add(`${data.source.kind}`, data, {
      jobId,
      attempts: this.retry.attempts,
      backoff: { type: 'exponential', delay: this.retry.backoffMs, jitter: 0.5 },
      removeOnComplete: KEEP_FINISHED,
      removeOnFail: KEEP_FINISHED,
    });
    return jobId;
  }

  async status(id: string): Promise<BackfillStatus | undefined> {
    // The state first: the job read after it is at least as new (a finished job's reason and
    // progress are in it).
    const state = await this.queue.getJobState(id);
    const job = await this.queue.getJob(id);
    return job ? this.describe(job, state) : undefined;
  }

  /** Every backfill the queue holds: running and waiting first, then the finished, newest first. */
  async list(limit = 50): Promise<BackfillStatus[]> {
    const jobs = await this.queue.getJobs(['active', 'waiting', 'prioritized', 'delayed', 'completed', 'failed'], 0, limit - 1);
    return Promise.all(jobs.filter((j): j is Job<BackfillJobData, BackfillProgress> => j !== undefined).map(async (j) => this.describe(j, await j.getState())));
  }

  /**
   * A waiting backfill is removed; a running one is flagged, and stops at its next page (its job
   * fails as cancelled). The changes it queued already are still written.
   */
  async cancel(id: string): Promise<'removed' | 'cancelling' | 'finished' | 'unknown'> {
    const job = await this.queue.getJob(id);
    if (!job) return 'unknown';
    const state = await job.getState();
    if (state === 'completed' || state === 'failed') return 'finished';
    await this.store.requestCancel(id);
    if (state !== 'active') {
      try {
        await job.remove();
        return 'removed';
      } catch {
        // It was taken meanwhile: the flag stops it.
      }
    }
    return 'cancelling';
  }

  /** Calls `onProgress` as the backfill moves, until it finishes; resolves with its last status. */
  async follow(id: string, onProgress: (status: BackfillStatus) => void, pollMs = 500): Promise<BackfillStatus> {
    for (;;) {
      const status = await this.status(id);
      if (!status) throw new Error(`no backfill ${id} (finished backfills are kept ${KEEP_FINISHED.age / 86400} days)`);
      onProgress(status);
      if (status.state === 'completed' || status.state === 'failed') return status;
      await sleep(pollMs);
    }
  }

  close(): Promise<void> {
    return this.queue.close();
  }

  private describe(job: Job<BackfillJobData, BackfillProgress>, state: JobState | 'unknown'): BackfillStatus {
    const progress = isBackfillProgress(job.progress) ? job.progress : undefined;
    const seconds = progress ? ((job.finishedOn ?? progress.updatedAt) - progress.startedAt) / 1000 : 0;
    const rowsPerSecond = progress && seconds > 0 ? progress.read / seconds : undefined;
    const left = progress?.total !== undefined ? Math.max(0, progress.total - progress.read) : undefined;
    return {
      id: job.id as string,
      state,
      source: job.data.source,
      prune: job.data.prune ?? false,
      progress,
      rowsPerSecond,
      etaSeconds: left !== undefined && rowsPerSecond ? left / rowsPerSecond : undefined,
      attempts: job.attemptsMade,
      failedReason: job.failedReason || undefined,
      createdAt: new Date(job.timestamp).toISOString(),
      finishedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : undefined,
    };
  }
}

/** `file:/data/catalog.ndjson`, `kafka:products`, `postgres:products`: how a source reads in one word. */
export function describeSource(source: BackfillJobData['source']): string {
  switch (source.kind) {
    case 'file':
      return `file:${source.path}`;
    case 'kafka':
      return `kafka:${source.topic}`;
    case 'postgres':
      return source.table !== undefined ? `postgres:${source.table}` : 'postgres:(query)';
  }
}
