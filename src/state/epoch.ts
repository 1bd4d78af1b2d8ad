import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import { IndexerError } from '../core/errors.js';
import { withAdmin } from '../ingest/kafka.js';
import type { Logger } from '../observability/logger.js';

/**
 * The epoch: a key (`<prefix>:epoch`) ingest creates on its first start. Redis forgets the
 * indexer's data without a word (a restart without persistence, a failover to an empty replica, a
 * FLUSHALL), and a forgetful Redis looks exactly like a new one, while Kafka remembers the consumer
 * group's committed offsets: ingest would go on from them, and the events before them, whose jobs
 * were lost with Redis, would never be indexed. A missing epoch while the group has committed
 * offsets tells the two apart.
 */
export const epochKey = (prefix: string) => `${prefix}:epoch`;

/** Redis no longer holds what the indexer wrote (its epoch is gone): nothing built on it can go on. */
export class RedisDataLostError extends IndexerError {
  constructor(message: string) {
    super('REDIS_DATA_LOST', message, { canRetry: false });
  }
}

/** What to tell an operator whose Redis lost the indexer's data. */
export function recoveryAdvice(): string {
  return (
    'To recover: stop every ingest worker, run `indexer recover` (it resets the consumer group to the earliest offsets Kafka still retains and recreates the epoch), then start the workers; ' +
    "if Kafka no longer retains every item's latest event (time- or size-based retention rather than compaction), also run `indexer backfill start SOURCE --prune` from the catalog"
  );
}

/**
 * Reads the epoch, creating it on a first start. A missing epoch while `ranBefore` finds evidence
 * outside Redis that ingest ran (see committedOffsets) means Redis lost its data: refused, unless
 * the Redis still holds item state, which means a deployment from before the epoch existed (its
 * epoch is created now).
 */
export async function openEpoch(redis: Redis, prefix: string, ranBefore: () => Promise<string | undefined>, logger: Logger): Promise<string> {
  const key = epochKey(prefix);
  const existing = await redis.get(key);
  if (existing !== null) return existing;
  const evidence = await ranBefore();
  if (evidence !== undefined) {
    if (!(await holdsItemState(redis, prefix))) {
      throw new RedisDataLostError(
        `Redis holds no epoch for QUEUE_PREFIX=${prefix} (key ${key}), but ${evidence}: Redis lost the indexer's data ` +
          '(a restart without persistence, a failover to an empty replica, a flush), with the jobs of events whose offsets are committed. Starting would skip those events for good. ' +
          recoveryAdvice(),
      );
    }
    logger.warn({ key, evidence }, 'no epoch yet, but Redis holds item state (a deployment from before the epoch existed): creating it');
  }
  await writeEpoch(redis, prefix, evidence === undefined ? 'first start' : 'upgrade', 'NX');
  return (await redis.get(key)) as string;
}

/** Sets the epoch: NX on a start (two replicas starting together keep one), always on a recovery. */
export async function writeEpoch(redis: Redis, prefix: string, by: 'first start' | 'upgrade' | 'recover', mode: 'NX' | 'always'): Promise<void> {
  const value = JSON.stringify({ createdAt: new Date().toISOString(), id: randomUUID(), by });
  if (mode === 'NX') await redis.set(epochKey(prefix), value, 'NX');
  else await redis.set(epochKey(prefix), value);
}

/** Any item state under the prefix: a scan that stops at the first key found. */
async function holdsItemState(redis: Redis, prefix: string): Promise<boolean> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:item:*`, 'COUNT', 1000);
    if (keys.length > 0) return true;
    cursor = next;
  } while (cursor !== '0');
  return false;
}

/**
 * The witness outside Redis that ingest ran before: offsets the consumer group committed on its
 * topics (described in words, for the refusal), or undefined when it committed none. Only ingest
 * checks the epoch: processes of the other roles never create it, so a write-only process started
 * first cannot hide a loss from the ingest started after it.
 */
export async function committedOffsets(kafka: Kafka, groupId: string, topics: string[]): Promise<string | undefined> {
  const offsets = await withAdmin(kafka, (admin) => admin.fetchOffsets({ groupId, topics }));
  const committed = offsets.flatMap(({ topic, partitions }) => partitions.filter((p) => Number(p.offset) >= 0).map((p) => `${topic}/${p.partition}@${p.offset}`));
  if (committed.length === 0) return undefined;
  return `Kafka consumer group ${groupId} has committed offsets (${committed.slice(0, 5).join(', ')}${committed.length > 5 ? ', ...' : ''})`;
}
