/**
 * Issue 10: the errors a real Redis and ioredis raise when Redis cannot take a write for now are
 * classed retryable, so the job boundary retries the job instead of dead-lettering paid-for work.
 */
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { isRetryable } from '../../../src/core/errors.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

const MEMORY_SETTINGS = ['maxmemory', 'maxmemory-policy'] as const;

async function memorySettings(redis: Redis): Promise<string[]> {
  const flat = (await redis.config('GET', ...MEMORY_SETTINGS)) as string[];
  const byName = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) byName.set(flat[i] as string, flat[i + 1] as string);
  return MEMORY_SETTINGS.flatMap((name) => [name, byName.get(name) as string]);
}

/** A port nothing listens on: a server is opened there and closed again. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('Redis errors that pass are retryable', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('an OOM reply from a real Redis under maxmemory with noeviction, to a command and to a script', async () => {
    const { redisUrl } = services();
    const prefix = uniqueName('oom');
    const redis = new Redis(redisUrl);
    const original = await memorySettings(redis);
    expect(original).toHaveLength(4);
    cleanups.push(async () => {
      // Restored again whatever happened above: the Redis is shared with every other test.
      await redis.config('SET', ...(original as [string, string, string, string]));
      expect(await memorySettings(redis)).toEqual(original);
      await deletePrefix(redisUrl, prefix);
      await redis.quit();
    });

    // One connection, commands sent back to back: Redis runs them in order, so other clients see
    // the tiny limit for as short a time as possible, and it is lifted by the last command.
    const [lowered, write, script, restored] = await Promise.allSettled([
      redis.config('SET', 'maxmemory', '1', 'maxmemory-policy', 'noeviction'),
      redis.set(`${prefix}:key`, 'value'),
      redis.eval("return redis.call('HSET', KEYS[1], 'seen', ARGV[1])", 1, `${prefix}:item:1`, '1'),
      redis.config('SET', ...(original as [string, string, string, string])),
    ]);
    expect(lowered.status).toBe('fulfilled');
    expect(restored.status).toBe('fulfilled');
    for (const outcome of [write, script]) {
      expect(outcome.status).toBe('rejected');
      const error = (outcome as PromiseRejectedResult).reason as Error;
      expect(error.name).toBe('ReplyError');
      expect(error.message).toMatch(/^OOM /);
      expect(isRetryable(error)).toBe(true);
    }
    expect(await redis.exists(`${prefix}:key`, `${prefix}:item:1`)).toBe(0);
  });

  it("ioredis's own errors for a lost connection", async () => {
    const { redisUrl } = services();
    const closed = new Redis(redisUrl);
    await closed.ping();
    closed.disconnect();
    const afterClose = await closed.get('any').catch((error: unknown) => error as Error);
    expect(afterClose).toBeInstanceOf(Error);
    expect((afterClose as Error).message).toBe('Connection is closed.');
    expect(isRetryable(afterClose)).toBe(true);

    const offline = new Redis(redisUrl, { lazyConnect: true, enableOfflineQueue: false });
    cleanups.push(async () => offline.disconnect());
    offline.on('error', () => undefined);
    const notWriteable = await offline.get('any').catch((error: unknown) => error as Error);
    expect((notWriteable as Error).message).toMatch(/^Stream isn't writeable/);
    expect(isRetryable(notWriteable)).toBe(true);

    const unreachable = new Redis({ host: '127.0.0.1', port: await closedPort(), maxRetriesPerRequest: 0, retryStrategy: () => 50 });
    cleanups.push(async () => unreachable.disconnect());
    unreachable.on('error', () => undefined);
    const gaveUp = await unreachable.get('any').catch((error: unknown) => error as Error);
    expect((gaveUp as Error).name).toBe('MaxRetriesPerRequestError');
    expect(isRetryable(gaveUp)).toBe(true);
  });
});
