/**
 * The drain bound (EMBEDDINGS_TIMEOUT_MS + QDRANT_TIMEOUT_MS + 10 s) holds only if one batch has at
 * most one embeddings request in flight when the process stops. With fallback endpoints, one
 * provider call fails over endpoint after endpoint (and may wait for the rate limiter before each):
 * the review of issue 10 measured a drain of N x the timeout. Once stopping, no fallback is tried:
 * the request in flight finishes (here, times out) and the job goes back to the queue.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { EMBED_QUEUE, newJobId, type QueuedChange } from '../../../src/queue/jobs.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { HARNESS_DIMENSIONS, pipelineHarness } from '../../support/pipeline-harness.js';

const TIMEOUT_MS = 6000;

describe('drain bound with fallback endpoints', () => {
  const h = pipelineHarness('review-shutdown');
  it('tries no fallback endpoint once the process is stopping, and hands the job back', async () => {
    const fallbacks = [new EmbeddingsStub({ dimensions: HARNESS_DIMENSIONS }), new EmbeddingsStub({ dimensions: HARNESS_DIMENSIONS })];
    const urls: string[] = [];
    for (const f of fallbacks) {
      urls.push(await f.start());
      h.cleanups.push(() => f.stop());
    }
    const { stub, config } = await h.setup({
      EMBEDDINGS_TIMEOUT_MS: String(TIMEOUT_MS),
      EMBEDDINGS_FALLBACK_BASE_URLS: urls.join(','),
      SINK: 'qdrant', QDRANT_URL: 'http://127.0.0.1:9', QDRANT_TIMEOUT_MS: '100',
    });
    for (const s of [stub, ...fallbacks]) s.failNext({ kind: 'hang' });
    const p = await h.start(config, ['embed']);
    const change: QueuedChange = { itemId: 'x', op: 'upsert', version: 1, versionSource: 'version', updatedAt: undefined, text: 'some text', metadata: {}, source: undefined, acceptedAt: Date.now() };
    await p.embedQueue.add('changes', { changes: [change] }, { jobId: newJobId('e'), attempts: 8, removeOnComplete: true });
    await waitFor('the request in flight at the primary', async () => stub.requests.length > 0, { timeoutMs: 15_000 });
    const job = (await p.embedQueue.getJobs(['active']))[0];
    await p.close();
    expect(fallbacks.map((f) => f.requests.length), 'requests started at fallbacks after the stop').toEqual([0, 0]);
    expect(stub.requests.length).toBe(1);
    const redis = new Redis(config.redis.url);
    const queue = new Queue(EMBED_QUEUE, { connection: redis, prefix: config.redis.prefix });
    h.cleanups.push(async () => {
      await queue.close();
      redis.disconnect();
    });
    const after = await queue.getJob(job?.id as string);
    expect(await after?.getState()).toBe('delayed');
    expect(after?.attemptsMade).toBe(0);
  }, 60_000);
});
