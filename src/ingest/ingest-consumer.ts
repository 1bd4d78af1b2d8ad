import { setTimeout as sleep } from 'node:timers/promises';
import type { Queue } from 'bullmq';
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import type { Config } from '../config/config.js';
import { isAfter } from '../core/change-order.js';
import { errorMessage, IndexerError, InvalidEventError, isRetryable } from '../core/errors.js';
import { backoffDelay, type RetryPolicy } from '../core/retry.js';
import type { DeadLetter, DeadLetterStore } from '../deadletter/dead-letter-store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { EMBED_QUEUE, newJobId, type defaultJobOptions, type EmbedJobData, type QueuedChange, type WriteJobData } from '../queue/jobs.js';
import type { CommitGate } from '../queue/redis-durability.js';
import type { ItemStateStore, QueuedJobKeys, Verdict } from '../state/item-state.js';
import { BatchRounds } from './batch-rounds.js';
import { coalescingKey, readChangeMessage, versionSourceConflict, type EventMapping, type VersionSource } from './change-event.js';
import type { TableName } from './debezium.js';
import type { TableTruncate, TableTruncates, TruncateMark } from './table-truncates.js';

/**
 * INITIALIZED: constructed, not connected. RUNNING: consuming. STOPPING: close() called, the
 * current batch finishes and is committed. STOPPED: disconnected. FAILED: the consumer crashed and
 * kafkajs will not restart it (an error that retrying cannot fix): `onFatal` has been told, and
 * nothing is consumed until the process is restarted.
 */
export type IngestState = 'INITIALIZED' | 'RUNNING' | 'STOPPING' | 'STOPPED' | 'FAILED';

export interface IngestOptions {
  kafka: Kafka;
  config: Config;
  embedQueue: Queue<EmbedJobData>;
  /** Counted with the embed queue against the high-water mark. */
  writeQueue: Queue<WriteJobData>;
  jobOptions: ReturnType<typeof defaultJobOptions>;
  state: ItemStateStore;
  deadLetters: DeadLetterStore;
  /** Confirms a batch's jobs are durable, and Redis still holds the epoch, before its offsets are committed. */
  gate: CommitGate;
  /** Called once when ingest stops for good (FAILED); the worker process exits non-zero on it. */
  onFatal?: (error: Error) => void;
  /** Debezium tables' items and truncates. */
  truncates: TableTruncates;
  logger: Logger;
  metrics: Metrics;
}

/**
 * A step of a batch that fails on something that passes (Redis away, out of memory, a replica
 * behind) is tried again until it succeeds or ingest closes: the batch is held, uncommitted, and
 * its partition with it, which is what a consumer should do while its downstream is unavailable.
 */
const STEP_RETRY: RetryPolicy = { attempts: Number.POSITIVE_INFINITY, baseDelayMs: 200, maxDelayMs: 5_000 };
/** Retries of one step before its warnings become errors for the operator. */
const STEP_RETRIES_BEFORE_ERROR = 5;
/**
 * Kafka's answers to a commit or heartbeat from a member the group has moved on from (the batch
 * outlived the session timeout): the partition is someone else's now, and kafkajs re-joins the
 * group when it sees one of these, but not when it arrives wrapped, as a commit's does.
 */
const GROUP_MOVED_ON = new Set(['REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID', 'NOT_COORDINATOR_FOR_GROUP']);

/** Embed jobs per addBulk call (one Redis round trip each). */
const ADD_BULK_JOBS = 50;
const HIGH_WATER_POLL_MS = 250;
/** A backlog well below the high-water mark is not counted again for this long. */
const HIGH_WATER_RECHECK_MS = 200;

export interface SizedChange {
  change: QueuedChange;
  /** The event's size as it arrived: what the change weighs in its job. */
  bytes: number;
  /** The event as it arrived, for the dead-letter store should the item state refuse it (read only then). */
  original?: () => { value: Buffer; key: Buffer | null };
  /** The database table of a Debezium row change (a truncate of it deletes the item). */
  table?: TableName;
}

/**
 * Records a batch's Debezium rows as items of their tables and its truncates as the tables' marks
 * (see TableTruncates: members added before the marks are read), then turns each change older
 * than its table's newest truncate into a delete at the truncate's version: the row was gone by
 * then, whichever partition brought the truncate, and whenever. Live ingest and a backfill's
 * replay both call it, with their pipeline's TableTruncates.
 */
export async function applyTruncateMarks(tables: TableTruncates, newest: Map<string, SizedChange>, truncates: TableTruncate[]): Promise<void> {
  const members = new Map<TableName, string[]>();
  for (const { change, table } of newest.values()) {
    if (table === undefined) continue;
    const ids = members.get(table) ?? [];
    ids.push(change.itemId);
    members.set(table, ids);
  }
  const marks = await tables.record(members, truncates);
  if (marks.size === 0) return;
  for (const sized of newest.values()) {
    const mark: TruncateMark | undefined = sized.table === undefined ? undefined : marks.get(sized.table);
    if (mark === undefined || mark.versionSource !== sized.change.versionSource || sized.change.version >= mark.version) continue;
    sized.change = { ...sized.change, op: 'delete', version: mark.version, text: undefined, metadata: {} };
  }
}

/** Item ids per page of a truncated table's members. */
const TRUNCATE_PAGE = 500;

/** What offerChanges needs beyond the changes: where refusals are dead-lettered from, and how. */
export interface OfferContext {
  stage: 'ingest' | 'backfill';
  /** Names the configured fields in a refusal's reason. */
  mapping: EventMapping;
  /** The versions were read from the items' own state (a prune's deletes): they fit any source. */
  versionsFromItemState?: boolean;
}

/**
 * Cuts a batch's changes into embed jobs of at most maxItems changes and maxBytes bytes (a single
 * change larger than maxBytes travels alone), each with a fresh job id.
 */
export function chunkChanges(changes: SizedChange[], maxItems: number, maxBytes: number): { jobId: string; changes: SizedChange[] }[] {
  const chunks: { jobId: string; changes: SizedChange[] }[] = [];
  let current: SizedChange[] = [];
  let bytes = 0;
  for (const sized of changes) {
    if (current.length > 0 && (current.length >= maxItems || bytes + sized.bytes > maxBytes)) {
      chunks.push({ jobId: newJobId('e'), changes: current });
      current = [];
      bytes = 0;
    }
    current.push(sized);
    bytes += sized.bytes;
  }
  if (current.length > 0) chunks.push({ jobId: newJobId('e'), changes: current });
  return chunks;
}

/**
 * Cuts changes into embed jobs and offers them to the item state (OBSERVE): the jobs keep only the
 * changes to queue (none older than one seen, none still queued, none the sink holds), and jobs
 * left empty are dropped. What ingest does with a Kafka batch and a backfill with a page. Changes
 * the state refuses (a version source other than their item's) come back as dead letters, for
 * the caller to store with the rest of its batch's before it commits.
 */
export async function offerChanges(
  state: ItemStateStore,
  queued: QueuedJobKeys,
  changes: SizedChange[],
  limits: { maxItems: number; maxBytes: number },
  context: OfferContext,
): Promise<{ jobs: { jobId: string; changes: QueuedChange[] }[]; verdicts: Verdict[]; dead: DeadLetter[] }> {
  const chunks = chunkChanges(changes, limits.maxItems, limits.maxBytes);
  const offered = chunks.flatMap((chunk) => chunk.changes.map((sized) => ({ sized, jobId: chunk.jobId })));
  const verdicts = await state.observe(
    offered.map(({ sized: { change }, jobId }) => ({
      itemId: change.itemId,
      version: change.version,
      op: change.op,
      jobId,
      versionSource: context.versionsFromItemState ? undefined : change.versionSource,
    })),
    queued,
  );
  let k = 0;
  const jobs = chunks
    .map((chunk) => ({ jobId: chunk.jobId, changes: chunk.changes.filter(() => verdicts[k++] === 'queue').map(({ change }) => change) }))
    .filter((chunk) => chunk.changes.length > 0);
  const dead = offered.flatMap(({ sized }, i) => {
    const verdict = verdicts[i];
    return typeof verdict === 'object' ? [refusedDeadLetter(sized, verdict.itemVersionSource, context)] : [];
  });
  return { jobs, verdicts, dead };
}

function refusedDeadLetter({ change, original }: SizedChange, itemSource: VersionSource, context: OfferContext): DeadLetter {
  const error = versionSourceConflict(change.itemId, itemSource, change.versionSource, context.mapping);
  // Without the bytes as they arrived, the change as parsed is the next best thing to replay.
  const arrived = original?.() ?? { value: Buffer.from(JSON.stringify(change)), key: null };
  return { stage: context.stage, code: error.code, reason: error.message, itemId: change.itemId, original: arrived.value, key: arrived.key, source: change.source };
}

/**
 * Reads change events from Kafka, validates them, and enqueues the batches of one fetch (one per
 * partition, a round) as a few embed jobs of many changes (bounded by EMBED_JOB_MAX_ITEMS and
 * EMBED_JOB_MAX_BYTES): a BullMQ job costs tens of Redis commands however small it is, so it is
 * paid once per chunk, not once per change.
 * Several changes of one item in a round coalesce into its newest; a change older than one already
 * seen (another partition, a replay) is dropped, and so is a redelivered change whose job is still
 * queued. Offsets are committed only after Redis accepted the jobs (and the dead letters): a crash
 * before the commit redelivers the batch.
 */
export class IngestConsumer {
  state: IngestState = 'INITIALIZED';
  private readonly consumer: Consumer;
  private closing: Promise<void> | undefined;
  private paused = false;
  private lastBacklog = { at: 0, jobs: 0 };
  private readonly queuedJobKeys: QueuedJobKeys;
  /** Why ingest stopped for good (state FAILED). */
  private failure: Error | undefined;
  /** Per partition, the step its batch is held at, and why (for readiness). */
  private readonly held = new Map<string, string>();
  /** Aborted by close(): batches held on a retry let go, uncommitted. */
  private readonly stopping = new AbortController();
  /** The batches in hand together are offered and enqueued as one. */
  private readonly rounds = new BatchRounds<RoundPart, RoundResult>((parts) => this.offerRound(parts));

  constructor(private readonly options: IngestOptions) {
    const prefix = options.config.redis.prefix;
    this.queuedJobKeys = { jobPrefix: `${prefix}:${EMBED_QUEUE}:`, failedKey: `${prefix}:${EMBED_QUEUE}:failed` };
    this.consumer = options.kafka.consumer({
      groupId: options.config.kafka.groupId,
      // Rebalances must not wait for a batch that is waiting below the high-water mark.
      sessionTimeout: options.config.kafka.sessionTimeoutMs,
      heartbeatInterval: Math.min(3_000, Math.floor(options.config.kafka.sessionTimeoutMs / 3)),
      maxBytesPerPartition: 1_048_576,
      // A fetch answered with the first event makes a job of a few events at a modest rate, and a
      // job costs the same Redis round trips whatever its size: waiting a moment fills it.
      minBytes: options.config.kafka.fetchMinBytes,
      maxWaitTimeInMs: options.config.kafka.fetchMaxWaitMs,
    });
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => this.onCrash(payload.error, payload.restart));
  }

  /** Whether ingest is waiting for the queues to drain below QUEUE_HIGH_WATER (for `indexer status`). */
  get pausedByHighWater(): boolean {
    return this.paused;
  }

  /** Why this process cannot ingest now, in words (empty when it can). */
  health(): string[] {
    const reasons = [...this.held.entries()].map(([partition, why]) => `ingest holds a batch of ${partition} uncommitted: ${why}`);
    if (this.state === 'FAILED') reasons.unshift(`ingest stopped for good: ${this.failure?.message ?? 'the Kafka consumer crashed'}`);
    return reasons;
  }

  /**
   * kafkajs restarts a crashed consumer only after errors it deems retriable; otherwise the
   * consumer is gone while the process lives on, consuming nothing, unnoticed. That is turned
   * into a failure the process acts on (not ready, exit non-zero, restarted by its supervisor).
   */
  private onCrash(error: Error, restart: boolean): void {
    const { logger } = this.options;
    if (restart) {
      logger.warn({ err: errorMessage(error) }, 'kafka consumer crashed; kafkajs restarts it');
      return;
    }
    if (this.state === 'STOPPING' || this.state === 'STOPPED') return;
    this.failure ??= new IndexerError('INGEST_FAILED', `the Kafka consumer crashed and kafkajs will not restart it: ${errorMessage(error)}`, { canRetry: false, cause: error });
    this.state = 'FAILED';
    logger.error(
      { err: this.failure.message, code: (this.failure as IndexerError).code },
      'INGEST STOPPED: the Kafka consumer is gone; the process reports not ready and exits non-zero so that its supervisor restarts it. If it fails again, fix what the error names',
    );
    this.options.onFatal?.(this.failure);
  }

  async start(): Promise<void> {
    const { config, logger } = this.options;
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: config.kafka.topics, fromBeginning: config.kafka.fromBeginning });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      // The partitions of one fetch are handled at once and enqueued as one round (BatchRounds).
      partitionsConsumedConcurrently: config.kafka.partitionsAtOnce,
      eachBatch: (payload) => this.handleBatchJudgingErrors(payload),
    });
    this.state = 'RUNNING';
    logger.info({ topics: config.kafka.topics, groupId: config.kafka.groupId }, 'ingest consuming');
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.state = 'STOPPING';
      this.stopping.abort();
      await this.consumer.disconnect();
      this.state = 'STOPPED';
    })();
    return this.closing;
  }

  /**
   * What kafkajs does with an error thrown from eachBatch decides whether ingest survives it: most
   * errors it retries a few times and then restarts the consumer for, but a TypeError or RangeError,
   * or a commit refused because the group moved on (wrapped as non-retriable), stop the consumer
   * for good. So every error is judged here. Transient ones were retried in place (see step()); the
   * group moving on goes back to kafkajs as the rebalance it is, and kafkajs re-joins; kafkajs's own
   * errors are left to it; anything else is final, marked so that kafkajs does not retry or restart
   * and the process fails at once instead of retrying a bug.
   */
  private async handleBatchJudgingErrors(payload: EachBatchPayload): Promise<void> {
    try {
      await this.handleBatch(payload);
    } catch (error) {
      // Closing: the batch stays uncommitted, and whoever owns the partition next reads it again.
      if (this.stopping.signal.aborted) return;
      const movedOn = groupMovedOn(error);
      if (movedOn) throw movedOn;
      if (isKafkaJsError(error)) throw error;
      this.failure = new IndexerError('INGEST_FAILED', `ingest met an error that retrying cannot fix: ${errorMessage(error)}`, { canRetry: false, cause: error });
      throw Object.assign(this.failure, { retriable: false });
    }
  }

  /**
   * Runs one step of a batch, again and again while it fails on something that passes (Redis away
   * or refusing writes for now, durability not confirmed yet), heartbeating between attempts so
   * that the partition stays this consumer's; other errors go up at once. Until it succeeds the
   * batch stays uncommitted and readiness names the step. close() ends the waiting between
   * attempts, never an attempt: a batch in hand at a shutdown still finishes and is committed.
   */
  private async step<T>(partition: string, what: string, heartbeat: () => Promise<void>, operation: () => Promise<T>): Promise<T> {
    const { logger } = this.options;
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          return await operation();
        } catch (error) {
          if (!isRetryable(error) || this.stopping.signal.aborted) throw error;
          const delayMs = backoffDelay(STEP_RETRY, attempt);
          this.held.set(partition, `${what}: ${errorMessage(error)}`);
          const fields = { partition, step: what, attempt, delayMs, err: errorMessage(error), code: (error as { code?: unknown }).code };
          if (attempt < STEP_RETRIES_BEFORE_ERROR) logger.warn(fields, 'ingest batch step failed; retrying');
          else logger.error(fields, 'ingest holds this batch uncommitted and keeps retrying: fix what the error names (Redis reachable, a primary, with memory and the configured replicas)');
          await sleep(delayMs, undefined, { signal: this.stopping.signal });
          await heartbeat();
        }
      }
    } finally {
      this.held.delete(partition);
    }
  }

  private async handleBatch({ batch, heartbeat, isRunning, isStale, resolveOffset, commitOffsetsIfNecessary }: EachBatchPayload): Promise<void> {
    const { metrics, logger } = this.options;
    if (batch.messages.length === 0) return;
    // Taken before the first await: a round starting meanwhile waits for this batch to join.
    const ticket = this.rounds.take();
    try {
      const partition = `${batch.topic}/${batch.partition}`;
      if (!(await this.waitBelowHighWater(partition, heartbeat, isRunning))) return;

      const acceptedAt = Date.now();
      const { newest, dead, tombstones, truncates } = this.parseBatch(batch.topic, batch.partition, batch.messages, acceptedAt);
      metrics.eventsSkipped.inc({ reason: 'tombstone' }, tombstones);
      metrics.eventsSkipped.inc({ reason: 'coalesced' }, batch.messages.length - dead.length - tombstones - truncates.length - newest.size);
      if (truncates.length > 0 || [...newest.values()].some((sized) => sized.table !== undefined)) {
        await this.step(partition, 'recording the tables\' items and truncates', heartbeat, () => applyTruncateMarks(this.options.truncates, newest, truncates));
      }
      const round = await ticket.join({ partition, topic: batch.topic, newest, dead, heartbeat });
      metrics.eventsConsumed.inc(batch.messages.length);
      logger.debug({ topic: batch.topic, partition: batch.partition, first: batch.firstOffset(), last: batch.lastOffset(), round }, 'batch enqueued');
      for (const truncate of truncates) {
        if (!(await this.queueTruncateDeletes(partition, truncate, { heartbeat, isRunning }))) return;
      }

      // A rebalance took the partition away meanwhile: its new owner re-reads from the last commit,
      // and the item state keeps a change still queued from being queued twice.
      if (isStale()) return;
      // Acknowledged is not durable: the commit waits until the jobs would survive a Redis crash
      // or failover as far as the Redis allows (CommitGate), and Redis still holds the epoch.
      await this.step(partition, 'confirming the jobs are durable in Redis', heartbeat, () => this.options.gate.confirm());
      if (isStale()) return;
      // resolveOffset moves this consumer's fetch position; the commit makes it survive a restart.
      resolveOffset(batch.lastOffset());
      const offset = (BigInt(batch.lastOffset()) + 1n).toString();
      // kafkajs's consumer.commitOffsets silently commits nothing once close() has begun, so a
      // batch finishing during a shutdown commits through its own payload (the group is left only
      // after the batches in hand are done); while running, the consumer's call retries for us.
      if (isRunning()) await this.consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset }]);
      else await commitOffsetsIfNecessary({ topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset }] }] });
    } finally {
      ticket.leave();
    }
  }

  /**
   * One round: the batches in hand together (see BatchRounds) are offered to the item state and
   * cut into embed jobs as one, so that a job holds a few partitions' events rather than one's,
   * and their dead letters are stored in one call. Each batch then commits its own offsets.
   */
  private async offerRound(parts: RoundPart[]): Promise<RoundResult> {
    const { config, embedQueue, deadLetters, metrics, state, logger } = this.options;
    const label = parts.map((part) => part.partition).join(', ');
    // kafkajs heartbeats for the whole consumer, whichever batch asks.
    const heartbeat = (parts[0] as RoundPart).heartbeat;
    const { newest, coalesced } = newestAcross(parts);
    metrics.eventsSkipped.inc({ reason: 'coalesced' }, coalesced);
    const offered = await this.step(label, 'offering the changes to the item state', heartbeat, () =>
      offerChanges(state, this.queuedJobKeys, newest, { maxItems: config.workers.embedJobMaxItems, maxBytes: config.workers.embedJobMaxBytes }, { stage: 'ingest', mapping: config.events }),
    );
    const jobs = offered.jobs.map(({ jobId, changes }) => ({
      // Where the job's first change came from, for dashboards: `topic/partition@offset`.
      name: changes[0]?.source ?? (parts[0] as RoundPart).topic,
      data: { changes },
      opts: { ...this.options.jobOptions, jobId },
    }));
    const queuedChanges = jobs.reduce((sum, job) => sum + job.data.changes.length, 0);
    const inSink = offered.verdicts.filter((v) => v === 'in_sink').length;
    metrics.eventsSkipped.inc({ reason: 'older_or_queued' }, newest.length - queuedChanges - inSink - offered.dead.length);
    metrics.eventsSkipped.inc({ reason: 'not_newer_than_sink' }, inSink);
    metrics.eventsInvalid.inc({ reason: 'version_source' }, offered.dead.length);

    // Job ids are fixed before the first attempt: adding a chunk again after a lost reply adds nothing twice.
    for (let i = 0; i < jobs.length; i += ADD_BULK_JOBS) {
      await this.step(label, 'adding embed jobs', heartbeat, () => embedQueue.addBulk(jobs.slice(i, i + ADD_BULK_JOBS)));
      await heartbeat();
    }
    const dead = [...parts.flatMap((part) => part.dead), ...offered.dead];
    await this.step(label, 'storing dead letters', heartbeat, () => deadLetters.add(dead));
    if (dead.length > 0) logger.warn({ count: dead.length, first: dead[0]?.reason, partitions: label }, 'invalid events sent to the dead-letter store');
    metrics.jobsEnqueued.inc({ queue: 'embed' }, jobs.length);
    return { partitions: parts.length, jobs: jobs.length, changes: queuedChanges, dead: dead.length };
  }

  /**
   * Validates every message; keeps each item's newest change per version source (with its size
   * and table), the dead letters, and the truncates; counts the tombstones skipped.
   */
  private parseBatch(
    topic: string,
    partition: number,
    messages: KafkaMessage[],
    acceptedAt: number,
  ): { newest: Map<string, SizedChange>; dead: DeadLetter[]; tombstones: number; truncates: TableTruncate[] } {
    const { config, metrics } = this.options;
    const newest = new Map<string, SizedChange>();
    const dead: DeadLetter[] = [];
    const truncates: TableTruncate[] = [];
    let tombstones = 0;
    for (const message of messages) {
      const source = `${topic}/${partition}@${message.offset}`;
      let itemId: string | undefined;
      try {
        const read = readChangeMessage({ key: message.key, value: message.value, timestampMs: Number(message.timestamp) }, config.events);
        if (read.kind === 'tombstone') {
          tombstones++;
          continue;
        }
        if (read.kind === 'truncate') {
          truncates.push({ table: read.table, version: read.version, versionSource: read.versionSource, source });
          continue;
        }
        const { event, table } = read;
        itemId = event.itemId;
        const held = newest.get(coalescingKey(event));
        if (held === undefined || !isAfter(held.change, event)) {
          // Metadata nesting is bounded by the parser, so JSON.stringify in addBulk cannot fail on it.
          // Field by field: a spread costs ~10 µs per event on Node 20's V8.
          const change: QueuedChange = { itemId: event.itemId, op: event.op, version: event.version, versionSource: event.versionSource, updatedAt: event.updatedAt, text: event.text, metadata: event.metadata, source, acceptedAt };
          newest.set(coalescingKey(event), { change, table, bytes: message.value?.length ?? 0, original: () => ({ value: message.value ?? Buffer.alloc(0), key: message.key ?? null }) });
        }
      } catch (error) {
        // Whatever one event does to the parser (a RangeError from a template over deep nesting
        // included), it is judged alone: the rest of the batch goes on.
        const invalid = error instanceof InvalidEventError ? error : new InvalidEventError(`the event cannot be read: ${errorMessage(error)}`, 'value');
        metrics.eventsInvalid.inc({ reason: invalid.details?.field === undefined ? 'unknown' : String(invalid.details.field) });
        dead.push({ stage: 'ingest', code: invalid.code, reason: invalid.message, itemId: itemId ?? invalid.itemId, original: message.value ?? Buffer.alloc(0), key: message.key ?? null, source });
      }
    }
    return { newest, dead, tombstones, truncates };
  }

  /**
   * Queues the delete of every item the truncated table has had, at the truncate's version, page
   * by page below the high-water mark: the item state drops the deletes of items changed after
   * the truncate (a row inserted since has a higher version); an item deleted before gets its
   * delete again, which costs a sink delete and no embeddings. False when ingest is closing
   * meanwhile: the batch stays uncommitted, and is read again, truncate included.
   */
  private async queueTruncateDeletes(partition: string, truncate: TableTruncate, batch: { heartbeat: () => Promise<void>; isRunning: () => boolean }): Promise<boolean> {
    const { config, embedQueue, deadLetters, metrics, state, logger, truncates } = this.options;
    let cursor = '0';
    let queued = 0;
    do {
      if (!(await this.waitBelowHighWater(partition, batch.heartbeat, batch.isRunning))) return false;
      const page = await this.step(partition, `reading the items of truncated table ${truncate.table}`, batch.heartbeat, () => truncates.members(truncate.table, cursor, TRUNCATE_PAGE));
      cursor = page.cursor;
      const acceptedAt = Date.now();
      const deletes: SizedChange[] = page.ids.map((itemId) => ({
        change: { itemId, op: 'delete', version: truncate.version, versionSource: truncate.versionSource, updatedAt: undefined, text: undefined, metadata: {}, source: truncate.source, acceptedAt },
        bytes: 0,
      }));
      const offered = await this.step(partition, 'offering a truncate\'s deletes to the item state', batch.heartbeat, () =>
        offerChanges(state, this.queuedJobKeys, deletes, { maxItems: config.workers.embedJobMaxItems, maxBytes: config.workers.embedJobMaxBytes }, { stage: 'ingest', mapping: config.events }),
      );
      const jobs = offered.jobs.map(({ jobId, changes }) => ({ name: `truncate:${truncate.table}`, data: { changes }, opts: { ...this.options.jobOptions, jobId } }));
      for (let i = 0; i < jobs.length; i += ADD_BULK_JOBS) {
        await this.step(partition, 'adding a truncate\'s delete jobs', batch.heartbeat, () => embedQueue.addBulk(jobs.slice(i, i + ADD_BULK_JOBS)));
      }
      await this.step(partition, 'storing dead letters', batch.heartbeat, () => deadLetters.add(offered.dead));
      metrics.jobsEnqueued.inc({ queue: 'embed' }, jobs.length);
      queued += jobs.reduce((sum, job) => sum + job.data.changes.length, 0);
      await batch.heartbeat();
    } while (cursor !== '0');
    logger.info({ table: truncate.table, version: truncate.version, source: truncate.source, deletes: queued }, 'table truncated: its items\' deletes are queued');
    return true;
  }

  /**
   * Invariant 5: while the embed and write queues together hold more waiting jobs than the
   * high-water mark, hold the batch (and the partition). Jobs are bounded in items and bytes, so
   * this bounds what a backlog costs Redis; Kafka keeps the rest.
   */
  private async waitBelowHighWater(partition: string, heartbeat: () => Promise<void>, isRunning: () => boolean): Promise<boolean> {
    const { config, logger } = this.options;
    const highWater = config.redis.highWater;
    if (Date.now() - this.lastBacklog.at < HIGH_WATER_RECHECK_MS && this.lastBacklog.jobs < highWater / 2) return true;
    for (;;) {
      const backlog = await this.step(partition, 'counting the queued jobs', heartbeat, () => this.backlog());
      this.lastBacklog = { at: Date.now(), jobs: backlog };
      if (backlog < highWater) {
        if (this.paused) logger.info({ backlog }, 'queue backlog below the high-water mark; ingest resumes');
        this.paused = false;
        return true;
      }
      if (!this.paused) logger.warn({ backlog, highWater }, 'queue backlog above the high-water mark; ingest waits');
      this.paused = true;
      if (!isRunning() || this.state === 'STOPPING') return false;
      await heartbeat();
      await sleep(HIGH_WATER_POLL_MS);
    }
  }

  /**
   * Jobs waiting (or delayed for a retry) in both queues, without the prioritized ones: those are
   * backfills', which bound their own jobs in flight and run after every live job anyway; counting
   * them would let a few concurrent backfills stop live ingest.
   */
  private async backlog(): Promise<number> {
    const [embed, write] = await Promise.all([this.options.embedQueue.getJobCountByTypes('waiting', 'delayed'), this.options.writeQueue.getJobCountByTypes('waiting', 'delayed')]);
    return embed + write;
  }
}

/** What a batch brings to a round. */
interface RoundPart {
  partition: string;
  topic: string;
  /** Its newest change per item (and version source), truncate marks applied. */
  newest: Map<string, SizedChange>;
  /** Its events that could not be read. */
  dead: DeadLetter[];
  heartbeat: () => Promise<void>;
}

interface RoundResult {
  partitions: number;
  jobs: number;
  changes: number;
  dead: number;
}

/**
 * Each item's newest change over a round's batches (an item's events are keyed to one partition,
 * but a re-keyed topic or two topics can bring it twice), and how many older ones were dropped.
 */
function newestAcross(parts: RoundPart[]): { newest: SizedChange[]; coalesced: number } {
  if (parts.length === 1) return { newest: [...(parts[0] as RoundPart).newest.values()], coalesced: 0 };
  const newest = new Map<string, SizedChange>();
  let coalesced = 0;
  for (const part of parts) {
    for (const [key, sized] of part.newest) {
      const held = newest.get(key);
      if (held !== undefined) coalesced++;
      if (held === undefined || !isAfter(held.change, sized.change)) newest.set(key, sized);
    }
  }
  return { newest: [...newest.values()], coalesced };
}

/** The Kafka error in a chain that says the group moved on from this member, if any. */
function groupMovedOn(error: unknown): Error | undefined {
  for (let link = error; link instanceof Error; link = link.cause) {
    if (GROUP_MOVED_ON.has(String((link as { type?: unknown }).type))) return link;
  }
  return undefined;
}

/** kafkajs's own errors, by name: its error classes are not exports Node's ESM loader can see. */
function isKafkaJsError(error: unknown): boolean {
  return error instanceof Error && error.name.startsWith('KafkaJS');
}
