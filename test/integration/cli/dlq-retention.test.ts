/**
 * `indexer dlq retry` relies on the item state to skip a change whose item moved on. Dead letters
 * are kept indefinitely, tombstones for TOMBSTONE_RETENTION_SECONDS: retrying a letter older than
 * that could write the old vector of an item the source deleted since, for good (found by the
 * review of issue 10). Such letters are refused, with the way to replay the item instead.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { retryDeadLetters } from '../../../src/cli/dlq.js';
import type { Config } from '../../../src/config/config.js';
import { SinkError } from '../../../src/core/errors.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import type { VectorSink } from '../../../src/sinks/vector-sink.js';
import { waitFor } from '../../support/helpers.js';
import { interceptedSink } from '../../support/intercepted-sink.js';
import { HARNESS_DIMENSIONS, pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

function refusingSink(config: Config): { sink: VectorSink; stopRefusing: () => void } {
  let refusing = true;
  const sink = interceptedSink(createSink(config.sink, HARNESS_DIMENSIONS), () => {
    if (refusing) throw new SinkError('SINK_REJECTED', 'refused by the test sink', { canRetry: false });
  });
  return { sink, stopRefusing: () => (refusing = false) };
}

describe('dlq retry of a write letter older than its item tombstone', () => {
  const h = pipelineHarness('review-dlq');
  it('refuses a letter older than the tombstone retention, and the deleted item stays deleted', async () => {
    const { config, produce } = await h.setup({ TOMBSTONE_RETENTION_SECONDS: '2' });
    const refusing = refusingSink(config);
    const p = await h.start(config, ['ingest', 'embed', 'write'], refusing.sink);
    await produce([upsertEvent('gone', 1, 'text the sink refused once')]);
    const letter = await waitFor('v1 dead-lettered at the write stage', async () => (await p.deadLetters.list(10, { stage: 'write' })).find((l) => l.itemId === 'gone'));
    refusing.stopRefusing();
    await produce([JSON.stringify({ id: 'gone', op: 'delete', version: 2 })]);
    const redis = new Redis(config.redis.url);
    h.cleanups.push(async () => redis.disconnect());
    const key = `${config.redis.prefix}:item:gone`;
    await waitFor('the delete of v2 written (tombstone)', async () => (await redis.hget(key, 'del')) === '1', { timeoutMs: 30_000 });
    await waitFor('the tombstone expired (retention)', async () => (await redis.exists(key)) === 0, { timeoutMs: 10_000 });

    const report = await retryDeadLetters(config, redis, { ids: [letter.id], filter: {}, all: false });
    expect(report.stages.write).toMatchObject({ retried: 0, refused: 1 });
    expect(report.refused[0]?.why).toMatch(/TOMBSTONE_RETENTION_SECONDS/);
    expect((await p.deadLetters.list(10, { stage: 'write' })).map((l) => l.id), 'the refused letter is kept').toContain(letter.id);
    expect(await p.writeQueue.getJobCountByTypes('waiting', 'active', 'delayed', 'prioritized')).toBe(0);
    const held = await p.sink?.retrieve(['gone']);
    expect(held, 'the item deleted at v2 is back at v1').toEqual([]);
  }, 90_000);
});
