/**
 * A write job's vectors live beside it in Redis (`<prefix>:write-vectors:<job id>`), added in one
 * MULTI with the job and removed once its writes are done. On real Redis, Kafka and LanceDB: the
 * vectors written are the ones bought, no vectors key outlives its job, and a job that runs again
 * after its vectors were removed neither fails nor loses a write silently.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { newJobId, type ItemWrite } from '../../../src/queue/jobs.js';
import { addWriteJob, vectorsKey, vectorsKeyPattern } from '../../../src/queue/write-jobs.js';
import { stubVector } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { HARNESS_DIMENSIONS, HARNESS_MODEL, pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

const upsert = (itemId: string, version: number, text: string): ItemWrite => ({
  itemId,
  op: 'upsert',
  version,
  updatedAt: undefined,
  acceptedAt: Date.now(),
  metadata: { title: text },
  contentHash: `hash-${itemId}-${version}`,
  model: HARNESS_MODEL,
  vector: stubVector(text, HARNESS_DIMENSIONS),
  embeddedAt: new Date().toISOString(),
});

async function vectorKeys(redis: Redis, prefix: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', vectorsKeyPattern(prefix), 'COUNT', 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== '0');
  return found;
}

describe('write jobs with their vectors beside them', () => {
  const h = pipelineHarness('write-vectors');

  it('writes the vectors bought, and leaves no vectors key behind once the jobs are done', async () => {
    const { config, produce, stub } = await h.setup({ EMBEDDINGS_BATCH_SIZE: '16' });
    const pipeline = await h.start(config, ['ingest', 'embed', 'write']);
    const redis = new Redis(config.redis.url);
    h.cleanups.push(async () => redis.disconnect());
    const texts = Array.from({ length: 60 }, (_, i) => `item ${i}: a ceramic mug, ${i} cl`);
    await produce(texts.map((text, i) => upsertEvent(`sku-${i}`, 1, text)));

    await waitFor('every item written', async () => (await pipeline.sink?.count()) === texts.length);
    const stored = await pipeline.sink?.retrieve(['sku-0', 'sku-59'], { withVectors: true });
    expect(stored?.map((r) => r.vector)).toEqual([Array.from(stubVector(texts[0] as string, HARNESS_DIMENSIONS)), Array.from(stubVector(texts[59] as string, HARNESS_DIMENSIONS))]);
    expect(stub.requests.length, 'several write jobs (one per request of 16)').toBeGreaterThan(1);
    await waitFor('no vectors key left', async () => (await vectorKeys(redis, config.redis.prefix)).length === 0);
    expect(await pipeline.deadLetters.list()).toEqual([]);
  });

  it('completes a job run again after its vectors were removed when its item is already written, and dead-letters one whose item is not', async () => {
    const { config } = await h.setup();
    const pipeline = await h.start(config, ['write']);
    const redis = new Redis(config.redis.url);
    h.cleanups.push(async () => redis.disconnect());

    // Written, recorded, then its job is met again with its vectors gone: as after a crash between
    // the removal of the vectors and BullMQ's completion of the job.
    const first = newJobId('w');
    await addWriteJob(pipeline.writeQueue, [upsert('written', 3, 'the text of v3')], { jobId: first, attempts: 3, removeOnComplete: true });
    await waitFor('v3 written', async () => (await pipeline.state.get('written')).writtenVersion === 3);
    await waitFor('its vectors removed', async () => (await redis.exists(vectorsKey(config.redis.prefix, first))) === 0);
    const again = newJobId('w');
    await addWriteJob(pipeline.writeQueue, [upsert('written', 3, 'the text of v3'), upsert('never-written', 1, 'lost text')], { jobId: again, attempts: 3, removeOnComplete: true });
    await redis.del(vectorsKey(config.redis.prefix, again));

    const [letter] = await waitFor('the item that still needed its vector dead-lettered', async () => {
      const letters = await pipeline.deadLetters.list();
      return letters.length > 0 ? letters : undefined;
    });
    expect(letter).toMatchObject({ stage: 'write', code: 'WRITE_VECTOR_MISSING', itemId: 'never-written' });
    expect(letter?.reason).toMatch(/replay the change from its source/);
    await waitFor('the job completed (removed)', async () => (await pipeline.writeQueue.getJob(again)) === undefined);
    expect((await pipeline.state.get('written')).writtenVersion).toBe(3);
    expect((await pipeline.state.get('never-written')).writtenVersion).toBeUndefined();
    expect(await pipeline.sink?.retrieve(['never-written'])).toEqual([]);
  });
});
