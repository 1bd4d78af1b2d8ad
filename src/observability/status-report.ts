import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { BackfillControl, describeSource } from '../backfill/backfill-control.js';
import type { BackfillProgress } from '../backfill/backfill-job.js';
import type { Config } from '../config/config.js';
import { errorMessage } from '../core/errors.js';
import { DeadLetterStore, type DeadLetterCount } from '../deadletter/dead-letter-store.js';
import { UsageStore, type ModelUsage } from '../embed/usage.js';
import { configFor, GenerationStore, type Generation } from '../reindex/generations.js';
import type { KafkaLagReader, PartitionLag } from './kafka-lag.js';
import { readPauseReason, type PauseReason } from './pause-reason.js';
import { PIPELINE_QUEUES, queueLabel, readQueueCounts, type QueueCounts } from './queue-sampler.js';
import { readWorkers, type WorkerRates, type WorkerStatus } from './worker-heartbeat.js';

/** The shape of `indexer status --json` (version 1): documented in the README; add fields, never change them. */
export interface StatusReport {
  version: 1;
  at: string;
  prefix: string;
  servingGeneration: number;
  generations: GenerationReport[];
  /** Summed over live workers (each measures its own last minute). */
  rates: WorkerRates & { workers: number };
  workers: WorkerStatus[];
  /** Every embeddings endpoint any live worker calls, per generation. */
  embeddings: EndpointReport[];
  usage: { totalCostUsd: number; modelsWithoutPrice: string[] };
  /** Parts that could not be gathered (Kafka unreachable, ...): the rest of the report stands. */
  errors: string[];
}

export interface GenerationReport {
  id: number;
  model: string;
  serving: boolean;
  prefix: string;
  queues: QueueReport[];
  kafka: KafkaReport;
  deadLetters: DeadLetterReport;
  backfills: BackfillReport[];
  usage: UsageReport[];
}

export interface UsageReport extends Omit<ModelUsage, 'estimatedCostUsd'> {
  /** null when no price is known for the model (EMBEDDINGS_PRICES). */
  estimatedCostUsd: number | null;
}

export interface QueueReport extends QueueCounts {
  /** `embed`, `write`; `embed@g2` for a re-index generation's own queues (the metrics' label). */
  queue: string;
  /** Why it is paused, when a worker recorded it (an exhausted quota, a refused key). */
  pauseReason: PauseReason | null;
  /** Not paused, but its jobs wait: an open embeddings circuit, the sink unreachable, ingest above the high-water mark. */
  held: string[];
}

export interface KafkaReport {
  group: string;
  topics: string[];
  partitions: PartitionLag[];
  /** null when Kafka could not be asked (see `error`). */
  totalLag: number | null;
  error: string | null;
  /** Workers whose ingest waits for the queues to drain below QUEUE_HIGH_WATER. */
  pausedByHighWater: string[];
}

export interface DeadLetterReport {
  total: number;
  byStageAndCode: DeadLetterCount[];
  /** Letters the per-stage counts miss (older than them, or trimmed at the cap): total minus their sum. */
  uncounted: number;
}

export interface BackfillReport {
  id: string;
  state: string;
  source: string;
  progress: BackfillProgress | null;
  rowsPerSecond: number | null;
  etaSeconds: number | null;
  attempts: number;
  createdAt: string;
}

export interface EndpointReport {
  generation: number;
  model: string;
  name: string;
  url: string;
  /** The worst state any worker sees: open, then half_open, then closed. */
  circuit: 'closed' | 'half_open' | 'open';
  /** Workers seeing each state. */
  workers: { closed: number; half_open: number; open: number };
  /** The limits in force (the lowest any worker learned; 0: none). */
  rpm: number;
  tpm: number;
}

const UNFINISHED_BACKFILL = new Set(['active', 'waiting', 'prioritized', 'delayed', 'waiting-children']);

/** Everything `indexer status` shows, read from Redis (and Kafka, for the lag). */
export async function gatherStatus(base: Config, redis: Redis, lag: KafkaLagReader): Promise<StatusReport> {
  const registry = await new GenerationStore(redis, base).read();
  const workers = await readWorkers(redis, base.redis.prefix);
  const errors: string[] = [];
  const generations: GenerationReport[] = [];
  for (const generation of registry.generations) {
    generations.push(await generationReport(base, redis, lag, generation, registry.serving, workers, errors));
  }
  const usage = generations.flatMap((g) => g.usage);
  return {
    version: 1,
    at: new Date().toISOString(),
    prefix: base.redis.prefix,
    servingGeneration: registry.serving,
    generations,
    rates: sumRates(workers),
    workers,
    embeddings: endpointsOf(workers),
    usage: {
      totalCostUsd: usage.reduce((sum, u) => sum + (u.estimatedCostUsd ?? 0), 0),
      modelsWithoutPrice: usage.filter((u) => u.estimatedCostUsd === null).map((u) => u.model),
    },
    errors,
  };
}

async function generationReport(base: Config, redis: Redis, lag: KafkaLagReader, generation: Generation, serving: number, workers: WorkerStatus[], errors: string[]): Promise<GenerationReport> {
  const config = configFor(base, generation);
  const prefix = config.redis.prefix;
  const states = workers.flatMap((w) => w.generations.filter((g) => g.generation === generation.id).map((g) => ({ worker: w.id, ...g })));
  const queues: QueueReport[] = [];
  for (const name of PIPELINE_QUEUES) {
    // skipMetasUpdate: a status is a read; a plain Queue writes its meta key, leaving keys behind
    // under a mistyped QUEUE_PREFIX.
    const queue = new Queue(name, { connection: redis, prefix, skipMetasUpdate: true });
    try {
      const counts = await readQueueCounts(queue);
      // A reason outlives its pause when the queue was resumed another way (the dashboard): shown
      // only while paused, and the workers' sampler deletes it once it sees the queue running.
      const pauseReason = counts.paused ? ((await readPauseReason(redis, prefix, name)) ?? null) : null;
      queues.push({ queue: queueLabel(name, generation.id), ...counts, pauseReason, held: heldReasons(name, states) });
    } finally {
      await queue.close();
    }
  }
  const kafka = await kafkaReport(config, lag, states.filter((s) => s.ingest?.pausedByHighWater).map((s) => s.worker));
  if (kafka.error) errors.push(`kafka lag of group ${kafka.group}: ${kafka.error}`);
  const deadLetters = new DeadLetterStore(redis, prefix);
  const [total, byStageAndCode] = await Promise.all([deadLetters.count(), deadLetters.countsByStageAndCode()]);
  return {
    id: generation.id,
    model: generation.model,
    serving: generation.id === serving,
    prefix,
    queues,
    kafka,
    deadLetters: { total, byStageAndCode, uncounted: total - byStageAndCode.reduce((sum, c) => sum + c.count, 0) },
    backfills: await runningBackfills(redis, config),
    usage: (await new UsageStore(redis, prefix, config.embeddings.prices).totals()).map((u) => ({ ...u, estimatedCostUsd: u.estimatedCostUsd ?? null })),
  };
}

/** Why a queue's jobs wait though it is not paused, from the workers' own view. */
function heldReasons(queue: string, states: (WorkerStatus['generations'][number] & { worker: string })[]): string[] {
  const held = new Set<string>();
  for (const s of states) {
    if (queue === 'embed' && s.embeddings && s.embeddings.length > 0 && s.embeddings.every((e) => e.circuit === 'open')) {
      held.add(`embeddings circuit open on ${s.embeddings.map((e) => e.name).join(', ')}`);
    }
    if (queue === 'write' && s.sink && !s.sink.available) held.add(`sink unreachable${s.sink.reason ? `: ${s.sink.reason}` : ''}`);
  }
  return [...held];
}

async function kafkaReport(config: Config, lag: KafkaLagReader, pausedByHighWater: string[]): Promise<KafkaReport> {
  const { groupId, topics, fromBeginning } = config.kafka;
  try {
    const partitions = await lag.read(groupId, topics, fromBeginning);
    return { group: groupId, topics, partitions, totalLag: partitions.reduce((sum, p) => sum + p.lag, 0), error: null, pausedByHighWater };
  } catch (error) {
    return { group: groupId, topics, partitions: [], totalLag: null, error: errorMessage(error), pausedByHighWater };
  }
}

async function runningBackfills(redis: Redis, config: Config): Promise<BackfillReport[]> {
  const control = new BackfillControl(redis, config.redis.prefix, { attempts: config.redis.jobAttempts, backoffMs: config.redis.jobBackoffMs }, true);
  try {
    return (await control.list())
      .filter((b) => UNFINISHED_BACKFILL.has(b.state))
      .map((b) => ({ id: b.id, state: b.state, source: describeSource(b.source), progress: b.progress ?? null, rowsPerSecond: b.rowsPerSecond ?? null, etaSeconds: b.etaSeconds ?? null, attempts: b.attempts, createdAt: b.createdAt }));
  } finally {
    await control.close();
  }
}

function sumRates(workers: WorkerStatus[]): StatusReport['rates'] {
  return {
    eventsPerSecond: workers.reduce((sum, w) => sum + w.rates.eventsPerSecond, 0),
    itemsWrittenPerSecond: workers.reduce((sum, w) => sum + w.rates.itemsWrittenPerSecond, 0),
    windowSeconds: Math.max(0, ...workers.map((w) => w.rates.windowSeconds)),
    workers: workers.length,
  };
}

const SEVERITY = { closed: 0, half_open: 1, open: 2 } as const;

function endpointsOf(workers: WorkerStatus[]): EndpointReport[] {
  const byKey = new Map<string, EndpointReport>();
  for (const worker of workers) {
    for (const g of worker.generations) {
      for (const e of g.embeddings ?? []) {
        const key = `${g.generation}\u0000${e.name}`;
        const report = byKey.get(key) ?? { generation: g.generation, model: g.model, name: e.name, url: e.url, circuit: 'closed', workers: { closed: 0, half_open: 0, open: 0 }, rpm: 0, tpm: 0 };
        report.workers[e.circuit]++;
        if (SEVERITY[e.circuit] > SEVERITY[report.circuit]) report.circuit = e.circuit;
        report.rpm = lowestLimit(report.rpm, e.rpm);
        report.tpm = lowestLimit(report.tpm, e.tpm);
        byKey.set(key, report);
      }
    }
  }
  return [...byKey.values()].sort((a, b) => a.generation - b.generation || a.name.localeCompare(b.name));
}

/** 0 means no limit known: any known limit is lower. */
function lowestLimit(a: number, b: number): number {
  if (a === 0) return b;
  if (b === 0) return a;
  return Math.min(a, b);
}
