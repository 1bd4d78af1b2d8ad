/**
 * The worker as real processes: each role in its own process (as deployments scale them), a
 * graceful SIGTERM, and the start-up refusals (bad config, a collection of another size).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { LanceDbSink } from '../../../src/sinks/lancedb/lancedb-sink.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { deletePrefix, deleteTopics, freePort, services, uniqueName, waitFor } from '../../support/helpers.js';
import { spawnWorker, type WorkerProcess } from '../../support/processes.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';
import { loadConfig } from '../../../src/config/config.js';

const stub = new EmbeddingsStub({ dimensions: 8 });
const contract = new QdrantContractServer();
let env: Record<string, string>;
const started: WorkerProcess[] = [];

beforeAll(async () => {
  const { kafkaBrokers, redisUrl } = services();
  const name = uniqueName('proc');
  env = {
    KAFKA_BROKERS: kafkaBrokers,
    REDIS_URL: redisUrl,
    KAFKA_TOPICS: name,
    KAFKA_GROUP_ID: name,
    QUEUE_PREFIX: name,
    EMBEDDINGS_BASE_URL: await stub.start(),
    EMBEDDINGS_MODEL: 'stub-embedding',
    EMBEDDINGS_DIMENSIONS: '8',
    QDRANT_URL: await contract.start(),
    COLLECTION: name,
    EMBED_BATCH_LINGER_MS: '20',
    WRITE_BATCH_LINGER_MS: '20',
  };
  await ensureTopic(createKafka(loadConfig(env).kafka, silentLogger), name, 2);
});

afterAll(async () => {
  for (const p of started) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await stub.stop();
  await contract.stop();
  await deletePrefix(env.REDIS_URL as string, env.QUEUE_PREFIX as string);
  await deleteTopics([env.KAFKA_BROKERS as string], [env.KAFKA_TOPICS as string]);
});


async function countPoints(): Promise<number> {
  const response = await fetch(`${env.QDRANT_URL}/collections/${env.COLLECTION}/points/count`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"exact":true}' });
  if (response.status !== 200) return -1;
  return ((await response.json()) as { result: { count: number } }).result.count;
}

describe('worker processes', () => {
  it('runs ingest, embed and write as three processes and stops each on SIGTERM', async () => {
    const roles = ['write', 'embed', 'ingest'].map((role) => spawnWorker(role, env));
    started.push(...roles);
    const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ id: `p-${i}`, version: 1, text: `process text ${i}` }));
    await produceLines(createKafka(loadConfig(env).kafka, silentLogger), env.KAFKA_TOPICS as string, lines, { idField: 'id' });
    await waitFor('40 points written by the write process', async () => (await countPoints()) === 40, { timeoutMs: 90_000 });

    for (const p of roles) p.child.kill('SIGTERM');
    const exits = await Promise.all(roles.map((p) => p.exited));
    expect(exits.map((e) => e.code)).toEqual([0, 0, 0]);
    for (const p of roles) expect(p.output()).toContain('"msg":"stopped"');
  });

  it('refuses to start on a bad setting, naming it', async () => {
    const p = spawnWorker('ingest,embed,write', { ...env, WRITE_BATCH_SIZE: 'many', QUEUE_HIGH_WATER: '-1' });
    started.push(p);
    const exit = await p.exited;
    expect(exit.code).toBe(78);
    expect(p.output()).toMatch(/WRITE_BATCH_SIZE: expected a whole number/);
    expect(p.output()).toMatch(/QUEUE_HIGH_WATER:/);
  });

  it('serves /healthz and /readyz: not ready, with the reason, while every embeddings circuit is open', async () => {
    const failing = new EmbeddingsStub({ dimensions: 8 });
    const name = uniqueName('ready');
    const port = await freePort();
    const own = { ...env, KAFKA_TOPICS: name, KAFKA_GROUP_ID: name, QUEUE_PREFIX: name, EMBEDDINGS_BASE_URL: await failing.start(), EMBEDDINGS_BREAKER_FAILURES: '2', EMBEDDINGS_BREAKER_COOLDOWN_MS: '600000', METRICS_PORT: String(port) };
    failing.failNext(...Array.from({ length: 10 }, () => ({ status: 503 })));
    try {
      await ensureTopic(createKafka(loadConfig(own).kafka, silentLogger), name, 1);
      const p = spawnWorker('ingest,embed', own);
      started.push(p);
      const get = async (path: string) => {
        const response = await fetch(`http://127.0.0.1:${port}${path}`);
        return { status: response.status, body: await response.text() };
      };
      await waitFor('the worker ready', async () => (await get('/readyz')).status === 200);
      expect((await get('/healthz')).status).toBe(200);

      await produceLines(createKafka(loadConfig(own).kafka, silentLogger), name, [JSON.stringify({ id: 'r-1', version: 1, text: 'during the outage' })], { idField: 'id' });
      const notReady = await waitFor('readiness to fail on the open circuit', async () => {
        const r = await get('/readyz');
        return r.status === 503 ? r : undefined;
      });
      const body = JSON.parse(notReady.body) as { ready: boolean; reasons: string[]; embeddings: { name: string; circuit: string }[] };
      expect(body.ready).toBe(false);
      expect(body.reasons.join()).toMatch(/every embeddings endpoint's circuit is open \(primary\)/);
      expect(body.embeddings).toMatchObject([{ name: 'primary', circuit: 'open' }]);
      expect((await get('/metrics')).body).toMatch(/indexer_embedding_circuit_state\{endpoint="primary"\} 2/);
      expect((await get('/healthz')).status).toBe(200);

      p.child.kill('SIGTERM');
      expect((await p.exited).code).toBe(0);
    } finally {
      await failing.stop();
      await deletePrefix(env.REDIS_URL as string, name);
      await deleteTopics([env.KAFKA_BROKERS as string], [name]);
    }
  });

  it('refuses to start the writer against a collection of another vector size', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mismatch-'));
    try {
      const existing = new LanceDbSink({ name: 'items', dimensions: 4, distance: 'cosine' }, dir);
      await existing.open();
      await existing.close();
      const p = spawnWorker('write', { ...env, QDRANT_URL: undefined, SINK: 'lancedb', LANCEDB_URI: dir, COLLECTION: 'items' });
      started.push(p);
      const exit = await p.exited;
      expect(exit.code).toBe(1);
      expect(p.output()).toMatch(/holds 4-dimensional cosine vectors, but the configured embeddings model gives 8-dimensional/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
