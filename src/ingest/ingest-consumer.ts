import { setTimeout as sleep } from 'node:timers/promises';
import type { Queue } from 'bullmq';
import type { Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import type { Config } from '../config/config.js';
import { isAfter } from '../core/change-order.js';
import { errorMessage, InvalidEventError } from '../core/errors.js';
import type { DeadLetter, DeadLetterStore } from '../deadletter/dead-letter-store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { EMBED_QUEUE, newJobId, type defaultJobOptions, type EmbedJobData, type QueuedChange, type WriteJobData } from '../queue/jobs.js';
import type { ItemStateStore, QueuedJobKeys, Verdict } from '../state/item-state.js';
import { parseChangeEvent } from './change-event.js';

/**
 * INITIALIZED: constructed, not connected. RUNNING: consuming. STOPPING: close() called, the
 * current batch finishes and is committed. STOPPED: disconnected. FAILED: the consumer crashed.
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
  logger: Logger;
  metrics: Metrics;
}

/** Embed jobs per addBulk call (one Redis round trip each). */
const ADD_BULK_JOBS = 50;
const HIGH_WATER_POLL_MS = 250;
/** A backlog well below the high-water mark is not counted again for this long. */
const HIGH_WATER_RECHECK_MS = 200;

export interface SizedChange {
  change: QueuedChange;
  /** The event's size as it arrived: what the change weighs in its job. */
  bytes: number;
}

/**
 * JSON.parse accepts nesting that JSON.stringify (in BullMQ's addBulk) cannot write back: a
 * RangeError there would fail the whole Kafka batch, again at every redelivery. Refused here, the
 * event is dead-lettered alone. Only metadata can nest; it is checked without serializing the rest.
 */
function assertSerializable(change: QueuedChange): void {
  try {
    JSON.stringify(change.metadata);
  } catch (error) {
    throw new InvalidEventError(`the event cannot be queued: its metadata cannot be serialized (${(error as Error).message}); flatten it`, 'metadata');
  }
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
 * left empty are dropped. What ingest does with a Kafka batch and a backfill with a page.
 */
export async function offerChanges(
  state: ItemStateStore,
  queued: QueuedJobKeys,
  changes: SizedChange[],
  limits: { maxItems: number; maxBytes: number },
): Promise<{ jobs: { jobId: string; changes: QueuedChange[] }[]; verdicts: Verdict[] }> {
  const chunks = chunkChanges(changes, limits.maxItems, limits.maxBytes);
  const verdicts = await state.observe(
    chunks.flatMap((chunk) => chunk.changes.map(({ change }) => ({ itemId: change.itemId, version: change.version, op: change.op, jobId: chunk.jobId }))),
    queued,
  );
  let k = 0;
  const jobs = chunks
    .map((chunk) => ({ jobId: chunk.jobId, changes: chunk.changes.filter(() => verdicts[k++] === 'queue').map(({ change }) => change) }))
    .filter((chunk) => chunk.changes.length > 0);
  return { jobs, verdicts };
}

/**
 * Reads change events from Kafka, validates them, and enqueues each Kafka batch as a few embed
 * jobs of many changes (bounded by EMBED_JOB_MAX_ITEMS and EMBED_JOB_MAX_BYTES): a BullMQ job costs
 * tens of Redis commands however small it is, so it is paid once per chunk, not once per change.
 * Several changes of one item in a batch coalesce into its newest; a change older than one already
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

  constructor(private readonly options: IngestOptions) {
    const prefix = options.config.redis.prefix;
    this.queuedJobKeys = { jobPrefix: `${prefix}:${EMBED_QUEUE}:`, failedKey: `${prefix}:${EMBED_QUEUE}:failed` };
    this.consumer = options.kafka.consumer({
      groupId: options.config.kafka.groupId,
      // Rebalances must not wait for a batch that is waiting below the high-water mark.
      sessionTimeout: 30_000,
      heartbeatInterval: 3_000,
      maxBytesPerPartition: 1_048_576,
    });
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      if (!payload.restart) this.state = 'FAILED';
      options.logger.error({ err: errorMessage(payload.error), restart: payload.restart }, 'kafka consumer crashed');
    });
  }

  async start(): Promise<void> {
    const { config, logger } = this.options;
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: config.kafka.topics, fromBeginning: config.kafka.fromBeginning });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 2,
      eachBatch: (payload) => this.handleBatch(payload),
    });
    this.state = 'RUNNING';
    logger.info({ topics: config.kafka.topics, groupId: config.kafka.groupId }, 'ingest consuming');
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.state = 'STOPPING';
      await this.consumer.disconnect();
      this.state = 'STOPPED';
    })();
    return this.closing;
  }

  private async handleBatch({ batch, heartbeat, isRunning, isStale, resolveOffset }: EachBatchPayload): Promise<void> {
    const { config, embedQueue, deadLetters, metrics, state, logger } = this.options;
    if (batch.messages.length === 0) return;
    if (!(await this.waitBelowHighWater(heartbeat, isRunning))) return;

    const acceptedAt = Date.now();
    const { newest, dead } = this.parseBatch(batch.topic, batch.partition, batch.messages, acceptedAt);
    const offered = await offerChanges(state, this.queuedJobKeys, [...newest.values()], { maxItems: config.workers.embedJobMaxItems, maxBytes: config.workers.embedJobMaxBytes });
    const verdicts = offered.verdicts;
    const jobs = offered.jobs.map(({ jobId, changes }) => ({
        // Where the job's first change came from, for dashboards: `topic/partition@offset`.
        name: changes[0]?.source ?? batch.topic,
        data: { changes },
        opts: { ...this.options.jobOptions, jobId },
      }));
    const queuedChanges = jobs.reduce((sum, job) => sum + job.data.changes.length, 0);
    const parsed = batch.messages.length - dead.length;
    metrics.eventsSkipped.inc({ reason: 'coalesced' }, parsed - newest.size);
    const inSink = verdicts.filter((v) => v === 'in_sink').length;
    metrics.eventsSkipped.inc({ reason: 'older_or_queued' }, newest.size - queuedChanges - inSink);
    metrics.eventsSkipped.inc({ reason: 'not_newer_than_sink' }, inSink);

    for (let i = 0; i < jobs.length; i += ADD_BULK_JOBS) {
      await embedQueue.addBulk(jobs.slice(i, i + ADD_BULK_JOBS));
      await heartbeat();
    }
    await deadLetters.add(dead);
    if (dead.length > 0) logger.warn({ count: dead.length, first: dead[0]?.reason, topic: batch.topic, partition: batch.partition }, 'invalid events sent to the dead-letter store');
    metrics.eventsConsumed.inc(batch.messages.length);
    logger.debug({ topic: batch.topic, partition: batch.partition, first: batch.firstOffset(), last: batch.lastOffset(), jobs: jobs.length, changes: queuedChanges, dead: dead.length }, 'batch enqueued');
    metrics.jobsEnqueued.inc({ queue: 'embed' }, jobs.length);

    // A rebalance took the partition away meanwhile: its new owner re-reads from the last commit,
    // and the item state keeps a change still queued from being queued twice.
    if (isStale()) return;
    // resolveOffset moves this consumer's fetch position; the commit makes it survive a restart.
    resolveOffset(batch.lastOffset());
    await this.consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(batch.lastOffset()) + 1n).toString() }]);
  }

  /** Validates every message; keeps each item's newest change (with its size) and the dead letters. */
  private parseBatch(topic: string, partition: number, messages: KafkaMessage[], acceptedAt: number): { newest: Map<string, SizedChange>; dead: DeadLetter[] } {
    const { config, metrics } = this.options;
    const newest = new Map<string, SizedChange>();
    const dead: DeadLetter[] = [];
    for (const message of messages) {
      const source = `${topic}/${partition}@${message.offset}`;
      let itemId: string | undefined;
      try {
        const event = parseChangeEvent({ key: message.key, value: message.value, timestampMs: Number(message.timestamp) }, config.events);
        itemId = event.itemId;
        const held = newest.get(event.itemId);
        if (held === undefined || !isAfter(held.change, event)) {
          const change: QueuedChange = { ...event, source, acceptedAt };
          assertSerializable(change);
          newest.set(event.itemId, { change, bytes: message.value?.length ?? 0 });
        }
      } catch (error) {
        // Whatever one event does to the parser (a RangeError from a template over deep nesting
        // included), it is judged alone: the rest of the batch goes on.
        const invalid = error instanceof InvalidEventError ? error : new InvalidEventError(`the event cannot be read: ${errorMessage(error)}`, 'value');
        metrics.eventsInvalid.inc({ reason: invalid.details?.field === undefined ? 'unknown' : String(invalid.details.field) });
        dead.push({ stage: 'ingest', code: invalid.code, reason: invalid.message, itemId, original: message.value ?? Buffer.alloc(0), key: message.key ?? null, source });
      }
    }
    return { newest, dead };
  }

  /**
   * Invariant 5: while the embed and write queues together hold more waiting jobs than the
   * high-water mark, hold the batch (and the partition). Jobs are bounded in items and bytes, so
   * this bounds what a backlog costs Redis; Kafka keeps the rest.
   */
  private async waitBelowHighWater(heartbeat: () => Promise<void>, isRunning: () => boolean): Promise<boolean> {
    const { config, logger } = this.options;
    const highWater = config.redis.highWater;
    if (Date.now() - this.lastBacklog.at < HIGH_WATER_RECHECK_MS && this.lastBacklog.jobs < highWater / 2) return true;
    for (;;) {
      const backlog = await this.backlog();
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
