import { setTimeout as sleep } from 'node:timers/promises';
import { DelayedError, UnrecoverableError, type Job, type Queue } from 'bullmq';
import type { Config } from '../config/config.js';
import { isAfter } from '../core/change-order.js';
import { BackfillError, errorMessage, InvalidEventError, isRetryable } from '../core/errors.js';
import type { DeadLetter, DeadLetterStore } from '../deadletter/dead-letter-store.js';
import { coalescingKey, parseChangeRecord, readChangeMessage, type ChangeMessage } from '../ingest/change-event.js';
import { applyTruncateMarks, chunkChanges, offerChanges, type SizedChange } from '../ingest/ingest-consumer.js';
import type { TableTruncate, TableTruncates } from '../ingest/table-truncates.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { EMBED_QUEUE, newJobId, type defaultJobOptions, type EmbedJobData, type ItemWrite, type QueuedChange, type WriteJobData } from '../queue/jobs.js';
import { addWriteJob } from '../queue/write-jobs.js';
import type { InflightVectors } from '../embed/inflight-vectors.js';
import type { BatchApiEmbedder } from './batch-api-embedder.js';
import type { StoredRecord, VectorSink } from '../sinks/vector-sink.js';
import type { ItemStateStore, QueuedJobKeys } from '../state/item-state.js';
import { BACKFILL_PRIORITY, initialProgress, isBackfillProgress, parseBackfillJob, type BackfillJobData, type BackfillProgress } from './backfill-job.js';
import type { BackfillStore } from './backfill-store.js';
import { openSource } from './sources/open-source.js';
import type { SourceRecord } from './sources/source.js';

export interface BackfillRunnerOptions {
  config: Config;
  embedQueue: Queue<EmbedJobData>;
  state: ItemStateStore;
  deadLetters: DeadLetterStore;
  store: BackfillStore;
  jobOptions: ReturnType<typeof defaultJobOptions>;
  /** A sink handle for the prune's scan (opened only when a job prunes). */
  openSink: () => Promise<VectorSink>;
  /** Where Batch API results go (write jobs), and their vectors are announced. */
  writeQueue: Queue<WriteJobData>;
  inflight: InflightVectors;
  /** Debezium tables' items and truncates, under the same prefix as the pipeline's (its generation's) ingest. */
  truncates: TableTruncates;
  /** The Batch API path, when the embeddings provider offers it (undefined: jobs asking for it fail). */
  batchApi: BatchApiEmbedder | undefined;
  logger: Logger;
  metrics: Metrics;
}

/** Embed jobs per addBulk call (one Redis round trip each). */
const ADD_BULK_JOBS = 50;
/** How often a backfill waiting on its source looks for a cancel. */
const CANCEL_POLL_MS = 1_000;
/** How often a backfill at its bound of jobs in flight looks again. */
const ROOM_POLL_MS = 50;
const PRUNE_PAGE = 512;
/** Item ids per page of a truncated table's members. */
const TRUNCATE_PAGE = 500;

interface PageCounts {
  read: number;
  enqueued: number;
  unchanged: number;
  failed: number;
  /** Debezium tombstones and truncate records: no change of an item by themselves (in progress: unchanged). */
  skipped: number;
}

interface EmbedJobSpec {
  name: string;
  data: EmbedJobData;
  opts: ReturnType<typeof defaultJobOptions> & { jobId: string; priority: number };
}

/** Batch API: the rows gathered for one batch, and where the source stands after them. */
interface Round {
  changes: QueuedChange[];
  counts: PageCounts;
  until: string | undefined;
  fraction: number | undefined;
}

const emptyRound = (): Round => ({ changes: [], counts: { read: 0, enqueued: 0, unchanged: 0, failed: 0, skipped: 0 }, until: undefined, fraction: undefined });

/** The checkpoint after rows whose counts are `counts`, ending at `cursor`: what `job.updateProgress` saves. */
function checkpoint(progress: BackfillProgress, counts: PageCounts, cursor: string, fraction: number | undefined): Pick<BackfillProgress, 'cursor' | 'read' | 'enqueued' | 'unchanged' | 'failed' | 'total'> {
  const read = progress.read + counts.read;
  return {
    cursor,
    read,
    enqueued: progress.enqueued + counts.enqueued,
    // The job's progress keeps four counts: a skipped record had nothing to do, as an unchanged row.
    unchanged: progress.unchanged + counts.unchanged + counts.skipped,
    failed: progress.failed + counts.failed,
    total: fraction ? Math.max(read, Math.round(read / fraction)) : progress.total,
  };
}

function addCounts(a: PageCounts, b: PageCounts): PageCounts {
  return { read: a.read + b.read, enqueued: a.enqueued + b.enqueued, unchanged: a.unchanged + b.unchanged, failed: a.failed + b.failed, skipped: a.skipped + b.skipped };
}

/**
 * Runs one backfill job: reads its source page by page and turns each page into embed jobs,
 * exactly as ingest does with a Kafka batch (same validation, coalescing, item state and job
 * shape), but at a priority below every live job and with a bound on its jobs in flight. After
 * each page is in Redis the cursor is checkpointed in the job's progress: a backfill that crashed
 * or was killed resumes from there. Rows the sink already holds (same version or older than what
 * live events wrote) are not queued at all, so a re-run of a finished backfill costs no embeddings.
 */
export class BackfillRunner {
  private readonly queuedJobKeys: QueuedJobKeys;
  private stopping: AbortSignal | undefined;

  constructor(private readonly options: BackfillRunnerOptions) {
    const prefix = options.config.redis.prefix;
    this.queuedJobKeys = { jobPrefix: `${prefix}:${EMBED_QUEUE}:`, failedKey: `${prefix}:${EMBED_QUEUE}:failed` };
  }

  /**
   * `stopping` aborts when the process shuts down: the job goes back to its queue at its
   * checkpoint, without spending an attempt, for whichever worker takes it next.
   */
  async run(job: Job<BackfillJobData, BackfillProgress>, token: string | undefined, stopping: AbortSignal): Promise<BackfillProgress> {
    try {
      return await this.runJob(job, stopping);
    } catch (error) {
      if (error instanceof ShutdownInterrupt) {
        await job.moveToDelayed(Date.now(), token);
        throw new DelayedError();
      }
      // A final error (invalid job, unreadable file, cancelled) must not spend the job's attempts.
      if (error instanceof BackfillError && !isRetryable(error)) throw new UnrecoverableError(`${error.code}: ${error.message}`);
      throw error;
    }
  }

  private async runJob(job: Job<BackfillJobData, BackfillProgress>, stopping: AbortSignal): Promise<BackfillProgress> {
    const { config, store, metrics } = this.options;
    const spec = parseBackfillJob(job.data);
    const id = job.id as string;
    this.stopping = stopping;
    const logger = this.options.logger.child({ backfill: id, source: spec.source.kind });
    // The pass starts on Redis's clock: the prune compares it with when live changes were accepted.
    let progress: BackfillProgress = isBackfillProgress(job.progress) ? job.progress : initialProgress(await store.now());
    const save = async (patch: Partial<BackfillProgress>) => {
      progress = { ...progress, ...patch, updatedAt: Date.now() };
      await job.updateProgress(progress);
    };
    logger.info({ phase: progress.phase, cursor: progress.cursor, read: progress.read }, progress.read > 0 || progress.phase !== 'reading' ? 'backfill resumes from its checkpoint' : 'backfill starts');

    if (progress.phase === 'reading') {
      if (spec.batchApi && this.options.batchApi === undefined) {
        throw new BackfillError('BACKFILL_INVALID', 'batchApi needs an OpenAI Batch API: EMBEDDINGS_PROVIDER=openai with EMBEDDINGS_PRESET=openai (the Batch API is OpenAI\'s; other servers do not offer /v1/batches)', { canRetry: false });
      }
      const source = openSource(spec.source, id, config, logger);
      // A source may wait for records (a Kafka fetch): a cancel or a shutdown must reach it there.
      const interrupt = new AbortController();
      const onStop = () => interrupt.abort();
      stopping.addEventListener('abort', onStop, { once: true });
      const cancelPoll = setInterval(() => {
        void store.cancelRequested(id).then((yes) => yes && interrupt.abort(), () => undefined);
      }, CANCEL_POLL_MS);
      let lastLog = Date.now();
      // Batch API: rows gather into a round (up to BATCH_API_MAX_INPUTS) whose cursor is saved
      // only once its batch is done and its writes are queued.
      let round: Round = emptyRound();
      const closeRound = async () => {
        await this.closeRound(id, round, progress, save, logger);
        round = emptyRound();
      };
      try {
        for await (const page of source.pages(progress.cursor, spec.pageSize ?? config.backfill.pageSize, interrupt.signal)) {
          // The cancel poll (and a shutdown) abort the signal: no Redis read per page for it.
          if (interrupt.signal.aborted) await this.throwIfCancelled(id);
          const { jobs, counts, truncates } = await this.observePage(id, page.records, spec.prune);
          if (!spec.batchApi) await this.enqueueEmbedJobs(id, jobs);
          // Before the checkpoint: a restart re-reads the page, truncate included. With the Batch
          // API too, at once: a truncate's deletes buy no embeddings.
          for (const truncate of truncates) counts.failed += await this.queueTruncateDeletes(id, truncate, logger);
          for (const outcome of ['read', 'enqueued', 'unchanged', 'failed', 'skipped'] as const) metrics.backfillRows.inc({ outcome }, counts[outcome]);
          const fraction = page.fraction;
          if (spec.batchApi) {
            round.changes.push(...jobs.flatMap((j) => j.data.changes));
            round.counts = addCounts(round.counts, counts);
            round.until = page.cursor;
            round.fraction = fraction;
            const pendingReached = progress.batch !== undefined && round.counts.read >= progress.batch.rows;
            if (pendingReached || (progress.batch === undefined && round.changes.length >= config.backfill.batchApiMaxInputs)) await closeRound();
            continue;
          }
          await save(checkpoint(progress, counts, page.cursor, fraction));
          if (Date.now() - lastLog > 10_000) {
            lastLog = Date.now();
            logger.info({ read: progress.read, enqueued: progress.enqueued, unchanged: progress.unchanged, failed: progress.failed, total: progress.total }, 'backfill progress');
          }
          await this.waitForJobsInFlight(id, config.backfill.maxJobsInFlight);
        }
        if (spec.batchApi && (round.changes.length > 0 || round.counts.read > 0)) await closeRound();
      } catch (error) {
        // Interrupted while waiting on the source: say why (cancelled, or handed back at shutdown).
        if (interrupt.signal.aborted) await this.throwIfCancelled(id);
        throw error;
      } finally {
        clearInterval(cancelPoll);
        stopping.removeEventListener('abort', onStop);
        await source.close();
      }
      await save({ phase: 'finishing', total: progress.read });
    }

    // Complete when every row is written (or dead-lettered), not merely queued.
    await this.waitForJobsInFlight(id, 1);
    if (spec.prune && progress.phase !== 'done') {
      await save({ phase: 'pruning' });
      await this.prune(id, progress, (pruned) => save({ pruned: progress.pruned + pruned }), logger);
      await this.waitForJobsInFlight(id, 1);
    }
    await save({ phase: 'done' });
    await store.forget(id);
    logger.info({ read: progress.read, enqueued: progress.enqueued, unchanged: progress.unchanged, failed: progress.failed, pruned: progress.pruned, seconds: (Date.now() - progress.startedAt) / 1000 }, 'backfill complete');
    return progress;
  }

  /**
   * One page of records into embed jobs: validated with the event mapping (an invalid record is
   * dead-lettered alone), coalesced per item (and version source), and offered to the item state,
   * which drops what the sink holds already and refuses a row ordered by another version source
   * than its item's (dead-lettered alone too); every item is marked for the prune. Read as live
   * ingest reads a Kafka batch: Debezium tombstones are skipped, and a truncate's mark turns the
   * page's older rows of its table into deletes; the truncates are returned for their deletes to
   * be queued after the page's jobs. The jobs are returned, not yet queued.
   */
  private async observePage(backfillId: string, records: SourceRecord[], prune: boolean): Promise<{ jobs: EmbedJobSpec[]; counts: PageCounts; truncates: TableTruncate[] }> {
    const { deadLetters, state } = this.options;
    const acceptedAt = Date.now();
    const newest = new Map<string, SizedChange>();
    const dead: DeadLetter[] = [];
    const truncates: TableTruncate[] = [];
    let skipped = 0;
    for (const record of records) {
      const source = `backfill:${backfillId}/${record.position}`;
      try {
        const read = this.parse(record);
        if (read.kind === 'tombstone') {
          skipped++;
          continue;
        }
        if (read.kind === 'truncate') {
          skipped++;
          truncates.push({ table: read.table, version: read.version, versionSource: read.versionSource, source });
          continue;
        }
        const { event, table } = read;
        const change: QueuedChange = { ...event, source, acceptedAt, backfill: backfillId };
        // Sized as queued; this also refuses a record that cannot be serialized, alone.
        const bytes = Buffer.byteLength(JSON.stringify(change));
        const held = newest.get(coalescingKey(event));
        if (held === undefined || !isAfter(held.change, change)) newest.set(coalescingKey(event), { change, bytes, table, original: () => originalOf(record) });
      } catch (error) {
        const { value: original, key } = originalOf(record);
        dead.push({ stage: 'backfill', code: (error as { code?: string }).code ?? 'EVENT_INVALID', reason: errorMessage(error), itemId: error instanceof InvalidEventError ? error.itemId : undefined, original, key, source });
      }
    }

    if (truncates.length > 0 || [...newest.values()].some((sized) => sized.table !== undefined)) await applyTruncateMarks(this.options.truncates, newest, truncates);
    // A pruning pass records every item its source has, whatever becomes of the row.
    if (prune) await this.options.store.markSeen(backfillId, [...new Set([...newest.values()].map((sized) => sized.change.itemId))]);
    const offered = await offerChanges(state, this.queuedJobKeys, [...newest.values()], this.jobLimits(), { stage: 'backfill', mapping: this.options.config.events });
    const jobs = offered.jobs.map(({ jobId, changes }) => this.jobSpec(`backfill:${backfillId}`, jobId, changes));
    // Rows of another version source than their item's: failed rows, like invalid ones.
    dead.push(...offered.dead);
    await deadLetters.add(dead);
    if (dead.length > 0) this.options.logger.warn({ backfill: backfillId, count: dead.length, first: dead[0]?.reason }, 'invalid backfill records sent to the dead-letter store');
    const enqueued = jobs.reduce((sum, job) => sum + job.data.changes.length, 0);
    return { jobs, counts: { read: records.length, enqueued, unchanged: records.length - dead.length - enqueued - skipped, failed: dead.length, skipped }, truncates };
  }

  /**
   * Queues the delete of every item the truncated table has had, at the truncate's version, page
   * by page within the backfill's bound of jobs in flight: the item state drops the deletes of
   * items changed after the truncate. Counted among the backfill's jobs, so the pass completes
   * only once they are written. Returns how many deletes the item state refused (dead-lettered).
   */
  private async queueTruncateDeletes(backfillId: string, truncate: TableTruncate, logger: Logger): Promise<number> {
    const { config, deadLetters, state, truncates, metrics } = this.options;
    let cursor = '0';
    let queued = 0;
    let refused = 0;
    do {
      const page = await truncates.members(truncate.table, cursor, TRUNCATE_PAGE);
      cursor = page.cursor;
      const acceptedAt = Date.now();
      const deletes: SizedChange[] = page.ids.map((itemId) => ({
        change: { itemId, op: 'delete', version: truncate.version, versionSource: truncate.versionSource, updatedAt: undefined, text: undefined, metadata: {}, source: truncate.source, acceptedAt, backfill: backfillId },
        bytes: 0,
      }));
      const offered = await offerChanges(state, this.queuedJobKeys, deletes, this.jobLimits(), { stage: 'backfill', mapping: config.events });
      await this.enqueueEmbedJobs(backfillId, offered.jobs.map(({ jobId, changes }) => this.jobSpec(`truncate:${truncate.table}`, jobId, changes)));
      await deadLetters.add(offered.dead);
      refused += offered.dead.length;
      queued += offered.jobs.reduce((sum, job) => sum + job.changes.length, 0);
      await this.waitForJobsInFlight(backfillId, config.backfill.maxJobsInFlight);
    } while (cursor !== '0');
    metrics.backfillRows.inc({ outcome: 'truncated' }, queued);
    logger.info({ table: truncate.table, version: truncate.version, source: truncate.source, deletes: queued }, 'table truncated: its items\' deletes are queued');
    return refused;
  }

  private jobLimits(): { maxItems: number; maxBytes: number } {
    return { maxItems: this.options.config.workers.embedJobMaxItems, maxBytes: this.options.config.workers.embedJobMaxBytes };
  }

  /** An embed job of backfill rows: below every live job. */
  private jobSpec(name: string, jobId: string, changes: QueuedChange[]): EmbedJobSpec {
    return { name, data: { changes }, opts: { ...this.options.jobOptions, jobId, priority: BACKFILL_PRIORITY } };
  }

  /** Queues embed jobs below live ones, counted in the backfill's jobs in flight first. */
  private async enqueueEmbedJobs(backfillId: string, jobs: EmbedJobSpec[]): Promise<void> {
    await this.options.store.addJobs([backfillId], jobs.map((j) => j.opts.jobId));
    for (let i = 0; i < jobs.length; i += ADD_BULK_JOBS) await this.options.embedQueue.addBulk(jobs.slice(i, i + ADD_BULK_JOBS));
    this.options.metrics.jobsEnqueued.inc({ queue: 'embed' }, jobs.length);
  }

  /**
   * A Batch API round: its changes' texts bought in one batch (or the batch submitted before a
   * restart), the vectors queued as write jobs, everything else (deletes, unchanged texts, failed
   * requests) as embed jobs; then the cursor moves past the round.
   */
  private async closeRound(backfillId: string, round: Round, progress: BackfillProgress, save: (patch: Partial<BackfillProgress>) => Promise<void>, logger: Logger): Promise<void> {
    const embedder = this.options.batchApi as BatchApiEmbedder;
    const result = await embedder.embed(round.changes, {
      existing: progress.batch?.id,
      created: (batchId) => save({ batch: { id: batchId, rows: round.counts.read } }),
      checkCancelled: () => this.throwIfCancelled(backfillId),
      label: `backfill-${backfillId}`,
    });
    await this.enqueueWriteJobs(backfillId, result.writes);
    const normal = chunkChanges(result.normal.map((change) => ({ change, bytes: Buffer.byteLength(JSON.stringify(change)) })), this.jobLimits().maxItems, this.jobLimits().maxBytes);
    await this.enqueueEmbedJobs(
      backfillId,
      normal.map(({ jobId, changes }) => this.jobSpec(`backfill:${backfillId}`, jobId, changes.map((c) => c.change))),
    );
    const patch = checkpoint(progress, round.counts, round.until ?? (progress.cursor as string), round.fraction);
    await save({ ...patch, batch: undefined, batchInputs: (progress.batchInputs ?? 0) + result.bought, batchFailed: (progress.batchFailed ?? 0) + result.failed });
    logger.info({ read: patch.read, bought: result.bought, failed: result.failed, normal: result.normal.length }, 'Batch API round queued for writing');
    await this.waitForJobsInFlight(backfillId, this.options.config.backfill.maxJobsInFlight);
  }

  /** Vectors bought by a batch, as write jobs (announced in flight, so live changes can reuse them). */
  private async enqueueWriteJobs(backfillId: string, writes: ItemWrite[]): Promise<void> {
    const per = this.options.config.embeddings.batchSize;
    for (let i = 0; i < writes.length; i += per) {
      const slice = writes.slice(i, i + per);
      const jobId = newJobId('w');
      for (const w of slice) w.heldBy = jobId;
      await this.options.inflight.announce(slice, jobId);
      await this.options.store.addJobs([backfillId], [jobId]);
      await addWriteJob(this.options.writeQueue, slice, { ...this.options.jobOptions, jobId, priority: BACKFILL_PRIORITY });
    }
    this.options.metrics.jobsEnqueued.inc({ queue: 'write' }, Math.ceil(writes.length / per));
  }

  /** A record as ingest reads a Kafka message (a file's line may be a Debezium envelope too); a row is always a change. */
  private parse(record: SourceRecord): ChangeMessage {
    const mapping = this.options.config.events;
    if (record.kind === 'row') {
      // The same size limit as an event: a row is refused alone, not queued whatever its size.
      const bytes = Buffer.byteLength(JSON.stringify(record.row));
      if (bytes > mapping.maxBytes) throw new InvalidEventError(`the row is ${bytes} bytes as JSON, over EVENT_MAX_BYTES=${mapping.maxBytes}`, 'value');
      return { kind: 'change', event: parseChangeRecord(record.row, null, undefined, mapping), table: undefined };
    }
    return readChangeMessage({ key: record.key, value: record.value, timestampMs: record.timestampMs }, mapping);
  }

  /**
   * Deletes the points of items this pass's source did not have: not marked by the pass, and not
   * changed since it started (a live event may have created an item the source never saw). Each
   * delete carries the item's current version, and at an equal version a delete comes after an
   * upsert, so it applies; a live change newer than that still wins. Skipped when rows of the
   * pass were invalid: their items cannot be told from items the source lacks.
   */
  private async prune(backfillId: string, progress: BackfillProgress, counted: (pruned: number) => Promise<void>, logger: Logger): Promise<void> {
    if (progress.failed > 0) {
      logger.warn({ failed: progress.failed }, 'prune skipped: some rows of the pass were invalid (see the dead-letter store), and their items would look absent from the source');
      return;
    }
    const sink = await this.options.openSink();
    try {
      let page: StoredRecord[] = [];
      // A prune resumed after a restart scans again: what it deleted is gone, or its delete queued.
      const flush = async () => {
        const pruned = await this.prunePage(backfillId, page, progress.startedAt);
        page = [];
        if (pruned > 0) await counted(pruned);
        await this.throwIfCancelled(backfillId);
        await this.waitForJobsInFlight(backfillId, this.options.config.backfill.maxJobsInFlight);
      };
      for await (const record of sink.scan({ pageSize: PRUNE_PAGE })) {
        page.push(record);
        if (page.length >= PRUNE_PAGE) await flush();
      }
      await flush();
    } finally {
      await sink.close();
    }
    logger.info({ pruned: progress.pruned }, 'prune queued the deletes of items the source no longer has');
  }

  private async prunePage(backfillId: string, records: StoredRecord[], startedAt: number): Promise<number> {
    if (records.length === 0) return 0;
    const { state, store, embedQueue } = this.options;
    const ids = records.map((r) => r.itemId);
    const [seen, accepted] = await Promise.all([store.seenBy(backfillId, ids), state.acceptedChanges(ids)]);
    const acceptedAt = Date.now();
    const deletes: QueuedChange[] = [];
    records.forEach((record, i) => {
      const mark = accepted[i] as (typeof accepted)[number];
      if (seen[i] || (mark.acceptedAt !== undefined && mark.acceptedAt >= startedAt) || mark.seenDeleted) return;
      const version = Math.max(Number(record.payload.version) || 0, mark.seen ?? 0);
      deletes.push({ itemId: record.itemId, op: 'delete', version, versionSource: 'version', updatedAt: undefined, text: undefined, metadata: {}, source: `backfill:${backfillId}/prune`, acceptedAt, backfill: backfillId });
    });
    if (deletes.length === 0) return 0;
    const offered = await offerChanges(state, this.queuedJobKeys, deletes.map((change) => ({ change, bytes: 200 })), this.jobLimits(), {
      stage: 'backfill',
      mapping: this.options.config.events,
      // Each delete carries its item's own current version, whatever its source.
      versionsFromItemState: true,
    });
    const jobs = offered.jobs.map(({ jobId, changes }) => this.jobSpec(`prune:${backfillId}`, jobId, changes));
    await store.addJobs([backfillId], jobs.map((j) => j.opts.jobId));
    if (jobs.length > 0) await embedQueue.addBulk(jobs);
    const queued = jobs.reduce((sum, job) => sum + job.data.changes.length, 0);
    this.options.metrics.backfillRows.inc({ outcome: 'pruned' }, queued);
    return queued;
  }

  /** Holds the backfill while `limit` or more of its jobs are unfinished; live jobs go first meanwhile. */
  private async waitForJobsInFlight(backfillId: string, limit: number): Promise<void> {
    for (;;) {
      const { left, cancelled } = await this.options.store.jobsInFlight(backfillId);
      if (left < limit) return;
      this.throwIfStopping(cancelled);
      await sleep(ROOM_POLL_MS);
    }
  }

  private async throwIfCancelled(backfillId: string): Promise<void> {
    this.throwIfStopping(await this.options.store.cancelRequested(backfillId));
  }

  /** The process is shutting down (the job is handed back), or an operator cancelled the backfill. */
  private throwIfStopping(cancelled: boolean): void {
    if (this.stopping?.aborted) throw new ShutdownInterrupt();
    if (cancelled) throw new BackfillError('BACKFILL_CANCELLED', 'cancelled by an operator (`indexer backfill cancel`); the changes it queued already are still written', { canRetry: false });
  }
}

/** The process is shutting down: the job is handed back at its checkpoint. */
class ShutdownInterrupt extends Error {}

/** A record as its source holds it, for the dead-letter store. */
function originalOf(record: SourceRecord): { value: Buffer; key: Buffer | null } {
  return record.kind === 'bytes' ? { value: record.value ?? Buffer.alloc(0), key: record.key } : { value: Buffer.from(safeJson(record.row)), key: null };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (error) {
    return JSON.stringify({ unserializable: errorMessage(error) });
  }
}
