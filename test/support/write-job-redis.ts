import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { createRedis } from '../../src/queue/connection.js';
import { WRITE_QUEUE, type ItemWrite, type WriteJobData } from '../../src/queue/jobs.js';
import { RedisServer } from './redis-server.js';

/** An upsert as the embed stage hands it to addWriteJob: its vector bought, `dimensions` floats. */
export function vectorUpsert(itemId: string, dimensions: number): ItemWrite {
  return {
    itemId,
    op: 'upsert',
    version: 1,
    updatedAt: undefined,
    acceptedAt: Date.now(),
    metadata: { title: itemId },
    contentHash: `hash-${itemId}`,
    model: 'm',
    vector: Float32Array.from({ length: dimensions }, (_, i) => i + 1),
    embeddedAt: new Date().toISOString(),
  };
}

/**
 * A Redis of the test file's own (tests that flush it, fill its memory or change its eviction
 * policy must not touch the shared one) and upserts of `dimensions` floats to queue on it, with its
 * hooks registered: what a test opens through it is closed after the test, and the server's
 * settings and keys are reset.
 */
export function writeJobRedis(dimensions: number) {
  let server: RedisServer;
  let url = '';
  let admin: Redis;
  const closers: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    server = new RedisServer({ appendonly: 'no' });
    url = await server.start();
    admin = new Redis(url);
  });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await admin.config('SET', 'maxmemory', '0');
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.flushall();
  });
  afterAll(async () => {
    admin.disconnect();
    await server.remove();
  });
  const connection = (name: string): Redis => {
    const redis = createRedis(url, name);
    closers.push(async () => redis.disconnect());
    return redis;
  };
  return {
    url: () => url,
    /** A plain client on the server, for setting it up and looking at it. */
    admin: () => admin,
    upsert: (itemId: string) => vectorUpsert(itemId, dimensions),
    /** Closed after the test, in the reverse order of registration. */
    closeAfter: (close: () => Promise<void>) => void closers.push(close),
    connection,
    queueOn: (prefix: string): Queue<WriteJobData> => {
      const queue = new Queue<WriteJobData>(WRITE_QUEUE, { connection: connection(prefix), prefix });
      closers.push(() => queue.close());
      return queue;
    },
  };
}
