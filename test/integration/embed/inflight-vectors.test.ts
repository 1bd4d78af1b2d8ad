/**
 * The in-flight hint on a real Redis: a vector waiting in a write job is found by its content hash,
 * from the announcing process's memory or, in any other process, read back from the job; a hint
 * naming a job that is gone gives nothing and is removed.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { InflightVectors } from '../../../src/embed/inflight-vectors.js';
import { encodeVector, WRITE_QUEUE, type ItemWrite } from '../../../src/queue/jobs.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

let redis: Redis;
let prefix: string;

beforeAll(() => {
  redis = new Redis(services().redisUrl);
});
afterAll(() => redis.disconnect());
afterEach(() => deletePrefix(services().redisUrl, prefix));

const upsert = (itemId: string, hash: string, vector: string): ItemWrite => ({ itemId, op: 'upsert', version: 1, updatedAt: undefined, acceptedAt: 0, metadata: {}, contentHash: hash, model: 'm', vector, embeddedAt: '2026-11-24T00:00:00.000Z' });
const vectorA = encodeVector(Float32Array.of(1, 2, 3));
const vectorB = encodeVector(Float32Array.of(4, 5, 6));

describe('InflightVectors', () => {
  it('reads a waiting vector back from its write job in another process, and drops a hint whose job is gone', async () => {
    prefix = uniqueName('inflight');
    const announcer = new InflightVectors(redis, prefix);
    await announcer.announce([upsert('a', 'hash-a', vectorA)], 'w-waiting');
    await announcer.announce([upsert('b', 'hash-b', vectorB)], 'w-gone');
    // Only the first job exists: the second was written and removed (or never added).
    await redis.hset(`${prefix}:${WRITE_QUEUE}:w-waiting`, 'data', JSON.stringify({ writes: [upsert('a', 'hash-a', vectorA)] }));

    const other = new InflightVectors(redis, prefix);
    const hints = await other.lookup(['hash-a', 'hash-b']);
    expect(Object.fromEntries(hints)).toEqual({ 'hash-a': 'w-waiting', 'hash-b': 'w-gone' });
    expect(Object.fromEntries(await other.vectorsFrom(hints))).toEqual({ 'hash-a': vectorA });
    expect(await redis.hgetall(other.key), 'the hint naming a gone job is removed').toEqual({ 'hash-a': 'w-waiting' });
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
