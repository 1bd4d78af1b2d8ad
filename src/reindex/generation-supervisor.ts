import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Config } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { startPipeline, type Pipeline, type PipelineSnapshot, type Readiness, type Role } from '../pipeline/pipeline.js';
import { createRedis } from '../queue/connection.js';
import { configFor, GenerationStore, type Generation } from './generations.js';

/** How often a worker looks for a generation added (a re-index) or dropped. */
const POLL_MS = 2_000;
/** A worker's acknowledgement of the registry it applied outlives a few polls, not the worker. */
const ACK_TTL_SECONDS = 10;

/**
 * Runs the roles of this process for every generation in the registry: one pipeline each, started
 * when a re-index adds a generation and closed when it is dropped. A deployment that never
 * re-indexed has one generation, its configured model, and runs exactly as before.
 */
export class GenerationSupervisor {
  private readonly pipelines = new Map<number, { generation: Generation; pipeline: Pipeline }>();
  private readonly redis;
  private readonly store: GenerationStore;
  private timer: NodeJS.Timeout | undefined;
  private reconciling: Promise<void> = Promise.resolve();
  private closed = false;
  private serving = 1;
  private readonly worker = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;

  constructor(
    private readonly config: Config,
    private readonly options: { roles: readonly Role[]; logger: Logger; metrics: Metrics; onFatal?: (error: Error) => void },
  ) {
    this.redis = createRedis(config.redis.url, 'indexer-generations');
    this.store = new GenerationStore(this.redis, config);
  }

  async start(): Promise<void> {
    await this.reconcile();
    this.timer = setInterval(() => {
      this.reconciling = this.reconciling.then(() => this.reconcile()).catch((error: unknown) => this.options.logger.error({ err: (error as Error).message }, 'could not apply the generation registry; retrying: if it repeats, check Redis at REDIS_URL, then `indexer reindex status`'));
    }, POLL_MS);
  }

  /**
   * Ready when the serving generation's pipeline can work; a generation being filled that cannot
   * (its model's endpoint down) is reported in the reasons but does not take the worker out.
   */
  readiness(): Readiness {
    const all = [...this.pipelines.values()].map(({ generation, pipeline }) => ({ generation, readiness: pipeline.readiness() }));
    const serving = all.find(({ generation }) => generation.id === this.serving);
    if (!serving) return { ready: false, reasons: ['the serving generation is not running yet'], embeddings: undefined };
    const reasons = all.flatMap(({ generation, readiness }) => readiness.reasons.map((r) => (all.length > 1 ? `generation ${generation.id}${generation.id === this.serving ? '' : ' (not serving)'}: ${r}` : r)));
    return { ready: serving.readiness.ready, reasons, embeddings: all.flatMap(({ readiness }) => readiness.embeddings ?? []) };
  }

  /** Each running generation's pipeline state, for the worker heartbeat (`indexer status`). */
  snapshot(): { serving: number; generations: (PipelineSnapshot & { generation: number; model: string })[] } {
    const generations = [...this.pipelines.values()].map(({ generation, pipeline }) => ({ generation: generation.id, model: generation.model, ...pipeline.snapshot() }));
    return { serving: this.serving, generations };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.reconciling.catch(() => undefined);
    await Promise.all([...this.pipelines.values()].map(({ pipeline }) => pipeline.close()));
    this.pipelines.clear();
    await this.store.forgetWorker(this.worker).catch(() => undefined);
    await this.redis.quit().catch(() => undefined);
  }

  private async reconcile(): Promise<void> {
    if (this.closed) return;
    const registry = await this.store.read();
    const wanted = new Map(registry.generations.map((g) => [g.id, g]));
    for (const [id, { pipeline }] of this.pipelines) {
      if (wanted.has(id)) continue;
      this.options.logger.info({ generation: id }, 'generation dropped: stopping its pipeline');
      this.pipelines.delete(id);
      await pipeline.close();
    }
    for (const generation of wanted.values()) {
      if (this.pipelines.has(generation.id) || this.closed) continue;
      const logger = this.options.logger.child({ generation: generation.id });
      const pipeline = await startPipeline(configFor(this.config, generation), { roles: this.options.roles, logger, metrics: this.options.metrics, onFatal: this.options.onFatal });
      this.pipelines.set(generation.id, { generation, pipeline });
      if (registry.generations.length > 1) logger.info({ model: generation.model, dimensions: generation.dimensions, collection: generation.collection, serving: generation.id === registry.serving }, 'generation running');
    }
    this.serving = registry.serving;
    // Only now does this worker run exactly the registry's generations: drop-old waits for this.
    if (!this.closed) await this.store.acknowledge(this.worker, registry.revision, ACK_TTL_SECONDS);
  }
}
