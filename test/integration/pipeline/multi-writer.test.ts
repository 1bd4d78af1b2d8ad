/**
 * Several writer processes never resurrect a deleted item. Qdrant's conditional update guards a
 * replace, never an insert: if writer A deletes v6 while writer B's upsert of v5 is still on its
 * way, B's upsert lands on an empty slot and brings the item back. Each item has one writer at a
 * time (a lease in its state), so the delete waits until the upsert is written, then wins.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { newJobId, WRITE_QUEUE, type ItemWrite, type WriteJobData } from '../../../src/queue/jobs.js';
import { addWriteJob, packWrites } from '../../../src/queue/write-jobs.js';
import { pointId } from '../../../src/sinks/point-id.js';
import { QdrantSink } from '../../../src/sinks/qdrant/qdrant-sink.js';
import { ItemStateStore } from '../../../src/state/item-state.js';
import { EmbeddingsStub, stubVector } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { isolatedWorkerEnv, spawnWorker, type WorkerProcess } from '../../support/processes.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';

const DIMENSIONS = 8;
const MODEL = 'stub-embedding';
const cleanups: (() => Promise<void>)[] = [];
const contract = new QdrantContractServer();
let env: Record<string, string>;
let workers: WorkerProcess[];

beforeAll(async () => {
  const isolated = await isolatedWorkerEnv(new EmbeddingsStub({ dimensions: DIMENSIONS }), {
    QDRANT_URL: await contract.start(),
    // One write job per process at a time: the job held by the slow request keeps its process
    // busy, so the next job goes to the other process, as under load.
    WRITE_CONCURRENCY: '1',
    WRITE_BATCH_LINGER_MS: '0',
  }, cleanups);
  env = isolated.env;
  workers = isolated.workers;
  cleanups.push(() => contract.stop());
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function write(itemId: string, op: 'upsert' | 'delete', version: number): ItemWrite {
  const upsert = op === 'upsert';
  return {
    itemId,
    op,
    version,
    updatedAt: undefined,
    metadata: upsert ? { title: `v${version}` } : {},
    contentHash: upsert ? `hash-v${version}` : undefined,
    model: upsert ? MODEL : undefined,
    vector: upsert ? stubVector(`text v${version}`, DIMENSIONS) : undefined,
    embeddedAt: upsert ? new Date().toISOString() : undefined,
    acceptedAt: Date.now(),
  };
}

/** True when a Qdrant batch request upserts this point. */
function upsertsPoint(body: unknown, id: string): boolean {
  const operations = (body as { operations?: { upsert?: { points?: { id: unknown }[] } }[] } | undefined)?.operations ?? [];
  return operations.some((o) => o.upsert?.points?.some((p) => p.id === id));
}

describe('two writer processes', () => {
  it('never bring back an item deleted while an older upsert of it is on its way to the sink', async () => {
    const config = loadConfig(env);
    for (let i = 0; i < 2; i++) {
      const worker = spawnWorker('write', env);
      workers.push(worker);
      await waitFor(`writer ${i + 1} running`, async () => worker.output().includes('"msg":"running"'), { timeoutMs: 30_000 });
    }
    const redis = new Redis(config.redis.url, { maxRetriesPerRequest: null });
    const queue = new Queue<WriteJobData>(WRITE_QUEUE, { connection: redis, prefix: config.redis.prefix });
    const state = new ItemStateStore(redis, config.redis.prefix);
    const sink = new QdrantSink({ name: config.sink.collection, dimensions: DIMENSIONS, distance: 'cosine' }, { url: env.QDRANT_URL as string, apiKey: undefined, timeoutMs: 5000 });
    cleanups.push(async () => {
      await queue.close();
      redis.disconnect();
    });

    // The upsert of v5 reaches the sink slowly: its request is held until the delete was tried.
    const target = pointId('doomed');
    let upsertHeld = false;
    let releaseUpsert = () => {};
    const released = new Promise<void>((resolve) => (releaseUpsert = resolve));
    contract.gate = async ({ path, body }) => {
      if (path.endsWith('/points/batch') && upsertsPoint(body, target)) {
        upsertHeld = true;
        await released;
      }
    };
    try {
      await addWriteJob(queue, [write('doomed', 'upsert', 5)], { jobId: newJobId('w'), attempts: 8, removeOnComplete: true });
      await waitFor('the upsert of v5 held in flight', async () => upsertHeld);

      // The delete of v6 goes to the other writer (the first one's only slot is busy).
      const deleteJob = await queue.add('writes', packWrites([write('doomed', 'delete', 6)]).data, { jobId: newJobId('w'), attempts: 8, removeOnComplete: true });
      await waitFor('the delete of v6 tried by the other writer (written, or waiting its turn)', async () => {
        if ((await state.get('doomed')).writtenVersion === 6) return true;
        return (await deleteJob.getState()) === 'delayed';
      });
    } finally {
      releaseUpsert();
      contract.gate = undefined;
    }

    await waitFor('both writes done', async () => (await queue.getJobCountByTypes('waiting', 'active', 'delayed')) === 0 && (await state.get('doomed')).writtenVersion === 6, { timeoutMs: 30_000 });
    expect(await state.get('doomed')).toMatchObject({ writtenVersion: 6, deleted: true });
    expect(await sink.retrieve(['doomed']), 'the item deleted at v6 is back in the sink: the upsert of v5 landed after the delete').toEqual([]);
    expect(await redis.hget(state.leasesKey, state.key('doomed')), 'the write lease was given back').toBeNull();
    expect(await queue.getFailedCount()).toBe(0);
  });
});
