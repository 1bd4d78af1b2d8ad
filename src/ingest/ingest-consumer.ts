import { setTimeout as sleep } from 'node:timers/promises';
import type { Queue } from 'bullmq';
import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import type { Config } from '../config/config.js';
import { errorMessage, InvalidEventError } from '../core/errors.js';
import type { DeadLetter, DeadLetterStore } from '../deadletter/dead-letter-store.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { jobIdFor, PRIORITY, type defaultJobOptions, type EmbedJobData } from '../queue/jobs.js';
import type { ItemStateStore } from '../state/item-state.js';
import { parseChangeEvent, type ChangeEvent } from './change-event.js';

/**
 * INITIALIZED: constructed, not connected. RUNNING: consuming. STOPPING: close() called, the
 * current batch finishes and is committed. STOPPED: disconnected. FAILED: the consumer crashed.
 */
export type IngestState = 'INITIALIZED' | 'RUNNING' | 'STOPPING' | 'STOPPED' | 'FAILED';

export interface IngestOptions {
  kafka: Kafka;
  config: Config;
  embedQueue: Queue<EmbedJobData>;
  jobOptions: ReturnType<typeof defaultJobOptions>;
  state: ItemStateStore;
  deadLetters: DeadLetterStore;
  logger: Logger;
  metrics: Metrics;
}

const ADD_BULK_CHUNK = 500;
const HIGH_WATER_POLL_MS = 250;

/**
 * Reads change events from Kafka, validates them, and enqueues one embed job per item and batch:
 * several changes of one item in a batch coalesce into its newest, and a change older than one
 * already seen (another partition, a replay) is dropped. Offsets are committed only after Redis
 * accepted the jobs (and the dead letters): a crash before the commit redelivers the batch, and
 * deterministic job ids make the second enqueue a no-op.
 */
export class IngestConsumer {
  state: IngestState = 'INITIALIZED';
  private readonly consumer: Consumer;
  private closing: Promise<void> | undefined;
  private paused = false;

  constructor(private readonly options: IngestOptions) {
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
    const { config, embedQueue, deadLetters, metrics } = this.options;
    if (batch.messages.length === 0) return;
    if (!(await this.waitBelowHighWater(heartbeat, isRunning))) return;

    const newest = new Map<string, { event: ChangeEvent; source: EmbedJobData['source'] }>();
    const dead: DeadLetter[] = [];
    const { jobOptions } = this.options;
    const acceptedAt = Date.now();
    for (const message of batch.messages) {
      const source = { topic: batch.topic, partition: batch.partition, offset: message.offset };
      try {
        const event = parseChangeEvent({ key: message.key, value: message.value, timestampMs: Number(message.timestamp) }, config.events);
        const held = newest.get(event.itemId);
        if (held === undefined || held.event.version <= event.version) newest.set(event.itemId, { event, source });
      } catch (error) {
        if (!(error instanceof InvalidEventError)) throw error;
        metrics.eventsInvalid.inc({ reason: error.details?.field === undefined ? 'unknown' : String(error.details.field) });
        dead.push({
          stage: 'ingest',
          code: error.code,
          reason: error.message,
          itemId: undefined,
          original: message.value ?? Buffer.alloc(0),
          key: message.key ?? null,
          source: `${batch.topic}/${batch.partition}@${message.offset}`,
        });
      }
    }

    const candidates = [...newest.values()];
    const current = await this.options.state.observe(candidates.map((c) => c.event));
    const jobs = candidates
      .filter((_, i) => current[i])
      .map(({ event, source }) => ({
        name: event.op,
        data: { ...event, source, acceptedAt } as EmbedJobData,
        opts: { ...jobOptions, jobId: jobIdFor(event.itemId, event.version, event.op), priority: PRIORITY.live },
      }));
    const parsed = batch.messages.length - dead.length;
    metrics.eventsSkipped.inc({ reason: 'coalesced' }, parsed - candidates.length);
    metrics.eventsSkipped.inc({ reason: 'older_than_seen' }, candidates.length - jobs.length);

    for (let i = 0; i < jobs.length; i += ADD_BULK_CHUNK) {
      await embedQueue.addBulk(jobs.slice(i, i + ADD_BULK_CHUNK));
      await heartbeat();
    }
    await deadLetters.add(dead);
    if (dead.length > 0) this.options.logger.warn({ count: dead.length, first: dead[0]?.reason, topic: batch.topic, partition: batch.partition }, 'invalid events sent to the dead-letter store');
    metrics.eventsConsumed.inc(batch.messages.length);
    this.options.logger.debug({ topic: batch.topic, partition: batch.partition, first: batch.firstOffset(), last: batch.lastOffset(), jobs: jobs.length, dead: dead.length }, 'batch enqueued');
    metrics.jobsEnqueued.inc({ queue: 'embed' }, jobs.length);

    // A rebalance took the partition away meanwhile: its new owner re-reads from the last commit
    // and the deterministic job ids absorb the repeat.
    if (isStale()) return;
    // resolveOffset moves this consumer's fetch position; the commit makes it survive a restart.
    resolveOffset(batch.lastOffset());
    await this.consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(batch.lastOffset()) + 1n).toString() }]);
  }

  /** Invariant 5: while the embed queue is above the high-water mark, hold the batch (and the partition). */
  private async waitBelowHighWater(heartbeat: () => Promise<void>, isRunning: () => boolean): Promise<boolean> {
    const { embedQueue, config, logger } = this.options;
    for (;;) {
      const backlog = await embedQueue.count();
      if (backlog < config.redis.highWater) {
        if (this.paused) logger.info({ backlog }, 'embed backlog below the high-water mark; ingest resumes');
        this.paused = false;
        return true;
      }
      if (!this.paused) logger.warn({ backlog, highWater: config.redis.highWater }, 'embed backlog above the high-water mark; ingest waits');
      this.paused = true;
      if (!isRunning() || this.state === 'STOPPING') return false;
      await heartbeat();
      await sleep(HIGH_WATER_POLL_MS);
    }
  }
}
