/**
 * The per-stage-and-code counts `indexer status` shows: kept beside the stream, one increment per
 * letter added and one decrement per letter removed, so they match the stream without reading it.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterStore, type DeadLetter } from '../../../src/deadletter/dead-letter-store.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

const letter = (over: Partial<DeadLetter> = {}): DeadLetter => ({ stage: 'ingest', code: 'EVENT_INVALID', reason: 'not JSON', itemId: undefined, original: Buffer.from('bad'), key: null, source: 't/0@1', ...over });

describe('DeadLetterStore counts by stage and code', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('counts letters as they are added and removed, and ignores ids already gone', async () => {
    const { redisUrl } = services();
    const prefix = uniqueName('dlq-counts');
    const redis = new Redis(redisUrl);
    cleanups.push(async () => {
      await deletePrefix(redisUrl, prefix);
      await redis.quit();
    });
    const store = new DeadLetterStore(redis, prefix);
    await store.add([letter(), letter(), letter({ stage: 'embed', code: 'EMBEDDINGS_REJECTED' }), letter({ stage: 'write', code: 'SINK_REJECTED' })]);
    expect(await store.countsByStageAndCode()).toEqual([
      { stage: 'ingest', code: 'EVENT_INVALID', count: 2 },
      { stage: 'embed', code: 'EMBEDDINGS_REJECTED', count: 1 },
      { stage: 'write', code: 'SINK_REJECTED', count: 1 },
    ]);

    const [first, , rejected] = await store.list(10);
    expect(await store.remove([first?.id as string, rejected?.id as string, '1-1'])).toBe(2);
    // Removing them again changes nothing.
    expect(await store.remove([first?.id as string])).toBe(0);
    expect(await store.countsByStageAndCode()).toEqual([
      { stage: 'ingest', code: 'EVENT_INVALID', count: 1 },
      { stage: 'write', code: 'SINK_REJECTED', count: 1 },
    ]);
    expect(await store.count()).toBe(2);
  });
});
