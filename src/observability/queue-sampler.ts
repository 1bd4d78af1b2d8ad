import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import { PeriodicTask } from '../core/periodic.js';
import { EMBED_QUEUE, WRITE_QUEUE } from '../queue/jobs.js';
import { configFor, GenerationStore, servingGeneration } from '../reindex/generations.js';
import type { KafkaLagReader, PartitionLag } from './kafka-lag.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { clearStalePauseReason } from './pause-reason.js';

/** How often a worker process refreshes the queue and lag gauges. */
export const SAMPLE_MS = 15_000;

export const PIPELINE_QUEUES = [EMBED_QUEUE, WRITE_QUEUE] as const;
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed'] as const;

export interface QueueCounts {
  /** Jobs ready to run, prioritized (backfill) ones included. */
  waiting: number;
  active: number;
  /** Waiting for a retry or a deferral to run out. */
  delayed: number;
  failed: number;
  /** Of `waiting`: backfill jobs, which run after every live job. */
  prioritized: number;
  paused: boolean;
}

/** The queue's name in metrics and status: `embed` for generation 1, `embed@g2` for generation 2's own queues. */
export function queueLabel(queue: string, generation: number): string {
  return generation === 1 ? queue : `${queue}@g${generation}`;
}

/** A reason this old beside a running queue is not one being recorded just before its pause. */
const STALE_REASON_MS = 60_000;

export async function readQueueCounts(queue: Queue): Promise<QueueCounts> {
  const [counts, paused] = await Promise.all([queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'failed'), queue.isPaused()]);
  const n = (state: string) => counts[state] ?? 0;
  return { waiting: n('waiting') + n('prioritized'), active: n('active'), delayed: n('delayed'), failed: n('failed'), prioritized: n('prioritized'), paused };
}

export interface QueueSamplerOptions {
  config: Config;
  redis: Redis;
  metrics: Metrics;
  /** Given to ingest-role processes: they export the consumer lag too. */
  lag?: KafkaLagReader;
  logger: Logger;
  intervalMs?: number;
}

/**
 * Sets indexer_queue_jobs, indexer_queue_paused and (ingest) indexer_kafka_consumer_lag from a
 * timer, so that a scrape costs nothing and Prometheus sees the queues of every generation.
 */
export class QueueSampler {
  private readonly queues = new Map<string, Queue>();
  private readonly store: GenerationStore;
  private readonly periodic: PeriodicTask;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: QueueSamplerOptions) {
    this.store = new GenerationStore(options.redis, options.config);
    // The gauges keep their last values while a sample fails.
    this.periodic = new PeriodicTask(() => this.sample(), options.intervalMs ?? SAMPLE_MS, options.logger, {
      failing: 'could not sample the queue and lag gauges (Redis or Kafka unreachable?); retrying',
      recovered: 'queue and lag gauges sampled again',
    });
  }

  start(): void {
    this.periodic.start();
  }

  /** Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.periodic.stop();
      await Promise.all([...this.queues.values()].map((q) => q.close().catch(() => undefined)));
      await this.options.lag?.close();
    })();
    return this.closing;
  }

  /** One sample now (the timer calls it; tests too). */
  async sample(): Promise<void> {
    const { config, metrics, lag } = this.options;
    const registry = await this.store.read();
    const counts: { label: string; counts: QueueCounts }[] = [];
    const wanted = new Set<string>();
    for (const generation of registry.generations) {
      const prefix = configFor(config, generation).redis.prefix;
      for (const name of PIPELINE_QUEUES) {
        const label = queueLabel(name, generation.id);
        wanted.add(label);
        const sampled = await readQueueCounts(this.queue(label, name, prefix));
        // Resumed by other means than `indexer resume` (the dashboard, by hand): the reason is stale,
        // and a later pause must not be blamed on it.
        if (!sampled.paused) await clearStalePauseReason(this.options.redis, prefix, name, STALE_REASON_MS);
        counts.push({ label, counts: sampled });
      }
    }
    await this.forgetQueuesBut(wanted);
    let lags: PartitionLag[] | undefined;
    if (lag) {
      const serving = configFor(config, servingGeneration(registry)).kafka;
      lags = await lag.read(serving.groupId, serving.topics, serving.fromBeginning);
    }
    // Reset and set with no await between: a scrape never sees a dropped generation's queue, nor a half-set gauge.
    metrics.queueJobs.reset();
    metrics.queuePaused.reset();
    for (const { label, counts: c } of counts) {
      for (const state of QUEUE_STATES) metrics.queueJobs.set({ queue: label, state }, c[state]);
      metrics.queuePaused.set({ queue: label }, c.paused ? 1 : 0);
    }
    if (lags) {
      metrics.kafkaConsumerLag.reset();
      for (const l of lags) metrics.kafkaConsumerLag.set({ topic: l.topic, partition: String(l.partition) }, l.lag);
    }
  }

  private queue(label: string, name: string, prefix: string): Queue {
    let queue = this.queues.get(label);
    if (!queue) {
      queue = new Queue(name, { connection: this.options.redis, prefix });
      this.queues.set(label, queue);
    }
    return queue;
  }

  private async forgetQueuesBut(wanted: Set<string>): Promise<void> {
    for (const [label, queue] of this.queues) {
      if (wanted.has(label)) continue;
      this.queues.delete(label);
      await queue.close().catch(() => undefined);
    }
  }
}
