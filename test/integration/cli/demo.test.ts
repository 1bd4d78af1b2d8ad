/**
 * `npm run demo` as a new user runs it, then the command it says comes next, through the package's
 * bin in a clone without a build (`npx indexer`). The demo's whole output, at LOG_LEVEL=info, holds
 * no log line at level error: a normal run must not page anyone.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { deletePrefix, deleteTopics, services } from '../../support/helpers.js';
import { runCommand } from '../../support/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'demo-'));
let run: string | undefined;


/** pino lines at level error (50) or fatal (60). */
function errorLogLines(output: string): string[] {
  return output.split('\n').filter((line) => {
    if (!line.startsWith('{')) return false;
    try {
      return (JSON.parse(line) as { level?: number }).level! >= 50;
    } catch {
      return false;
    }
  });
}

afterAll(async () => {
  const { kafkaBrokers, redisUrl } = services();
  if (run) {
    await deletePrefix(redisUrl, run);
    await deleteTopics([kafkaBrokers], [run]);
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('npm run demo', () => {
  it('indexes the sample catalog, logs no error, and prints a next command that finds the demo index', async () => {
    const { kafkaBrokers, redisUrl } = services();
    const lancedb = join(dir, 'demo-lancedb');
    const env = { KAFKA_BROKERS: kafkaBrokers, REDIS_URL: redisUrl, LANCEDB_URI: lancedb, LOG_LEVEL: 'info', KAFKAJS_NO_PARTITIONER_WARNING: '1' };
    const demo = await runCommand('bash', ['scripts/demo.sh'], env);
    run = /to Kafka topic (demo-[a-z0-9]+)/.exec(demo.stdout)?.[1];
    expect(demo.status, demo.stderr).toBe(0);
    expect(run).toBeDefined();
    expect(demo.stdout).toMatch(/indexed (\d+)\/\1 items, 0 jobs queued/);
    expect(errorLogLines(demo.stdout + demo.stderr)).toEqual([]);

    const next = /^ {2}(LANCEDB_URI=\S+ COLLECTION=\S+) npx indexer search "([^"]+)"$/m.exec(demo.stdout);
    expect(next, demo.stdout).not.toBeNull();
    const vars = Object.fromEntries(next![1]!.split(' ').map((pair) => pair.split('=') as [string, string]));
    expect(vars.LANCEDB_URI).toBe(lancedb);
    const search = await runCommand('npx', ['indexer', 'search', next![2]!, '--json'], { ...env, ...vars, LOG_LEVEL: 'warn' });
    expect(search.status, search.stderr).toBe(0);
    const hits = search.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { id?: string; itemId?: string });
    expect(hits.length).toBeGreaterThan(0);
  }, 240_000);
});
