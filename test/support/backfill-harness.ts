import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackfillControl, type BackfillStatus } from '../../src/backfill/backfill-control.js';
import type { Config } from '../../src/config/config.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { Role } from '../../src/pipeline/pipeline.js';
import { createRedis } from '../../src/queue/connection.js';
import { GenerationSupervisor } from '../../src/reindex/generation-supervisor.js';
import { Reindexer } from '../../src/reindex/reindex.js';
import { waitFor } from './helpers.js';

type Cleanups = (() => Promise<void>)[];

/** A BackfillControl on a test's queues, closed (with its connection) after the test. */
export function backfillControl(config: Config, cleanups: Cleanups): BackfillControl {
  const redis = createRedis(config.redis.url, 'backfill-test');
  const control = new BackfillControl(redis, config.redis.prefix, { attempts: config.redis.jobAttempts, backoffMs: config.redis.jobBackoffMs });
  cleanups.push(async () => {
    await control.close();
    await redis.quit();
  });
  return control;
}

/** The backfill's status once it completed or failed. */
export function backfillEnded(control: BackfillControl, id: string, timeoutMs?: number): Promise<BackfillStatus> {
  return waitFor(
    `backfill ${id} finished`,
    async () => {
      const s = await control.status(id);
      return s?.state === 'completed' || s?.state === 'failed' ? s : undefined;
    },
    timeoutMs === undefined ? {} : { timeoutMs },
  );
}

/** An NDJSON file of these lines, in a directory of its own that is removed after the test. */
export function writeNdjson(lines: string[], cleanups: Cleanups): string {
  const dir = mkdtempSync(join(tmpdir(), 'backfill-rows-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'rows.ndjson');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** Workers for every generation (as a worker process runs them) and a Reindexer, both closed after the test. */
export async function runningGenerations(config: Config, cleanups: Cleanups, roles: Role[] = ['ingest', 'embed', 'write']) {
  const supervisor = new GenerationSupervisor(config, { roles, logger: silentLogger, metrics: new Metrics() });
  await supervisor.start();
  cleanups.push(() => supervisor.close());
  const redis = createRedis(config.redis.url, 'reindex-test');
  cleanups.push(async () => void (await redis.quit()));
  const reindexer = new Reindexer(config, redis);
  const statusOf = async (id: number) => (await reindexer.status()).find((s) => s.generation.id === id);
  return { supervisor, reindexer, redis, statusOf };
}
