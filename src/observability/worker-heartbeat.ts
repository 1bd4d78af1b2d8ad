import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { Counter } from 'prom-client';
import { PeriodicTask } from '../core/periodic.js';
import type { PipelineSnapshot } from '../pipeline/pipeline.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** How often a worker publishes its state; a worker silent for HEARTBEAT_TTL_SECONDS is gone. */
export const HEARTBEAT_MS = 5_000;
export const HEARTBEAT_TTL_SECONDS = 15;
/** The window of the published rates. */
const RATE_WINDOW_MS = 60_000;

/** One generation's pipeline in a worker, as published. */
export interface GenerationWorkerState extends PipelineSnapshot {
  generation: number;
  model: string;
}

export interface WorkerRates {
  eventsPerSecond: number;
  itemsWrittenPerSecond: number;
  /** The span the rates are measured over (up to 60 s; less just after a start). */
  windowSeconds: number;
}

/** What a worker process publishes every HEARTBEAT_MS (JSON), and what `indexer status` lists. */
export interface WorkerStatus {
  /** `<host>:<pid>` */
  id: string;
  host: string;
  pid: number;
  roles: string[];
  startedAt: string;
  publishedAt: string;
  servingGeneration: number;
  generations: GenerationWorkerState[];
  /** Since the process started: events read from Kafka, points written or deleted in the sink. */
  counters: { eventsConsumed: number; itemsWritten: number };
  rates: WorkerRates;
}

interface Sample {
  at: number;
  events: number;
  items: number;
}

/**
 * The process's own last-minute rates, from its counters sampled at each heartbeat: a ring of
 * samples spanning about a minute, so the rate costs nothing on the hot path.
 */
export class RateWindow {
  private readonly samples: Sample[] = [];

  constructor(private readonly windowMs = RATE_WINDOW_MS) {}

  add(sample: Sample): void {
    this.samples.push(sample);
    // Drop the oldest while the next one still spans the whole window.
    while (this.samples.length > 2 && sample.at - (this.samples[1] as Sample).at >= this.windowMs) this.samples.shift();
  }

  rates(): WorkerRates {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.at <= first.at) return { eventsPerSecond: 0, itemsWrittenPerSecond: 0, windowSeconds: 0 };
    const seconds = (last.at - first.at) / 1000;
    return { eventsPerSecond: (last.events - first.events) / seconds, itemsWrittenPerSecond: (last.items - first.items) / seconds, windowSeconds: seconds };
  }
}

export const workerKey = (prefix: string, id: string) => `${prefix}:status:worker:${id}`;
/** Live workers by last heartbeat (ms): what status reads instead of scanning the keyspace. */
export const workerIndexKey = (prefix: string) => `${prefix}:status:workers`;

export interface WorkerHeartbeatOptions {
  redis: Redis;
  /** The deployment's base QUEUE_PREFIX (generation 1's): one place for every generation's workers. */
  prefix: string;
  roles: readonly string[];
  metrics: Metrics;
  snapshot: () => { serving: number; generations: GenerationWorkerState[] };
  logger: Logger;
  intervalMs?: number;
}

/**
 * Publishes this process's state for `indexer status`: one round trip every HEARTBEAT_MS (a SET
 * with a TTL, so a killed worker disappears by itself, and its entry in the index of workers).
 */
export class WorkerHeartbeat {
  readonly id = `${hostname()}:${process.pid}`;
  private readonly startedAt = new Date();
  private readonly window = new RateWindow();
  private readonly periodic: PeriodicTask;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: WorkerHeartbeatOptions) {
    // Readiness reports Redis being away; one warning per outage is enough here.
    this.periodic = new PeriodicTask(() => this.publish(), options.intervalMs ?? HEARTBEAT_MS, options.logger, {
      failing: 'could not publish the status heartbeat (`indexer status` will not list this worker until Redis answers); retrying',
      recovered: 'status heartbeat published again',
    });
  }

  start(): void {
    this.window.add({ at: this.startedAt.getTime(), events: 0, items: 0 });
    this.periodic.start();
  }

  /** Stops publishing and removes this worker's entry (a drained worker is not shown for 15 s). Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.periodic.stop();
      const { redis, prefix } = this.options;
      await redis.multi().del(workerKey(prefix, this.id)).zrem(workerIndexKey(prefix), this.id).exec().catch(() => undefined);
    })();
    return this.closing;
  }

  /** The state published at the next beat. */
  async status(): Promise<WorkerStatus> {
    const { metrics, snapshot, roles } = this.options;
    const at = Date.now();
    const counters = { eventsConsumed: await total(metrics.eventsConsumed), itemsWritten: await total(metrics.sinkWrites) };
    this.window.add({ at, events: counters.eventsConsumed, items: counters.itemsWritten });
    const { serving, generations } = snapshot();
    return {
      id: this.id,
      host: hostname(),
      pid: process.pid,
      roles: [...roles],
      startedAt: this.startedAt.toISOString(),
      publishedAt: new Date(at).toISOString(),
      servingGeneration: serving,
      generations,
      counters,
      rates: this.window.rates(),
    };
  }

  private async publish(): Promise<void> {
    const { redis, prefix } = this.options;
    const status = await this.status();
    const now = Date.now();
    await redis
      .multi()
      .set(workerKey(prefix, this.id), JSON.stringify(status), 'EX', HEARTBEAT_TTL_SECONDS)
      .zadd(workerIndexKey(prefix), now, this.id)
      .zremrangebyscore(workerIndexKey(prefix), '-inf', now - HEARTBEAT_TTL_SECONDS * 1000)
      .exec();
  }

}

async function total(counter: Counter<string>): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** Every live worker's last heartbeat, by id. */
export async function readWorkers(redis: Redis, prefix: string): Promise<WorkerStatus[]> {
  const ids = await redis.zrange(workerIndexKey(prefix), '0', '-1');
  if (ids.length === 0) return [];
  const values = await redis.mget(...ids.map((id) => workerKey(prefix, id)));
  const workers: WorkerStatus[] = [];
  for (const raw of values) {
    if (raw === null) continue; // expired: a worker killed since its last beat
    try {
      workers.push(JSON.parse(raw) as WorkerStatus);
    } catch {
      // A heartbeat from an incompatible version: skip it rather than fail the whole status.
    }
  }
  return workers.sort((a, b) => a.id.localeCompare(b.id));
}
