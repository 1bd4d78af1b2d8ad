/**
 * Re-indexing: the "caught up" check that `switch` (and `reindex --wait`)
 * relies on, against topics as production has them: written by a transactional producer, and
 * holding only part of the history (retention).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/config.js';
import { runningGenerations } from '../../support/backfill-harness.js';
import { testKafka, uniqueName, waitFor } from '../../support/helpers.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

describe('when is a new generation caught up', () => {
  const { cleanups, setup } = pipelineHarness('caught-up');

  const running = (config: Config) => runningGenerations(config, cleanups, ['ingest', 'embed', 'write', 'backfill']);

  it('a topic written by a transactional producer (Debezium, Kafka Connect exactly-once): the new generation, having indexed everything, reports caught up', async () => {
    const { config } = await setup({}, {}, 2);
    const producer = testKafka(config.kafka.brokers).producer({ transactionalId: uniqueName('tx'), idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      const tx = await producer.transaction();
      await tx.send({ topic: config.kafka.topics[0] as string, messages: Array.from({ length: 6 }, (_, i) => ({ partition: i % 2, key: `tx-${i}`, value: upsertEvent(`tx-${i}`, 1, `transactional item ${i}`) })) });
      await tx.commit();
    } finally {
      await producer.disconnect();
    }
    const { reindexer, statusOf } = await running(config);
    await waitFor('generation 1 indexed', async () => (await statusOf(1))?.points === 6);
    await reindexer.start({ model: 'stub-embedding-v2', dimensions: 16 });
    await waitFor('generation 2 holds every item, its queues empty', async () => {
      const s = await statusOf(2);
      return s?.points === 6 && s.queued === 0;
    }, { timeoutMs: 90_000 });

    let last: Awaited<ReturnType<typeof statusOf>>;
    const caughtUp = await waitFor('generation 2 caught up', async () => (last = await statusOf(2))?.caughtUp === true, { timeoutMs: 30_000 }).then(
      () => true,
      () => false,
    );
    expect(caughtUp, `generation 2 holds all 6 items with nothing queued, yet after 30 s: Kafka lag ${last?.kafkaLag}, caughtUp ${last?.caughtUp}; \`switch\` is refused and \`reindex --wait\` never returns`).toBe(true);
  });

  it('a topic whose retention has dropped the old events: a re-index without a source is refused, and a switch to a generation lacking items needs --force', async () => {
    const { config, produce } = await setup({}, {}, 2);
    const { reindexer, statusOf } = await running(config);
    await produce(Array.from({ length: 10 }, (_, i) => upsertEvent(`old-${i}`, 1, `item from last month ${i}`)));
    await waitFor('generation 1 indexed', async () => (await statusOf(1))?.points === 10);
    // Retention deletes the segments holding those events (as `retention.ms` does after a week).
    const admin = testKafka(config.kafka.brokers).admin();
    await admin.connect();
    try {
      const topic = config.kafka.topics[0] as string;
      await admin.deleteTopicRecords({ topic, partitions: (await admin.fetchTopicOffsets(topic)).map((p) => ({ partition: p.partition, offset: p.high })) });
    } finally {
      await admin.disconnect();
    }

    // Without a source the Kafka history is all a new generation has: refused at once.
    await expect(reindexer.start({ model: 'stub-embedding-v2', dimensions: 16 })).rejects.toThrow(/no longer holds its whole history .*give --source/);

    // With a source that lacks items, it catches up but holds fewer points: the switch is refused.
    const dir = mkdtempSync(join(tmpdir(), 'caught-up-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'part.ndjson');
    writeFileSync(file, `${[0, 1, 2].map((i) => upsertEvent(`old-${i}`, 1, `item from last month ${i}`)).join('\n')}\n`);
    await reindexer.start({ model: 'stub-embedding-v2', dimensions: 16, source: { kind: 'file', path: file } });
    await waitFor('generation 2 caught up', async () => (await statusOf(2))?.caughtUp === true && (await statusOf(2))?.points === 3);
    await expect(reindexer.switchTo()).rejects.toThrow(/holds 3 points, the serving generation 1 holds 10/);
    expect((await reindexer.switchTo({ force: true })).id).toBe(2);
  });
});
