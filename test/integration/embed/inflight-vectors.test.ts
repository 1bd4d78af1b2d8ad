/**
 * The in-flight hint on a real Redis: a vector waiting in a write job is found by its content hash,
 * from the announcing process's memory or, in any other process, read back from the job; a hint
 * naming a job that is gone gives nothing and is removed.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InflightVectors } from '../../../src/embed/inflight-vectors.js';
import { WRITE_QUEUE, type ItemWrite } from '../../../src/queue/jobs.js';
import { packWrites, vectorsKey } from '../../../src/queue/write-jobs.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

let redis: Redis;
let prefix: string;

beforeAll(() => {
  redis = new Redis(services().redisUrl);
});
afterAll(() => redis.disconnect());
afterEach(() => deletePrefix(services().redisUrl, prefix));

const upsert = (itemId: string, hash: string, vector: Float32Array): ItemWrite => ({ itemId, op: 'upsert', version: 1, updatedAt: undefined, acceptedAt: 0, metadata: {}, contentHash: hash, model: 'm', vector, embeddedAt: '2026-11-24T00:00:00.000Z' });
const vectorA = Float32Array.of(1, 2, 3);
const vectorB = Float32Array.of(4, 5, 6);

/** A write job as addWriteJob leaves it: its data in the job's hash, its vectors beside it. */
async function writeJob(jobId: string, writes: ItemWrite[]): Promise<void> {
  const { data, blob } = packWrites(writes);
  await redis.hset(`${prefix}:${WRITE_QUEUE}:${jobId}`, 'data', JSON.stringify(data));
  if (blob) await redis.set(vectorsKey(prefix, jobId), blob);
}

describe('InflightVectors', () => {
  it('reads a waiting vector back from its write job in another process, and drops a hint whose job is gone', async () => {
    prefix = uniqueName('inflight');
    const announcer = new InflightVectors(redis, prefix);
    await announcer.announce([upsert('a', 'hash-a', vectorA)], 'w-waiting');
    await announcer.announce([upsert('b', 'hash-b', vectorB)], 'w-gone');
    // Only the first job exists: the second was written and removed (or never added).
    await writeJob('w-waiting', [upsert('z', 'hash-z', vectorB), upsert('a', 'hash-a', vectorA)]);

    const other = new InflightVectors(redis, prefix);
    const hints = await other.lookup(['hash-a', 'hash-b']);
    expect(Object.fromEntries(hints)).toEqual({ 'hash-a': 'w-waiting', 'hash-b': 'w-gone' });
    expect(Object.fromEntries(await other.vectorsFrom(hints))).toEqual({ 'hash-a': vectorA });
    expect(await redis.hgetall(other.key), 'the hint naming a gone job is removed').toEqual({ 'hash-a': 'w-waiting' });
  });

  it('drops a hint whose job is still there but whose vectors were removed (its writes recorded)', async () => {
    prefix = uniqueName('inflight');
    await new InflightVectors(redis, prefix).announce([upsert('a', 'hash-a', vectorA)], 'w-written');
    await writeJob('w-written', [upsert('a', 'hash-a', vectorA)]);
    await redis.del(vectorsKey(prefix, 'w-written'));

    const other = new InflightVectors(redis, prefix);
    expect(Object.fromEntries(await other.vectorsFrom(await other.lookup(['hash-a'])))).toEqual({});
    expect(await redis.hgetall(other.key)).toEqual({});
  });

  it('reads the vectors of a job an older version queued, base64 inside its data', async () => {
    prefix = uniqueName('inflight');
    await new InflightVectors(redis, prefix).announce([upsert('a', 'hash-a', vectorA)], 'w-old');
    const { vector: _, ...write } = upsert('a', 'hash-a', vectorA);
    await redis.hset(`${prefix}:${WRITE_QUEUE}:w-old`, 'data', JSON.stringify({ writes: [{ ...write, vector: Buffer.from(vectorA.buffer).toString('base64') }] }));

    const other = new InflightVectors(redis, prefix);
    expect(Object.fromEntries(await other.vectorsFrom(await other.lookup(['hash-a'])))).toEqual({ 'hash-a': vectorA });
  });

  it('gives the announcing process the vectors from its memory, without reading the job back', async () => {
    prefix = uniqueName('inflight');
    const announcer = new InflightVectors(redis, prefix);
    await announcer.announce([upsert('a', 'hash-a', vectorA), { ...upsert('d', 'hash-d', vectorB), op: 'delete', vector: undefined }], 'w-held');
    // The job's data is not in Redis: only memory can answer.
    expect(Object.fromEntries(await announcer.vectorsFrom(await announcer.lookup(['hash-a'])))).toEqual({ 'hash-a': vectorA });
    expect(await redis.hgetall(announcer.key), 'only upserts hold a vector to announce').toEqual({ 'hash-a': 'w-held' });
  });
});
