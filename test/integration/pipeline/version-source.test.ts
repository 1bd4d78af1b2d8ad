/**
 * Issue 10, "Mixing version sources freezes an item": an event without `version` is ordered by its
 * updated_at (or Kafka timestamp) in epoch ms (~1.8e12); once accepted, every later `version` of
 * its item (42, 43, ...) looked older and was dropped, silently. The item state now records where
 * each item's versions come from and refuses (dead-letters) an event of another source.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Pipeline } from '../../../src/pipeline/pipeline.js';
import { ItemStateStore, type ObservedChange, type QueuedJobKeys } from '../../../src/state/item-state.js';
import { backfillControl, backfillEnded, writeNdjson } from '../../support/backfill-harness.js';
import { deletePrefix, services, uniqueName, waitFor } from '../../support/helpers.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

const stamped = (id: string, updatedAt: string, text: string) => JSON.stringify({ id, op: 'upsert', updated_at: updatedAt, text });
const versionOf = async (pipeline: Pipeline, itemId: string) => (await pipeline.sink?.retrieve([itemId]))?.[0]?.payload.version;
const deadLettersOf = async (pipeline: Pipeline, itemId: string) => (await pipeline.deadLetters.list(1000)).filter((l) => l.itemId === itemId);

describe('an item keeps one version source', () => {
  const { cleanups, setup, start } = pipelineHarness('version-source');

  it('dead-letters an event without `version` for an item ordered by `version`, and indexes the later versions', async () => {
    const { stub, config, produce } = await setup();
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    await produce([upsertEvent('vs-a', 1, 'first text')]);
    await waitFor('v1 indexed', async () => (await versionOf(pipeline, 'vs-a')) === 1);

    const unversioned = stamped('vs-a', '2026-11-20T10:00:00Z', 'text ordered by time');
    await produce([unversioned]);
    const [letter] = await waitFor('the unversioned event dead-lettered', async () => {
      const letters = await deadLettersOf(pipeline, 'vs-a');
      return letters.length > 0 && letters;
    });
    expect(letter).toMatchObject({ stage: 'ingest', code: 'EVENT_INVALID', key: Buffer.from('vs-a') });
    expect(letter?.original.toString('utf8')).toBe(unversioned);
    expect(letter?.reason).toMatch(/item "vs-a" is ordered by field "version", but this event by field "updated_at" \(no "version"\).*send "version" on every event of an item, or on none/);

    await produce([upsertEvent('vs-a', 2, 'second text')]);
    await waitFor('v2 indexed', async () => (await versionOf(pipeline, 'vs-a')) === 2, { timeoutMs: 30_000 });
    expect(stub.served.flatMap((r) => r.inputs)).not.toContain('text ordered by time');
  });

  it('dead-letters an event with `version` for an item ordered by updated_at, and indexes the later times', async () => {
    const { config, produce } = await setup();
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    await produce([stamped('vs-b', '2026-11-20T10:00:00Z', 'at ten')]);
    await waitFor('the ten o\'clock change indexed', async () => (await versionOf(pipeline, 'vs-b')) === Date.parse('2026-11-20T10:00:00Z'));

    await produce([upsertEvent('vs-b', 7, 'versioned text')]);
    const [letter] = await waitFor('the versioned event dead-lettered', async () => {
      const letters = await deadLettersOf(pipeline, 'vs-b');
      return letters.length > 0 && letters;
    });
    expect(letter).toMatchObject({ stage: 'ingest', code: 'EVENT_INVALID' });
    expect(letter?.reason).toMatch(/item "vs-b" is ordered by field "updated_at" \(no "version"\), but this event by field "version"/);

    await produce([stamped('vs-b', '2026-11-20T11:00:00Z', 'at eleven')]);
    await waitFor('the eleven o\'clock change indexed', async () => (await versionOf(pipeline, 'vs-b')) === Date.parse('2026-11-20T11:00:00Z'), { timeoutMs: 30_000 });
  });

  it('refuses only the odd event when both sources meet in one Kafka batch (no coalescing across sources)', async () => {
    const { config, produce } = await setup({}, {}, 1);
    // Produced before ingest starts, so that the three arrive together.
    await produce([upsertEvent('vs-c', 5, 'five'), stamped('vs-c', '2026-11-20T10:00:00Z', 'by time'), upsertEvent('vs-c', 6, 'six')]);
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    await waitFor('v6 indexed', async () => (await versionOf(pipeline, 'vs-c')) === 6, { timeoutMs: 30_000 });
    const letters = await waitFor('the timed event dead-lettered', async () => {
      const found = await deadLettersOf(pipeline, 'vs-c');
      return found.length > 0 && found;
    });
    expect(letters.map((l) => JSON.parse(l.original.toString('utf8')).text)).toEqual(['by time']);
  });

  it('dead-letters a backfill row of another source than its live item, and the live item goes on', async () => {
    const { config, produce } = await setup();
    const pipeline = await start(config, ['ingest', 'embed', 'write', 'backfill']);
    await produce([upsertEvent('vs-d', 3, 'live text')]);
    await waitFor('the live v3 indexed', async () => (await versionOf(pipeline, 'vs-d')) === 3);

    const row = stamped('vs-d', '2026-11-20T10:00:00Z', 'row ordered by time');
    const control = backfillControl(config, cleanups);
    const done = await backfillEnded(control, await control.start({ source: { kind: 'file', path: writeNdjson([row, upsertEvent('vs-fresh', 1, 'fresh row')], cleanups) } }));
    expect(done.state, done.failedReason).toBe('completed');
    expect(done.progress).toMatchObject({ read: 2, enqueued: 1, failed: 1 });
    const [letter] = await deadLettersOf(pipeline, 'vs-d');
    expect(letter).toMatchObject({ stage: 'backfill', code: 'EVENT_INVALID' });
    expect(letter?.original.toString('utf8')).toBe(row);
    expect(letter?.reason).toMatch(/ordered by field "version", but this event by field "updated_at"/);
    await waitFor('the fresh row indexed', async () => (await versionOf(pipeline, 'vs-fresh')) === 1);

    await produce([upsertEvent('vs-d', 4, 'live text again')]);
    await waitFor('the live v4 indexed', async () => (await versionOf(pipeline, 'vs-d')) === 4, { timeoutMs: 30_000 });
  });

  it('a prune deletes an item ordered by updated_at: its delete carries the item\'s own version', async () => {
    const { config, produce } = await setup();
    const pipeline = await start(config, ['ingest', 'embed', 'write', 'backfill']);
    await produce([stamped('vs-gone', '2026-11-20T10:00:00Z', 'not in the source any more')]);
    await waitFor('the live item indexed', async () => (await versionOf(pipeline, 'vs-gone')) !== undefined);

    const control = backfillControl(config, cleanups);
    const done = await backfillEnded(control, await control.start({ source: { kind: 'file', path: writeNdjson([stamped('vs-kept', '2026-11-20T10:00:00Z', 'in the source')], cleanups) }, prune: true }));
    expect(done.state, done.failedReason).toBe('completed');
    expect(done.progress).toMatchObject({ failed: 0, pruned: 1 });
    expect((await pipeline.sink?.retrieve(['vs-gone', 'vs-kept']))?.map((r) => r.itemId)).toEqual(['vs-kept']);
    expect(await deadLettersOf(pipeline, 'vs-gone')).toEqual([]);
  });
});

describe('OBSERVE and the recorded version source', () => {
  const prefix = uniqueName('vs-state');
  let redis: Redis;
  let state: ItemStateStore;
  // No embed job exists under this prefix: a change seen again counts as a replay, not a redelivery.
  const queued: QueuedJobKeys = { jobPrefix: `${prefix}:embed:`, failedKey: `${prefix}:embed:failed` };
  const change = (itemId: string, version: number, versionSource: ObservedChange['versionSource'], op: 'upsert' | 'delete' = 'upsert'): ObservedChange => ({ itemId, version, op, jobId: `e${randomUUID().slice(0, 8)}`, versionSource });

  beforeAll(() => {
    redis = new Redis(services().redisUrl);
    state = new ItemStateStore(redis, prefix);
  });
  afterEach(() => deletePrefix(services().redisUrl, prefix));
  afterAll(async () => void (await redis.quit()));

  it('records the source of the first change accepted and refuses another, leaving the state untouched', async () => {
    expect(await state.observe([change('a', 1, 'version')], queued)).toEqual(['queue']);
    expect(await redis.hget(state.key('a'), 'vs')).toBe('v');
    const before = await redis.hgetall(state.key('a'));
    expect(await state.observe([change('a', 1_795_168_800_000, 'updated_at'), change('a', 1_795_168_800_000, 'kafka_timestamp')], queued)).toEqual([
      { refused: 'other_version_source', itemVersionSource: 'version' },
      { refused: 'other_version_source', itemVersionSource: 'version' },
    ]);
    expect(await redis.hgetall(state.key('a'))).toEqual(before);
    expect(await state.observe([change('a', 2, 'version')], queued)).toEqual(['queue']);
  });

  it('refuses another source even where the change would have been older anyway', async () => {
    await state.observe([change('b', 1_795_168_800_000, 'updated_at')], queued);
    expect(await state.observe([change('b', 5, 'version')], queued)).toEqual([{ refused: 'other_version_source', itemVersionSource: 'updated_at' }]);
  });

  it('keeps the source first met in one call, and refuses the other change of the same item', async () => {
    expect(await state.observe([change('c', 1_795_168_800_000, 'kafka_timestamp'), change('c', 3, 'version')], queued)).toEqual(['queue', { refused: 'other_version_source', itemVersionSource: 'kafka_timestamp' }]);
    expect(await redis.hget(state.key('c'), 'vs')).toBe('k');
  });

  it('lets an item whose state predates the field take the source of its next accepted change', async () => {
    // State as written before `vs` existed: a change seen and written, no source recorded.
    await redis.hset(state.key('old-v'), 'seen', '4', 'sd', '0', 't', '0', 'wv', '4', 'del', '0');
    await redis.hset(state.key('old-t'), 'seen', '1795168800000', 'sd', '0', 't', '0');
    expect(await state.observe([change('old-v', 5, 'version'), change('old-t', 1_795_168_900_000, 'updated_at')], queued)).toEqual(['queue', 'queue']);
    expect([await redis.hget(state.key('old-v'), 'vs'), await redis.hget(state.key('old-t'), 'vs')]).toEqual(['v', 'u']);
    expect(await state.observe([change('old-v', 1_795_168_900_000, 'updated_at')], queued)).toEqual([{ refused: 'other_version_source', itemVersionSource: 'version' }]);
  });

  it('accepts a change whose version came from the item itself (a prune) whatever the source, and records none', async () => {
    await state.observe([change('p', 1_795_168_800_000, 'updated_at')], queued);
    expect(await state.observe([change('p', 1_795_168_800_000, undefined, 'delete')], queued)).toEqual(['queue']);
    expect(await redis.hmget(state.key('p'), 'vs', 'sd')).toEqual(['u', '1']);
    expect(await state.observe([change('fresh', 9, undefined, 'delete')], queued)).toEqual(['queue']);
    expect(await redis.hget(state.key('fresh'), 'vs')).toBeNull();
  });
});
