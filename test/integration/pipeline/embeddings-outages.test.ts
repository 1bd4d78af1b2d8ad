/**
 * The pipeline (real Kafka, Redis, LanceDB) while the embeddings API misbehaves for a long time:
 * sustained failures open the circuit and jobs wait without spending attempts, a refused key
 * pauses the queue for an operator, a dead primary is covered by a fallback, and a tokens-per-minute
 * limit is kept. JOB_ATTEMPTS is 1 throughout: any failure that spent an attempt would dead-letter.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/config.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { startPipeline, type Pipeline, type Role } from '../../../src/pipeline/pipeline.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { removeTestResources, testConfig, uniqueName, waitFor } from '../../support/helpers.js';

const DIMENSIONS = 8;
const upsert = (id: string, text: string) => JSON.stringify({ id, op: 'upsert', version: 1, text, metadata: {} });

describe('embeddings outages, end to end', () => {
  const cleanups: (() => Promise<void>)[] = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function stub(options: ConstructorParameters<typeof EmbeddingsStub>[0] = {}) {
    const server = new EmbeddingsStub({ dimensions: DIMENSIONS, ...options });
    const url = await server.start();
    cleanups.push(() => server.stop());
    return { server, url };
  }

  async function setup(env: Record<string, string>) {
    const lancedbDir = mkdtempSync(join(tmpdir(), 'outages-lancedb-'));
    const config = testConfig({
      EMBEDDINGS_MODEL: 'stub-embedding',
      EMBEDDINGS_DIMENSIONS: String(DIMENSIONS),
      EMBEDDINGS_BATCH_SIZE: '16',
      EMBEDDINGS_TIMEOUT_MS: '2000',
      JOB_ATTEMPTS: '1',
      LANCEDB_URI: lancedbDir,
      COLLECTION: uniqueName('items'),
      ...env,
    });
    const topic = config.kafka.topics[0] as string;
    await ensureTopic(createKafka(config.kafka, silentLogger), topic, 1);
    cleanups.push(async () => {
      await removeTestResources(config);
      rmSync(lancedbDir, { recursive: true, force: true });
    });
    return {
      config,
      produce: (lines: string[]) => produceLines(createKafka(config.kafka, silentLogger), topic, lines, { idField: 'id' }),
    };
  }

  async function start(config: Config, roles: Role[] = ['ingest', 'embed', 'write']): Promise<Pipeline> {
    const pipeline = await startPipeline(config, { roles, logger: silentLogger });
    cleanups.push(() => pipeline.close());
    return pipeline;
  }

  const holds = async (pipeline: Pipeline, ids: string[]) => (await pipeline.sink?.retrieve(ids))?.length ?? 0;
  const metricValue = async (pipeline: Pipeline, name: string, labels: Record<string, string> = {}) => {
    const metric = (await pipeline.metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
    return (metric?.values ?? [])
      .filter((v) => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l))
      .reduce((sum, v) => sum + v.value, 0);
  };

  it('opens the circuit under sustained 5xx, reports not ready, defers jobs without spending attempts, and recovers', async () => {
    const { server, url } = await stub();
    const { config, produce } = await setup({ EMBEDDINGS_BASE_URL: url, EMBEDDINGS_BREAKER_FAILURES: '3', EMBEDDINGS_BREAKER_COOLDOWN_MS: '1500' });
    const pipeline = await start(config);
    // Three in-process retries open the circuit; the next three probes fail too; then it heals.
    server.failNext(...Array.from({ length: 6 }, () => ({ status: 503 })));
    await produce([upsert('outage-1', 'through the outage'), upsert('outage-2', 'also through it')]);

    await waitFor('readiness to report the open circuit', () => !pipeline.readiness().ready);
    expect(pipeline.readiness().reasons.join()).toMatch(/circuit is open/);
    await waitFor('both items indexed after the outage', async () => (await holds(pipeline, ['outage-1', 'outage-2'])) === 2);

    expect(pipeline.readiness().ready).toBe(true);
    expect(await pipeline.deadLetters.count()).toBe(0);
    expect(await metricValue(pipeline, 'indexer_embedding_circuit_opened_total', { endpoint: 'primary' })).toBeGreaterThanOrEqual(2);
    expect(await metricValue(pipeline, 'indexer_jobs_deferred_total', { reason: 'EMBEDDINGS_CIRCUIT_OPEN' })).toBeGreaterThan(0);
    expect(await metricValue(pipeline, 'indexer_embedding_circuit_state', { endpoint: 'primary' })).toBe(0);
    expect(server.requests.map((r) => r.status)).toEqual([503, 503, 503, 503, 503, 503, 200]);
  });

  it('pauses the queue when the key is refused, and a restart with the right key plus `resume` indexes everything', async () => {
    const { server, url } = await stub({ apiKey: 'sk-right' });
    const { config, produce } = await setup({ EMBEDDINGS_BASE_URL: url, EMBEDDINGS_API_KEY: 'sk-wrong' });
    const wrong = await start(config);
    await produce([upsert('key-1', 'waits for the key'), upsert('key-2', 'waits as well')]);
    await waitFor('the embed queue paused', () => wrong.embedQueue.isPaused());
    expect(await wrong.deadLetters.count()).toBe(0);
    expect(server.served).toHaveLength(0);
    await wrong.close();

    const fixed = await start({ ...config, embeddings: { ...config.embeddings, apiKey: 'sk-right' } }, ['embed', 'write']);
    await fixed.embedQueue.resume();
    await waitFor('both items indexed with the right key', async () => (await holds(fixed, ['key-1', 'key-2'])) === 2);
    expect(await fixed.deadLetters.count()).toBe(0);
  });

  it('indexes through the fallback while the primary is unreachable, and stays ready', async () => {
    const fallback = await stub();
    const { config, produce } = await setup({ EMBEDDINGS_BASE_URL: 'http://127.0.0.1:1/v1', EMBEDDINGS_FALLBACK_BASE_URLS: fallback.url, EMBEDDINGS_BREAKER_FAILURES: '2' });
    const pipeline = await start(config);
    const ids = Array.from({ length: 40 }, (_, i) => `fallback-${i}`);
    await produce(ids.map((id) => upsert(id, `served by the fallback ${id}`)));
    await waitFor('every item indexed', async () => (await holds(pipeline, ids)) === ids.length);
    expect(pipeline.readiness()).toMatchObject({ ready: true });
    expect(pipeline.readiness().embeddings?.map((e) => [e.name, e.circuit])).toEqual([['primary', 'open'], ['fallback-1', 'closed']]);
    expect(fallback.server.served.flatMap((r) => r.inputs)).toHaveLength(ids.length);
    expect(await pipeline.deadLetters.count()).toBe(0);
  });

  it('keeps within a tokens-per-minute limit it must wait on, without a 429', async () => {
    const { server, url } = await stub({ rateLimits: { tpm: 3000 }, latencyMs: 5, latencyJitterMs: 30 });
    const { config, produce } = await setup({ EMBEDDINGS_BASE_URL: url, EMBEDDINGS_TPM: '3000' });
    const pipeline = await start(config);
    // About 3,300 tokens against 3,000 a minute: the last requests wait a few seconds for their turn.
    const ids = Array.from({ length: 100 }, (_, i) => `tpm-${i}`);
    await produce(ids.map((id, i) => upsert(id, `item ${i} of the rate-limited catalogue: a waterproof trail running shoe with a rock plate, a grippy outsole and a gusseted tongue`)));
    await waitFor('every item indexed', async () => (await holds(pipeline, ids)) === ids.length);
    const tokens = server.served.reduce((sum, r) => sum + r.tokens, 0);
    expect(tokens).toBeGreaterThan(3000);
    expect(server.requests.filter((r) => r.status === 429)).toHaveLength(0);
    expect(await metricValue(pipeline, 'indexer_embedding_rate_limit_per_minute', { endpoint: 'primary', kind: 'tokens' })).toBe(3000);
  });
});
