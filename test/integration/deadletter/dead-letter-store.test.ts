/**
 * The dead-letter store on a real Redis: an oversized original is kept as a bounded prefix with
 * its full size (issue 10), entries are listed by stage and code, walked and deleted.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterStore, MAX_ORIGINAL_BYTES, type DeadLetter } from '../../../src/deadletter/dead-letter-store.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

const letter = (over: Partial<DeadLetter> = {}): DeadLetter => ({ stage: 'ingest', code: 'EVENT_INVALID', reason: 'not JSON', itemId: undefined, original: Buffer.from('bad'), key: null, source: 't/0@1', ...over });

describe('DeadLetterStore', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  function open(): { store: DeadLetterStore; redis: Redis } {
    const { redisUrl } = services();
    const prefix = uniqueName('dlq-store');
    const redis = new Redis(redisUrl);
    cleanups.push(async () => {
      await deletePrefix(redisUrl, prefix);
      await redis.quit();
    });
    return { store: new DeadLetterStore(redis, prefix), redis };
  }

  it('keeps only the first MAX_ORIGINAL_BYTES of an oversized original, and says so with its full size', async () => {
    const { store, redis } = open();
    const huge = Buffer.alloc(5 * 1024 * 1024, 'x');
    const exact = Buffer.alloc(MAX_ORIGINAL_BYTES, 'y');
    await store.add([letter({ original: huge, reason: 'too big' }), letter({ original: exact, reason: 'at the cap' })]);

    const [cut, whole] = await store.list(10);
    expect(cut).toMatchObject({ reason: 'too big', truncated: true, originalBytes: huge.length });
    expect(cut?.original.length).toBe(MAX_ORIGINAL_BYTES);
    expect(cut?.original.equals(huge.subarray(0, MAX_ORIGINAL_BYTES))).toBe(true);
    expect(whole).toMatchObject({ reason: 'at the cap', truncated: false, originalBytes: MAX_ORIGINAL_BYTES });
    expect(whole?.original.equals(exact)).toBe(true);
    // What Redis holds for the cut entry is bounded (base64 of the prefix plus the other fields).
    expect(await redis.memory('USAGE', store.key)).toBeLessThan(2 * 1024 * 1024);
  });

  it('lists, gets, walks and removes entries by stage and code', async () => {
    const { store } = open();
    await store.add([
      letter({ stage: 'ingest', code: 'EVENT_INVALID', reason: 'a' }),
      letter({ stage: 'write', code: 'SINK_REJECTED', reason: 'b' }),
      letter({ stage: 'embed', code: 'EMBEDDINGS_REJECTED', reason: 'c' }),
      letter({ stage: 'write', code: 'JOB_STALLED', reason: 'd' }),
    ]);
    expect((await store.list(10, { stage: 'write' })).map((e) => e.reason)).toEqual(['b', 'd']);
    expect((await store.list(10, { stage: 'write', code: 'JOB_STALLED' })).map((e) => e.reason)).toEqual(['d']);
    expect((await store.list(1, { stage: 'write' })).map((e) => e.reason)).toEqual(['b']);

    const all = await store.list(10);
    expect(await store.get(all[2]?.id as string)).toMatchObject({ reason: 'c', stage: 'embed' });
    expect(await store.get('1-1')).toBeUndefined();

    // A walk that deletes what it read goes on past it, and stops at the newest entry when it began.
    const walked: string[] = [];
    for await (const page of store.pages({}, 1)) {
      walked.push(...page.map((e) => e.reason));
      await store.remove(page.map((e) => e.id));
      if (walked.length === 1) await store.add([letter({ reason: 'added during the walk' })]);
    }
    expect(walked).toEqual(['a', 'b', 'c', 'd']);
    expect((await store.list(10)).map((e) => e.reason)).toEqual(['added during the walk']);
  });
});
