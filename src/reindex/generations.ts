import type { Redis } from 'ioredis';
import type { Config } from '../config/config.js';

/**
 * A generation is one embedding model's index: a collection (or LanceDB table) of its own, with its
 * own queues, item state and consumer group, so that two models are indexed side by side during a
 * re-index and never share a vector, a content-hash skip or a job. Generation 1 is the deployment
 * as configured; a re-index adds the next one, fills it, makes it the serving one, and the old
 * one is dropped when the operator says so.
 */
export interface Generation {
  id: number;
  model: string;
  dimensions: number;
  /** The physical collection or table. */
  collection: string;
  createdAt: string;
  /** The backfill filling it (on its own queues), when the re-index was given a source. */
  backfillId?: string;
}

export interface GenerationRegistry {
  /** The generation searches read. */
  serving: number;
  generations: Generation[];
  /** Bumped by every change: writers compare and set. */
  revision: number;
  /** The next generation's id: never reused, so a new generation never inherits a dropped one's consumer group. */
  nextId: number;
  /** Dropped generations whose collection, keys and consumer group are still to be deleted. */
  dropping: Generation[];
}

/** The implicit registry of a deployment that never re-indexed: its configured model and collection. */
export function initialRegistry(config: Config): GenerationRegistry {
  return {
    serving: 1,
    revision: 0,
    nextId: 2,
    dropping: [],
    generations: [{ id: 1, model: config.embeddings.model, dimensions: config.embeddings.dimensions, collection: config.sink.collection, createdAt: new Date(0).toISOString() }],
  };
}

/** Generation n's physical collection: the configured name, suffixed from the second on. */
export function collectionFor(config: Config, id: number): string {
  return id === 1 ? config.sink.collection : `${config.sink.collection}__g${id}`;
}

/**
 * The config one generation's pipeline runs with: its model and size, its collection, and (from
 * the second on) its own Redis key prefix and consumer group, which reads the topics from the
 * beginning: the Kafka history is what fills a new generation, live events then keep it current.
 */
export function configFor(config: Config, generation: Generation): Config {
  if (generation.id === 1 && generation.model === config.embeddings.model && generation.dimensions === config.embeddings.dimensions) {
    return { ...config, sink: { ...config.sink, collection: generation.collection } };
  }
  const own = generation.id !== 1;
  return {
    ...config,
    redis: own ? { ...config.redis, prefix: generationPrefix(config, generation.id) } : config.redis,
    kafka: own ? { ...config.kafka, groupId: `${config.kafka.groupId}.g${generation.id}`, fromBeginning: true } : config.kafka,
    embeddings: { ...config.embeddings, model: generation.model, dimensions: generation.dimensions, sendDimensions: generation.id === 1 ? config.embeddings.sendDimensions : true },
    sink: { ...config.sink, collection: generation.collection },
  };
}

export function generationPrefix(config: Config, id: number): string {
  return id === 1 ? config.redis.prefix : `${config.redis.prefix}:g${id}`;
}

// KEYS[1]: the registry. ARGV[1]: the revision the writer read, ARGV[2]: the new registry (JSON).
const COMPARE_AND_SET = `
local current = redis.call('GET', KEYS[1])
local revision = 0
if current then revision = cjson.decode(current).revision end
if tostring(revision) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1`;

/** Compare-and-set attempts before a change gives up (another writer kept changing the registry). */
const UPDATE_ATTEMPTS = 5;

/** The registry in Redis (`<prefix>:generations`), changed only by compare-and-set. */
export class GenerationStore {
  private readonly key: string;

  constructor(
    private readonly redis: Redis,
    private readonly config: Config,
  ) {
    this.key = `${config.redis.prefix}:generations`;
  }

  async read(): Promise<GenerationRegistry> {
    const raw = await this.redis.get(this.key);
    if (raw === null) return initialRegistry(this.config);
    const registry = JSON.parse(raw) as Partial<GenerationRegistry> & Pick<GenerationRegistry, 'serving' | 'generations' | 'revision'>;
    const highest = Math.max(0, ...registry.generations.map((g) => g.id), ...(registry.dropping ?? []).map((g) => g.id));
    return { ...registry, nextId: Math.max(registry.nextId ?? 0, highest + 1), dropping: registry.dropping ?? [] };
  }

  /**
   * Applies `change` to the registry and writes it if nobody changed it since it was read; on a
   * conflict, reads it again and re-applies `change`, so every decision `change` makes (and every
   * refusal it throws) is taken on the registry it writes over.
   */
  async update<T>(change: (registry: GenerationRegistry) => { registry: GenerationRegistry; result: T }): Promise<{ registry: GenerationRegistry; result: T }> {
    for (let attempt = 1; attempt <= UPDATE_ATTEMPTS; attempt++) {
      const current = await this.read();
      const changed = change(structuredClone(current));
      const next = { ...changed.registry, revision: current.revision + 1 };
      const done = await this.redis.eval(COMPARE_AND_SET, 1, this.key, String(current.revision), JSON.stringify(next));
      if (done === 1) return { registry: next, result: changed.result };
    }
    throw new Error('the generation registry kept changing under this command (another reindex running?); try again');
  }

  /** A worker reports the registry revision it has applied (its pipelines match it); expires if the worker goes. */
  async acknowledge(worker: string, revision: number, ttlSeconds: number): Promise<void> {
    await this.redis.set(`${this.key}:applied:${worker}`, String(revision), 'EX', ttlSeconds);
  }

  async forgetWorker(worker: string): Promise<void> {
    await this.redis.del(`${this.key}:applied:${worker}`);
  }

  /** Workers alive that have not yet applied `revision`. */
  async lagging(revision: number): Promise<string[]> {
    const behind: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.key}:applied:*`, 'COUNT', 1000);
      cursor = next;
      const values = keys.length > 0 ? await this.redis.mget(...keys) : [];
      keys.forEach((key, i) => {
        if (Number(values[i] ?? -1) < revision) behind.push(key.slice(`${this.key}:applied:`.length));
      });
    } while (cursor !== '0');
    return behind;
  }
}

export function servingGeneration(registry: GenerationRegistry): Generation {
  const serving = registry.generations.find((g) => g.id === registry.serving);
  if (!serving) throw new Error(`the generation registry names ${registry.serving} as serving but holds no such generation`);
  return serving;
}
