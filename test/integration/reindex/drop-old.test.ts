/**
 * `drop-old` while a worker is still busy with the old generation (a slow embeddings request):
 * drop-old waits until every live worker has acknowledged the registry without it, so nothing of
 * the dropped generation is written after its keys are deleted.
 */
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { runningGenerations } from '../../support/backfill-harness.js';
import { waitFor } from '../../support/helpers.js';
import { HARNESS_MODEL, pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

async function keysMatching(redis: Redis, patterns: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const pattern of patterns) {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found.sort();
}

describe('drop-old while workers still work on the old generation', () => {
  const { cleanups, setup } = pipelineHarness('drop-old');

  it('leaves no keys of the dropped generation behind when its last embeddings request answers after the drop', async () => {
    const { config, produce, stub } = await setup();
    const { reindexer, redis, statusOf } = await runningGenerations(config, cleanups);

    await produce(Array.from({ length: 5 }, (_, i) => upsertEvent(`d-${i}`, 1, `item ${i}`)));
    await waitFor('generation 1 indexed', async () => (await statusOf(1))?.points === 5);
    await reindexer.start({ model: 'stub-embedding-v2', dimensions: 16 });
    await waitFor('generation 2 caught up', async () => (await statusOf(2))?.caughtUp === true && (await statusOf(2))?.points === 5, { timeoutMs: 90_000 });
    await reindexer.switchTo();

    // The embeddings API turns slow (8 s an answer, well under EMBEDDINGS_TIMEOUT_MS) just as a live event arrives.
    stub.options.latencyMs = 8_000;
    const servedBefore = stub.requests.filter((r) => r.model === HARNESS_MODEL && r.status === 200).length;
    await produce([upsertEvent('late-1', 1, 'a live event during drop-old')]);
    await waitFor('generation 1 has the live event in an active embed job', async () => (await statusOf(1))?.queued === 1);
    expect((await reindexer.dropOld()).map((g) => g.id)).toEqual([1]);
    await waitFor('the old model\'s slow request answered', () => stub.requests.filter((r) => r.model === HARNESS_MODEL && r.status === 200).length > servedBefore, { timeoutMs: 30_000 });
    stub.options.latencyMs = 0;

    // What drop-old deletes for generation 1 (src/reindex/reindex.ts deleteKeysOf).
    const prefix = config.redis.prefix;
    const patterns = [`${prefix}:item:*`, `${prefix}:embed:*`, `${prefix}:write:*`, `${prefix}:backfill:*`, `${prefix}:inflight`];
    let leaked: string[] = [];
    const reappeared = await waitFor('keys of the dropped generation reappear', async () => (leaked = await keysMatching(redis, patterns)).length > 0, { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    );
    const { connect } = await import('@lancedb/lancedb');
    const db = await connect(config.sink.lancedb.uri);
    const { readdirSync } = await import('node:fs');
    expect.soft({ tables: await db.tableNames(), files: readdirSync(config.sink.lancedb.uri) }, 'the dropped generation\'s table must stay gone').toEqual({ tables: [`${config.sink.collection}__g2`], files: [`${config.sink.collection}__g2.lance`] });
    expect.soft(reappeared ? leaked : [], 'keys of dropped generation 1, written by its pipeline after drop-old deleted them (nothing will ever remove them)').toEqual([]);
  });
});
