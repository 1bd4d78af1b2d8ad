/**
 * Issue 10, as real worker processes: a process whose ingest stops for good says so on /readyz
 * (503, with the reason) and exits non-zero, so that Kubernetes or systemd restarts it; and a
 * worker refuses to start on a Redis that would evict its keys, naming the setting and the fix.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { freePort, waitFor } from '../../support/helpers.js';
import { isolatedWorkerEnv, spawnWorker } from '../../support/processes.js';
import { RedisServer } from '../../support/redis-server.js';

describe('worker processes and failures they cannot get past', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('exits non-zero, and is not ready with the reason before it exits, when ingest meets an error no retry can fix', async () => {
    const stub = new EmbeddingsStub({ dimensions: 8 });
    const port = await freePort();
    const { env, workers } = await isolatedWorkerEnv(stub, { METRICS_PORT: String(port), EMBEDDINGS_TIMEOUT_MS: '60000' }, cleanups);
    const config = loadConfig(env);
    const kafka = createKafka(config.kafka, silentLogger);
    await ensureTopic(kafka, config.kafka.topics[0] as string, 1);
    // A key of another deployment on the same prefix where the dead-letter stream belongs: every
    // XADD to it answers WRONGTYPE, which no retry fixes (a prefix clash, a real misconfiguration).
    const redis = new Redis(config.redis.url);
    cleanups.push(async () => void redis.disconnect());
    await redis.set(`${config.redis.prefix}:dlq`, 'not a stream');
    const readyz = async () => {
      const response = await fetch(`http://127.0.0.1:${port}/readyz`);
      return { status: response.status, body: (await response.json()) as { ready: boolean; reasons: string[] } };
    };

    const worker = spawnWorker('ingest,embed', env);
    workers.push(worker);
    await waitFor('the worker ready', async () => (await readyz()).status === 200);
    // An embeddings request that never answers: the drain after the failure waits on it, which
    // keeps the process up, and observable, until the test lets it go.
    stub.failNext({ kind: 'hang' });
    await produceLines(kafka, config.kafka.topics[0] as string, [JSON.stringify({ id: 'held', version: 1, text: 'in flight while ingest fails' })], { idField: 'id' });
    await waitFor('the embeddings request in flight', () => stub.requests.length === 1);

    await produceLines(kafka, config.kafka.topics[0] as string, ['not json: its dead letter cannot be stored'], { idField: 'id' });
    const failed = await waitFor('readiness to fail on the stopped ingest', async () => {
      const r = await readyz();
      return r.status === 503 ? r.body : undefined;
    });
    expect(failed.ready).toBe(false);
    expect(failed.reasons.join('\n')).toMatch(/stopping, to exit non-zero: ingest met an error that retrying cannot fix: WRONGTYPE/);
    expect(worker.child.exitCode).toBeNull();

    await stub.stop(); // drops the hanging request: the drain can end
    const exit = await worker.exited;
    expect(exit.code).toBe(1);
    expect(worker.output()).toMatch(/INGEST STOPPED: the Kafka consumer is gone/);
  });

  it('refuses to start on a Redis that evicts keys, naming maxmemory-policy and the fix', async () => {
    const evicting = new RedisServer({ 'maxmemory-policy': 'allkeys-lru' });
    cleanups.push(() => evicting.remove());
    await evicting.start();
    const { env, workers } = await isolatedWorkerEnv(new EmbeddingsStub({ dimensions: 8 }), { REDIS_URL: evicting.url }, cleanups);
    const worker = spawnWorker('embed', env);
    workers.push(worker);
    const exit = await worker.exited;
    expect(exit.code).toBe(1);
    expect(worker.output()).toMatch(/could not start/);
    expect(worker.output()).toMatch(/maxmemory-policy allkeys-lru/);
    expect(worker.output()).toMatch(/Set maxmemory-policy to noeviction/);
    expect(worker.output()).toMatch(/REDIS_MISCONFIGURED/);
  });
});
