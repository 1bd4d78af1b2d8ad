/**
 * A normal start pages no one. A worker process (every role) starts against a brand-new Kafka
 * cluster, its group coordinator still loading, as a fresh deployment meets it; it indexes a few
 * events and drains on SIGTERM. Its whole output, at LOG_LEVEL=info, holds no line at level error:
 * kafkajs's retried coordinator answers ("The coordinator is loading", "The group coordinator is
 * not available") are debug, and the admin calls of the start (the epoch check) retry them.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import { deletePrefix, services, uniqueName, waitFor } from '../../support/helpers.js';
import { spawnWorker, type WorkerProcess } from '../../support/processes.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'quiet-start-'));
const brokerEnv: Record<string, string> = {};
let worker: WorkerProcess | undefined;
let env: Record<string, string>;

/** Two free consecutive ports would be luck; a free port whose next one is free too, checked. */
async function freePortPair(): Promise<number> {
  const listen = (port: number) => new Promise<boolean>((resolve) => {
    const server = createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
  for (let port = 20000 + Math.floor(Math.random() * 20000); ; port += 2) {
    if ((await listen(port)) && (await listen(port + 1))) return port;
  }
}

function kafkaScript(command: 'start' | 'stop'): { status: number | null; stderr: string } {
  const result = spawnSync('bash', ['scripts/services/kafka.sh', command], { cwd: ROOT, env: { ...process.env, ...brokerEnv }, encoding: 'utf8' });
  return { status: result.status, stderr: result.stderr };
}

/** pino lines at level error (50) or fatal (60). */
function errorLines(output: string): string[] {
  return output.split('\n').filter((line) => line.startsWith('{') && (JSON.parse(line) as { level: number }).level >= 50);
}

beforeAll(() => {
  return (async () => {
    const port = await freePortPair();
    Object.assign(brokerEnv, { KAFKA_BROKERS: `127.0.0.1:${port}`, KAFKA_LOCAL_DIR: join(dir, 'kafka'), KAFKA_WAIT_FOR_GROUPS: '0', KAFKA_LOCAL_HEAP: '384m' });
    const started = kafkaScript('start');
    expect(started.status, started.stderr).toBe(0);
    const name = uniqueName('quiet');
    env = { KAFKA_BROKERS: brokerEnv.KAFKA_BROKERS as string, REDIS_URL: services().redisUrl, KAFKA_TOPICS: name, KAFKA_GROUP_ID: name, QUEUE_PREFIX: name, LANCEDB_URI: join(dir, 'lancedb'), COLLECTION: 'items', LOG_LEVEL: 'info', KAFKAJS_NO_PARTITIONER_WARNING: '1' };
  })();
}, 180_000);

afterAll(async () => {
  if (worker && worker.child.exitCode === null) {
    worker.child.kill('SIGKILL');
    await worker.exited;
  }
  if (env) await deletePrefix(env.REDIS_URL as string, env.QUEUE_PREFIX as string);
  kafkaScript('stop');
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('a normal start', () => {
  it('on a brand-new Kafka cluster indexes, drains and logs nothing at level error', async () => {
    const config = loadConfig(env);
    const kafka = createKafka(config.kafka, silentLogger);
    await ensureTopic(kafka, env.KAFKA_TOPICS as string, 2);
    worker = spawnWorker('ingest,embed,write', env);
    const lines = Array.from({ length: 20 }, (_, i) => JSON.stringify({ id: `q-${i}`, version: 1, text: `quiet start item ${i}` }));
    await produceLines(kafka, env.KAFKA_TOPICS as string, lines, { idField: 'id' });

    const sink = createSink(config.sink, config.embeddings.dimensions);
    await waitFor('20 items in the sink', async () => {
      try {
        await sink.open();
        return (await sink.count()) === 20;
      } catch {
        return false;
      }
    }, { timeoutMs: 120_000, intervalMs: 500 });
    await sink.close();

    worker.child.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    const output = worker.output();
    expect(output).toContain('"msg":"stopped"');
    expect(errorLines(output)).toEqual([]);
  }, 240_000);
});
