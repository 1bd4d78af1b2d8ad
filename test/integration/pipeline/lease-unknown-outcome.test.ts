/**
 * A write lease is kept while the sink request it covered may still be applied. Writer A's upsert
 * of v5 times out at the client (QDRANT_TIMEOUT_MS) but the server still holds it and applies it
 * later, as Qdrant does with a request whose client went away. A's batch fails (SINK_UNAVAILABLE,
 * deferred). Had the lease been given back then, the delete of v6 would be written (a no-op: no
 * point yet) and recorded as a tombstone, and the old upsert would land after it: the deleted item
 * back for good (found by the review of issue 10). The lease is kept until it expires, so the
 * delete waits; a request the sink applies later than the lease is not covered (see ARCHITECTURE).
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { newJobId, type ItemWrite } from '../../../src/queue/jobs.js';
import { addWriteJob, packWrites } from '../../../src/queue/write-jobs.js';
import { pointId } from '../../../src/sinks/point-id.js';
import { QdrantSink } from '../../../src/sinks/qdrant/qdrant-sink.js';
import { stubVector } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { HARNESS_DIMENSIONS, HARNESS_MODEL, pipelineHarness } from '../../support/pipeline-harness.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';

function write(itemId: string, op: 'upsert' | 'delete', version: number): ItemWrite {
  const upsert = op === 'upsert';
  return {
    itemId, op, version, updatedAt: undefined,
    metadata: upsert ? { title: `v${version}` } : {},
    contentHash: upsert ? `hash-v${version}` : undefined,
    model: upsert ? HARNESS_MODEL : undefined,
    vector: upsert ? stubVector(`text v${version}`, HARNESS_DIMENSIONS) : undefined,
    embeddedAt: upsert ? new Date().toISOString() : undefined,
    acceptedAt: Date.now(),
  };
}
const upsertsPoint = (body: unknown, id: string) =>
  ((body as { operations?: { upsert?: { points?: { id: unknown }[] } }[] } | undefined)?.operations ?? []).some((o) => o.upsert?.points?.some((p) => p.id === id));

describe('write lease vs a timed-out sink request', () => {
  const h = pipelineHarness('review-lease');
  it.each([
    { writers: 2, lockMs: '20000' },
    // One writer: it must not take its own lease back for the delete either.
    { writers: 1, lockMs: '6000' },
  ])('keeps the lease of a write whose request timed out, so a delete cannot land before it ($writers writers)', async ({ writers, lockMs }) => {
    const contract = new QdrantContractServer();
    const url = await contract.start();
    h.cleanups.push(() => contract.stop());
    // The lease (max(JOB_LOCK_MS, 2 x QDRANT_TIMEOUT_MS) = 20 s) outlasts the held request.
    const { config } = await h.setup({ SINK: 'qdrant', QDRANT_URL: url, QDRANT_TIMEOUT_MS: '300', JOB_LOCK_MS: lockMs, WRITE_BATCH_LINGER_MS: '0' });
    // Two writers (separate WriteStages, separate writer ids).
    const a = await h.start(config, ['write']);
    const b = writers === 2 ? await h.start(config, ['write']) : a;
    const redis = new Redis(config.redis.url, { maxRetriesPerRequest: null });
    h.cleanups.push(async () => redis.disconnect());
    const queue = a.writeQueue;
    const sink = new QdrantSink({ name: config.sink.collection, dimensions: HARNESS_DIMENSIONS, distance: 'cosine' }, { url, apiKey: undefined, timeoutMs: 5000 });

    const target = pointId('doomed');
    let held = 0;
    let release = () => {};
    const released = new Promise<void>((r) => (release = r));
    contract.gate = async ({ path, body }) => {
      if (path.endsWith('/points/batch') && upsertsPoint(body, target)) {
        held += 1;
        await released; // the server applies it later, whatever the client did meanwhile
      }
    };
    try {
      await addWriteJob(queue, [write('doomed', 'upsert', 5)], { jobId: newJobId('w'), attempts: 8, removeOnComplete: true });
      await waitFor('the upsert of v5 in flight', async () => held > 0, { timeoutMs: 10_000 });
      await waitFor('the upsert of v5 timed out at the client and its job deferred', async () => {
        for (const p of [a, b]) if ((await p.metrics.jobsDeferred.get()).values.some((v) => v.labels.reason === 'SINK_UNAVAILABLE')) return true;
        return false;
      }, { timeoutMs: 30_000 });
      const deleteJob = await queue.add('writes', packWrites([write('doomed', 'delete', 6)]).data, { jobId: newJobId('w'), attempts: 8, removeOnComplete: true });
      // Either the delete is written now (the lease was given back: the defect), or it waits.
      await waitFor('the delete of v6 tried', async () => (await redis.hget(`${config.redis.prefix}:item:doomed`, 'wv')) === '6' || (await deleteJob.getState()) === 'delayed', { timeoutMs: 30_000 });
    } finally {
      release();
      contract.gate = undefined;
    }
    await waitFor('write queue empty', async () => (await queue.getJobCountByTypes('waiting', 'active', 'delayed', 'prioritized')) === 0, { timeoutMs: 60_000 });
    const state = await redis.hgetall(`${config.redis.prefix}:item:doomed`);
    const points = await sink.retrieve(['doomed']);
    console.log('upsert requests held:', held, 'state:', JSON.stringify(state), 'sink:', JSON.stringify(points.map((p) => p.payload.version)));
    expect(state.del).toBe('1');
    expect(points, 'the item deleted at v6 is back in the sink at v5').toEqual([]);
  }, 90_000);
});
