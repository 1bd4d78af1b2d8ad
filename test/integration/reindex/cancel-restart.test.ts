/**
 * An operator cancels a re-index with `drop-old` (as the "re-index in progress" message tells
 * them to) and starts another one: the new generation gets a fresh id, hence a fresh consumer
 * group that reads the whole history (drop-old also deletes the old group).
 */
import { describe, expect, it } from 'vitest';
import { runningGenerations } from '../../support/backfill-harness.js';
import { waitFor } from '../../support/helpers.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

describe('cancel a re-index, start another', () => {
  const { cleanups, setup } = pipelineHarness('cancel');

  it('the second re-index is filled from the whole Kafka history', async () => {
    const { config, produce } = await setup();
    const { reindexer, statusOf } = await runningGenerations(config, cleanups);

    await produce(Array.from({ length: 10 }, (_, i) => upsertEvent(`h-${i}`, 1, `history item ${i}`)));
    await waitFor('generation 1 indexed', async () => (await statusOf(1))?.points === 10);
    await reindexer.start({ model: 'model-x', dimensions: 16 });
    await waitFor('the first re-index filled', async () => (await statusOf(2))?.points === 10 && (await statusOf(2))?.caughtUp === true, { timeoutMs: 90_000 });
    // Wrong model: cancel it, and re-index to the right one.
    expect((await reindexer.dropOld()).map((g) => g.id)).toEqual([2]);
    const second = await reindexer.start({ model: 'model-y', dimensions: 16 });

    let last: Awaited<ReturnType<typeof statusOf>>;
    const filled = await waitFor('the second re-index holds the 10 items of the history', async () => (last = await statusOf(second.id))?.points === 10, { timeoutMs: 45_000 }).then(
      () => true,
      () => false,
    );
    const switched = await reindexer.switchTo({ id: second.id }).then(
      () => 'switch accepted',
      (e: Error) => `switch refused: ${e.message}`,
    );
    expect(filled, `generation ${second.id} (${second.model}, consumer group ${config.kafka.groupId}.g${second.id}) holds ${last?.points} of 10 items after 45 s, Kafka lag ${last?.kafkaLag}, caughtUp ${last?.caughtUp}; ${switched}`).toBe(true);
  });
});
