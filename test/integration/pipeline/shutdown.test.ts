/**
 * SIGTERM while embeddings requests are slow: the request in flight is let finish (its texts are
 * paid for, and written), nothing new starts, and the jobs in hand go back to the queue without
 * spending an attempt. The process exits 0 well before its work would have been done, and the
 * next worker pays for no text twice.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../../src/config/config.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { LanceDbSink } from '../../../src/sinks/lancedb/lancedb-sink.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { isolatedWorkerEnv, spawnWorker } from '../../support/processes.js';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { EMBED_QUEUE } from '../../../src/queue/jobs.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A worker environment of its own, with `count` new items waiting in its topic. */
async function topicWithItems(stub: EmbeddingsStub, overrides: Record<string, string>, count: number) {
  const isolated = await isolatedWorkerEnv(stub, overrides, cleanups);
  const config = loadConfig(isolated.env);
  const kafka = createKafka(config.kafka, silentLogger);
  const topic = config.kafka.topics[0] as string;
  await ensureTopic(kafka, topic, 1);
  const events = Array.from({ length: count }, (_, i) => JSON.stringify({ id: `item-${i}`, version: 1, text: `text ${i}`, metadata: { i } }));
  await produceLines(kafka, topic, (async function* () {
    yield* events;
  })(), { idField: 'id' });
  return { ...isolated, config, count };
}

/** Waits until the LanceDB table the workers write holds `count` items. */
async function waitAllWritten(config: Config, dir: string, count: number, timeoutMs: number): Promise<void> {
  const sink = new LanceDbSink({ name: config.sink.collection, dimensions: 8, distance: 'cosine' }, join(dir, 'lancedb'));
  cleanups.push(() => sink.close());
  await waitFor('every item written by the next worker', async () => {
    try {
      await sink.open();
      return (await sink.count()) === count;
    } catch {
      return false; // the worker has not created the table yet
    }
  }, { timeoutMs });
}

describe('graceful shutdown', () => {
  it('hands the jobs in hand back on SIGTERM and pays for no text twice', async () => {
    // One text per request, each answered after 2 s: the signal comes while requests are in
    // flight, and their answers must be kept (written, or held in the write queue).
    const stub = new EmbeddingsStub({ dimensions: 8, latencyMs: 2_000 });
    const { env, dir, workers, config, count } = await topicWithItems(stub, {
      EMBEDDINGS_BATCH_SIZE: '1',
      EMBED_JOB_MAX_ITEMS: '1',
      EMBED_CONCURRENCY: '40',
      EMBED_BATCH_LINGER_MS: '0',
      EMBEDDINGS_TIMEOUT_MS: '10000',
    }, 40);

    const first = spawnWorker('ingest,embed,write', env);
    workers.push(first);
    await waitFor('an embeddings request in flight', async () => stub.requests.length >= 1, { timeoutMs: 30_000 });
    first.child.kill('SIGTERM');
    const exit = await first.exited;
    expect(exit, first.output().slice(-2000)).toEqual({ code: 0, signal: null });
    expect(first.output()).not.toMatch(/"level":50/);

    const second = spawnWorker('ingest,embed,write', env);
    workers.push(second);
    await waitAllWritten(config, dir, count, 120_000);
    const inputs = stub.served.flatMap((r) => r.inputs);
    expect(inputs.length, `texts bought twice: ${inputs.length - new Set(inputs).size}`).toBe(new Set(inputs).size);
    expect(second.output()).not.toMatch(/dead-letter/);
  });
  it('stops retrying on SIGTERM: the jobs go back to the queue without spending an attempt', async () => {
    // Every request fails as an overloaded server's would; the circuit never opens, so each batch
    // is in its in-process retries when the signal comes.
    const stub = new EmbeddingsStub({ dimensions: 8, unavailableMarker: 'text' });
    const { env, dir, workers, config, count } = await topicWithItems(stub, { EMBEDDINGS_BREAKER_FAILURES: '100000', EMBED_BATCH_LINGER_MS: '0' }, 10);

    const first = spawnWorker('ingest,embed,write', env);
    workers.push(first);
    await waitFor('requests failing and being retried', async () => stub.requests.length >= 3, { timeoutMs: 30_000 });
    first.child.kill('SIGTERM');
    expect(await first.exited, first.output().slice(-2000)).toEqual({ code: 0, signal: null });

    const redis = new Redis(config.redis.url);
    const queue = new Queue(EMBED_QUEUE, { connection: redis, prefix: config.redis.prefix });
    cleanups.push(async () => {
      await queue.close();
      redis.disconnect();
    });
    const jobs = await queue.getJobs(['waiting', 'delayed', 'active', 'failed']);
    expect(jobs.length).toBeGreaterThan(0);
    expect(jobs.map((j) => j.attemptsMade), 'attempts spent by a shutdown').toEqual(jobs.map(() => 0));
    expect(await queue.getFailedCount()).toBe(0);
    expect(await redis.xlen(`${config.redis.prefix}:dlq`)).toBe(0);

    stub.options.unavailableMarker = undefined;
    const second = spawnWorker('ingest,embed,write', env);
    workers.push(second);
    await waitAllWritten(config, dir, count, 60_000);
  });
});
