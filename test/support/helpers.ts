import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Kafka, logLevel } from 'kafkajs';
import { inject } from 'vitest';
import { loadConfig, type Config } from '../../src/config/config.js';
import { deleteKeysUnder } from './redis-keys.js';

/** A name no other test (or earlier run) uses: topics, groups, queue prefixes, collections. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/**
 * Waits until `check` returns a value other than undefined/false, polling; fails with the last
 * observation when the deadline passes. Tests wait on conditions, never on fixed sleeps.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 60_000, intervalMs = 100 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await sleep(intervalMs);
  }
}

/** A port nothing listens on right now: a server is opened there and closed again. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function services(): { kafkaBrokers: string; redisUrl: string; postgresUrl: string } {
  return { kafkaBrokers: inject('kafkaBrokers'), redisUrl: inject('redisUrl'), postgresUrl: inject('postgresUrl') };
}

/** A config for one test: its own topic, group and queue prefix on the shared services. */
export function testConfig(env: Record<string, string | undefined> = {}): Config {
  const { kafkaBrokers, redisUrl, postgresUrl } = services();
  const name = uniqueName('t');
  return loadConfig({
    KAFKA_BROKERS: kafkaBrokers,
    REDIS_URL: redisUrl,
    POSTGRES_URL: postgresUrl,
    KAFKA_TOPICS: name,
    KAFKA_GROUP_ID: name,
    QUEUE_PREFIX: name,
    EMBED_BATCH_LINGER_MS: '20',
    WRITE_BATCH_LINGER_MS: '20',
    JOB_BACKOFF_MS: '100',
    LOG_LEVEL: 'silent',
    ...env,
  });
}

export function testKafka(brokers: string[]): Kafka {
  return new Kafka({ clientId: 'indexer-tests', brokers, logLevel: logLevel.NOTHING });
}

/** Deletes every Redis key under a queue prefix (test cleanup). */
export async function deletePrefix(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl);
  try {
    await deleteKeysUnder(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

/** Removes what a test config created on the shared services: its Redis keys and Kafka topics. */
export async function removeTestResources(config: Config): Promise<void> {
  await deletePrefix(config.redis.url, config.redis.prefix);
  await deleteTopics(config.kafka.brokers, config.kafka.topics);
}

export async function deleteTopics(brokers: string[], topics: string[]): Promise<void> {
  const admin = testKafka(brokers).admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics, timeout: 10_000 });
  } catch {
    // best effort: the local broker is disposable
  } finally {
    await admin.disconnect();
  }
}
