import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { BackfillControl, type BackfillStatus } from '../backfill/backfill-control.js';
import type { BackfillSourceSpec } from '../backfill/backfill-job.js';
import type { Config } from '../config/config.js';
import type { Kafka } from 'kafkajs';
import { createKafka, deleteConsumerGroup, withAdmin } from '../ingest/kafka.js';
import { silentLogger } from '../observability/logger.js';
import { EMBED_QUEUE, WRITE_QUEUE } from '../queue/jobs.js';
import { vectorsKeyPattern } from '../queue/write-jobs.js';
import { createSink } from '../sinks/create-sink.js';
import { collectionFor, configFor, generationPrefix, GenerationStore, servingGeneration, type Generation, type GenerationRegistry } from './generations.js';

/** How long drop-old waits for every worker to stop the dropped generations' pipelines. */
const WORKERS_STOP_MS = 60_000;

/** Where a generation stands: what `reindex status` shows, and what `switch` checks. */
export interface GenerationStatus {
  generation: Generation;
  serving: boolean;
  /** Points in its collection. */
  points: number;
  /** Events its consumer group has not committed yet, over every partition of every topic. */
  kafkaLag: number | undefined;
  /** Jobs not finished in its embed and write queues. */
  queued: number;
  backfill: BackfillStatus | undefined;
  /** It has read the topics to their end, written what it queued, and finished its backfill. */
  caughtUp: boolean;
}

/**
 * Re-indexing to a new model without downtime: a new generation (collection, queues, item state,
 * consumer group) is added to the registry; every worker starts a pipeline for it, which reads the
 * topics from the beginning (and runs the backfill given as its source) while live events keep
 * being written to both; `switch` makes it the serving one in one step (the registry, and the
 * Qdrant alias when one is configured); `dropOld` removes the others.
 */
export class Reindexer {
  private readonly store: GenerationStore;
  /** Every generation reads the same topics on the same brokers: one client serves them all. */
  private readonly kafka: Kafka;

  constructor(
    private readonly config: Config,
    private readonly redis: Redis,
  ) {
    this.store = new GenerationStore(redis, config);
    this.kafka = createKafka(config.kafka, silentLogger);
  }

  registry(): Promise<GenerationRegistry> {
    return this.store.read();
  }

  async start(options: { model: string; dimensions: number; source?: BackfillSourceSpec }): Promise<Generation> {
    if (!options.source) await this.requireWholeHistory();
    // The generation is reserved first, on the registry it is decided on: two reindex commands
    // racing cannot both add one, and an id is never handed out twice.
    const { result: generation } = await this.store.update((r) => {
      const pending = r.generations.find((g) => g.id !== r.serving);
      if (pending) throw new Error(`a re-index is in progress: generation ${pending.id} (${pending.model}, ${pending.dimensions} dimensions); run \`indexer reindex switch\` or \`indexer reindex drop-old\` first`);
      const added: Generation = { id: r.nextId, model: options.model, dimensions: options.dimensions, collection: collectionFor(this.config, r.nextId), createdAt: new Date().toISOString() };
      return { registry: { ...r, nextId: r.nextId + 1, generations: [...r.generations, added] }, result: added };
    });
    // Its collection now (a clash of sizes is refused here, not in a worker), then its backfill.
    const sink = createSink(configFor(this.config, generation).sink, generation.dimensions);
    await sink.open();
    await sink.close();
    if (options.source) {
      const control = this.backfills(generation);
      try {
        const backfillId = await control.start({ source: options.source });
        generation.backfillId = backfillId;
        await this.store.update((r) => ({ registry: { ...r, generations: r.generations.map((g) => (g.id === generation.id ? { ...g, backfillId } : g)) }, result: undefined }));
      } finally {
        await control.close();
      }
    }
    return generation;
  }

  async status(): Promise<GenerationStatus[]> {
    const registry = await this.store.read();
    return Promise.all(registry.generations.map((g) => this.statusOf(g, registry.serving)));
  }

  /**
   * Makes a generation (by default the newest) the serving one. Refused until it has caught up
   * and holds at least as many points as the serving one, unless forced: a search would otherwise
   * miss what it has not indexed yet.
   */
  async switchTo(options: { id?: number; force?: boolean } = {}): Promise<Generation> {
    const registry = await this.store.read();
    const target = registry.generations.find((g) => g.id === (options.id ?? Math.max(...registry.generations.map((x) => x.id))));
    if (!target) throw new Error(`no generation ${options.id}`);
    if (target.id === registry.serving) return target;
    const [status, serving] = await Promise.all([this.statusOf(target, registry.serving), this.statusOf(servingGeneration(registry), registry.serving)]);
    if (!options.force) {
      if (!status.caughtUp) {
        throw new Error(`generation ${target.id} has not caught up (Kafka lag ${status.kafkaLag ?? 'unknown'}, ${status.queued} jobs queued${status.backfill ? `, backfill ${status.backfill.state}` : ''}); wait, or use --force`);
      }
      if (status.points < serving.points) {
        throw new Error(`generation ${target.id} holds ${status.points} points, the serving generation ${serving.generation.id} holds ${serving.points}: its source does not have every item (give the re-index a --source), or use --force`);
      }
    }
    const alias = this.config.sink.kind === 'qdrant' ? this.config.sink.qdrant?.servingAlias : undefined;
    if (alias) {
      const sink = createSink(configFor(this.config, target).sink, target.dimensions);
      await sink.serveAs?.(alias);
    }
    await this.store.update((r) => {
      if (!r.generations.some((g) => g.id === target.id)) throw new Error(`generation ${target.id} was dropped meanwhile`);
      return { registry: { ...r, serving: target.id }, result: undefined };
    });
    return target;
  }

  /**
   * Removes every generation but the serving one from the registry, waits until every live
   * worker has stopped its pipelines for them, then deletes their collections, Redis keys and
   * consumer groups. Run again, it finishes a drop that was interrupted.
   */
  async dropOld(options: { waitMs?: number } = {}): Promise<Generation[]> {
    const { registry, result: dropped } = await this.store.update((r) => {
      const old = r.generations.filter((g) => g.id !== r.serving);
      return { registry: { ...r, generations: r.generations.filter((g) => g.id === r.serving), dropping: [...r.dropping, ...old] }, result: [...r.dropping, ...old] };
    });
    if (dropped.length === 0) return [];
    const deadline = Date.now() + (options.waitMs ?? WORKERS_STOP_MS);
    for (;;) {
      const behind = await this.store.lagging(registry.revision);
      if (behind.length === 0) break;
      if (Date.now() > deadline) throw new Error(`workers ${behind.join(', ')} have not stopped the dropped generations yet; run \`indexer reindex drop-old\` again to finish`);
      await sleep(250);
    }
    for (const generation of dropped) {
      const sink = createSink(configFor(this.config, generation).sink, generation.dimensions);
      await sink.drop();
      await sink.close();
      await this.deleteKeysOf(generation);
      if (generation.id !== 1) await deleteConsumerGroup(this.kafka, configFor(this.config, generation).kafka.groupId);
      await this.store.update((r) => ({ registry: { ...r, dropping: r.dropping.filter((g) => g.id !== generation.id) }, result: undefined }));
    }
    return dropped;
  }

  /**
   * Without a backfill source, the Kafka history is what fills a new generation: refused when
   * retention has already removed its beginning (the new generation would lack those items).
   */
  private async requireWholeHistory(): Promise<void> {
    await withAdmin(this.kafka, async (admin) => {
      for (const topic of this.config.kafka.topics) {
        const truncated = (await admin.fetchTopicOffsets(topic)).filter((p) => p.low !== '0');
        if (truncated.length > 0) {
          throw new Error(`topic ${topic} no longer holds its whole history (partition ${truncated[0]?.partition} starts at offset ${truncated[0]?.low}): the new generation cannot be filled from Kafka alone; give --source (the catalog as a file or a table)`);
        }
      }
    });
  }

  private async statusOf(generation: Generation, serving: number): Promise<GenerationStatus> {
    const config = configFor(this.config, generation);
    const sink = createSink(config.sink, generation.dimensions);
    let points = 0;
    try {
      await sink.open();
      points = await sink.count();
    } finally {
      await sink.close();
    }
    const queued = await this.queued(config);
    const kafkaLag = await this.kafkaLag(config);
    let backfill: BackfillStatus | undefined;
    if (generation.backfillId) {
      const control = this.backfills(generation);
      try {
        backfill = await control.status(generation.backfillId);
      } finally {
        await control.close();
      }
    }
    const caughtUp = kafkaLag === 0 && queued === 0 && (generation.backfillId === undefined || backfill?.state === 'completed');
    return { generation, serving: generation.id === serving, points, kafkaLag, queued, backfill, caughtUp };
  }

  private async queued(config: Config): Promise<number> {
    let total = 0;
    for (const name of [EMBED_QUEUE, WRITE_QUEUE]) {
      const queue = new Queue(name, { connection: this.redis, prefix: config.redis.prefix });
      try {
        const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        total += Object.values(counts).reduce((sum, n) => sum + n, 0);
      } finally {
        await queue.close();
      }
    }
    return total;
  }

  /** Uncommitted events of the generation's consumer group; undefined until it committed anything. */
  private kafkaLag(config: Config): Promise<number | undefined> {
    return withAdmin(this.kafka, async (admin) => {
      let lag = 0;
      const committed = await admin.fetchOffsets({ groupId: config.kafka.groupId, topics: config.kafka.topics });
      for (const topic of config.kafka.topics) {
        const ends = await admin.fetchTopicOffsets(topic);
        const done = committed.find((c) => c.topic === topic)?.partitions ?? [];
        for (const end of ends) {
          const offset = done.find((p) => p.partition === end.partition)?.offset ?? '-1';
          if (offset === '-1') {
            if (end.high !== end.low) return undefined;
            continue;
          }
          lag += Number(BigInt(end.high) - BigInt(offset));
        }
      }
      return lag;
    });
  }

  private backfills(generation: Generation): BackfillControl {
    return new BackfillControl(this.redis, generationPrefix(this.config, generation.id), { attempts: this.config.redis.jobAttempts, backoffMs: this.config.redis.jobBackoffMs });
  }

  /**
   * A dropped generation's queues, item state, vectors in flight, backfills and Debezium table
   * members. Its dead letters (with their counts) and usage totals are kept (the history of what it cost and what failed); generation 1 shares
   * the prefix with the registry.
   */
  private async deleteKeysOf(generation: Generation): Promise<void> {
    const prefix = generationPrefix(this.config, generation.id);
    const kept = new Set([`${prefix}:dlq`, `${prefix}:dlq:counts`, `${prefix}:usage`]);
    const patterns =
      generation.id === 1
        ? [`${prefix}:item:*`, `${prefix}:write-leases`, `${prefix}:embed:*`, `${prefix}:write:*`, vectorsKeyPattern(prefix), `${prefix}:backfill:*`, `${prefix}:inflight`, `${prefix}:cdc:*`, `${prefix}:status:paused:*`]
        : [`${prefix}:*`];
    for (const pattern of patterns) {
      let cursor = '0';
      do {
        const [next, keys] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        const doomed = keys.filter((k) => !kept.has(k));
        if (doomed.length > 0) await this.redis.del(...doomed);
      } while (cursor !== '0');
    }
  }
}

/** The serving generation and the config to read it with (what search, export and verify use). */
export async function servingConfig(config: Config, redis: Redis): Promise<{ generation: Generation; config: Config }> {
  const generation = servingGeneration(await new GenerationStore(redis, config).read());
  return { generation, config: configFor(config, generation) };
}
