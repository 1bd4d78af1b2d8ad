import type { IncomingMessage, ServerResponse } from 'node:http';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { getRequestListener } from '@hono/node-server';
import { serveStatic } from '@hono/node-server/serve-static';
import { Queue } from 'bullmq';
import { Hono } from 'hono';
import { Redis } from 'ioredis';
import { BACKFILL_QUEUE } from '../backfill/backfill-job.js';
import type { Config } from '../config/config.js';
import { EMBED_QUEUE, WRITE_QUEUE } from '../queue/jobs.js';
import { generationPrefix, GenerationStore, type GenerationRegistry } from '../reindex/generations.js';
import type { Logger } from './logger.js';
import { clearPauseReason } from './pause-reason.js';

/** Where the dashboard is served on the admin server. */
export const DASHBOARD_PATH = '/queues';

/** The registry is read again at most this often, however often the page polls. */
const REFRESH_MS = 2_000;

const QUEUES = [
  { name: EMBED_QUEUE, what: 'changes waiting to be embedded (one job per batch of items)' },
  { name: WRITE_QUEUE, what: 'vectors waiting to be written to the sink' },
  { name: BACKFILL_QUEUE, what: 'backfills reading their sources' },
] as const;

export interface Dashboard {
  /** Serves a request under DASHBOARD_PATH (access already checked by the admin server). */
  handle(req: IncomingMessage, res: ServerResponse): void;
  close(): Promise<void>;
}

/**
 * bull-board over every queue of this deployment: embed, write and backfill of each generation in
 * the registry (a re-index adds its own, under `<QUEUE_PREFIX>:g<n>`). Shown by their Redis key
 * prefix, `indexer:embed`, so that two generations' queues never share a name. Its Redis
 * connection is opened by the first request: a worker nobody looks at pays nothing for it.
 *
 * Hono with @hono/node-server is the adapter: no dependencies of its own, and a plain
 * (req, res) listener the admin server calls after its own checks (Express would bring a
 * framework and its middleware stack for one mount point).
 */
export function createDashboard(config: Config, logger: Logger): Dashboard {
  const serverAdapter = new HonoAdapter(serveStatic).setBasePath(DASHBOARD_PATH);
  const board = createBullBoard({ queues: [], serverAdapter, options: { uiConfig: { boardTitle: 'Indexer queues' } } });
  // Not strict: /queues/ is the same page as /queues.
  const app = new Hono({ strict: false }).route(DASHBOARD_PATH, serverAdapter.registerPlugin());
  const listener = getRequestListener(app.fetch);
  const queues = new DeploymentQueues(config, logger);
  let shown = -1;
  let refreshedAt = 0;
  let refreshing: Promise<void> | undefined;

  const refresh = async () => {
    const registry = await queues.registry();
    if (registry.revision === shown) return;
    board.replaceQueues(queues.adapters(registry));
    shown = registry.revision;
  };
  const refreshOnceInAWhile = () => {
    if (refreshing) return refreshing;
    if (Date.now() - refreshedAt < REFRESH_MS) return Promise.resolve();
    refreshing = refresh()
      .catch((error: unknown) => logger.warn({ err: (error as Error).message }, 'dashboard: could not read the generation registry; showing the queues known so far'))
      .finally(() => {
        refreshedAt = Date.now();
        refreshing = undefined;
      });
    return refreshing;
  };

  return {
    handle: (req, res) => {
      forgetPauseReasonOnResume(req, res, queues, logger);
      void refreshOnceInAWhile()
        .then(() => listener(req, res))
        .catch((error: unknown) => {
          logger.error({ err: (error as Error).message, path: req.url }, 'dashboard request failed: the page shows an error; check that Redis at REDIS_URL is reachable, then reload');
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'the dashboard failed to answer; see the worker log' }));
        });
    },
    close: () => queues.close(),
  };
}

/** bull-board's pause and resume of one queue: `PUT /queues/api/queues/<prefix>:<name>/(pause|resume)`. */
const PAUSE_OR_RESUME = /\/api\/queues\/([^/?]+)\/(pause|resume)(?:\?|$)/;

/**
 * A pause or resume from the dashboard makes the recorded reason of an earlier pause (an exhausted
 * quota, say) wrong: `indexer status` would blame a later pause by hand on it. Deleted once the
 * dashboard's request succeeded; the workers' sampler also deletes reasons of running queues.
 */
function forgetPauseReasonOnResume(req: IncomingMessage, res: ServerResponse, queues: DeploymentQueues, logger: Logger): void {
  const match = req.method === 'PUT' ? PAUSE_OR_RESUME.exec(req.url ?? '') : null;
  if (!match) return;
  const shown = decodeURIComponent(match[1] as string);
  const at = shown.lastIndexOf(':');
  if (at <= 0) return;
  res.once('finish', () => {
    if (res.statusCode >= 300) return;
    void clearPauseReason(queues.redisConnection(), shown.slice(0, at), shown.slice(at + 1)).catch((error: unknown) =>
      logger.warn({ queue: shown, err: (error as Error).message }, 'dashboard: could not forget the recorded pause reason; the workers forget it within 15 s'),
    );
  });
}

/** The BullMQ queues of every generation, on one Redis connection of their own. */
class DeploymentQueues {
  private redis: Redis | undefined;
  private store: GenerationStore | undefined;
  private readonly open = new Map<string, Queue>();
  private closing: Promise<void> | undefined;

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
  ) {}

  registry(): Promise<GenerationRegistry> {
    return this.generations().read();
  }

  /** One adapter per queue of each generation; queues of generations gone are closed. */
  adapters(registry: GenerationRegistry): BullMQAdapter[] {
    const several = registry.generations.length > 1;
    const wanted = new Map<string, BullMQAdapter>();
    for (const generation of registry.generations) {
      const prefix = generationPrefix(this.config, generation.id);
      const about = several ? ` (generation ${generation.id}, ${generation.model}${generation.id === registry.serving ? ', serving' : ''})` : '';
      for (const { name, what } of QUEUES) {
        const queue = this.queue(prefix, name);
        wanted.set(`${prefix}:${name}`, new BullMQAdapter(queue, { prefix: `${prefix}:`, description: `${what}${about}` }));
      }
    }
    for (const [key, queue] of this.open) {
      if (wanted.has(key)) continue;
      this.open.delete(key);
      void queue.close().catch(() => undefined);
    }
    return [...wanted.values()];
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all([...this.open.values()].map((q) => q.close().catch(() => undefined)));
      this.open.clear();
      await this.redis?.quit().catch(() => undefined);
    })();
    return this.closing;
  }

  private queue(prefix: string, name: string): Queue {
    const key = `${prefix}:${name}`;
    let queue = this.open.get(key);
    if (!queue) {
      queue = new Queue(name, { connection: this.connection(), prefix });
      // Redis errors reach the page as failed requests; an 'error' without a listener would crash the worker.
      queue.on('error', (error) => this.logger.debug({ queue: key, err: error.message }, 'dashboard queue error'));
      this.open.set(key, queue);
    }
    return queue;
  }

  redisConnection(): Redis {
    return this.connection();
  }

  private generations(): GenerationStore {
    this.store ??= new GenerationStore(this.connection(), this.config);
    return this.store;
  }

  /**
   * A page asking while Redis is away should get an error, not hang: unlike the workers' connections
   * (maxRetriesPerRequest null, they wait Redis out), a command fails after one reconnect attempt.
   */
  private connection(): Redis {
    if (!this.redis) {
      this.redis = new Redis(this.config.redis.url, { maxRetriesPerRequest: 1, connectionName: 'indexer-dashboard' });
      this.redis.on('error', (error) => this.logger.debug({ err: error.message }, 'dashboard redis error'));
    }
    return this.redis;
  }
}
