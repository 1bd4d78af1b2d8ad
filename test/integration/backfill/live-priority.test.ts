/**
 * Live latency under backfills: "a waiting live change never queues behind a backfill"
 * (BACKFILL_PRIORITY) and BACKFILL_MAX_JOBS_IN_FLIGHT "keeps them from holding every worker slot";
 * ingest's back-pressure (QUEUE_HIGH_WATER) counts live jobs only, so concurrent backfills never
 * stop live ingest.
 */
import { describe, it } from 'vitest';
import { waitFor } from '../../support/helpers.js';
import { backfillControl, writeNdjson } from '../../support/backfill-harness.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

describe('live events under backfills', () => {
  const { cleanups, setup, start } = pipelineHarness('live');

  it('queues a live event at once while concurrent backfills, each within its default bound, have their jobs waiting', async () => {
    // Defaults except the number of backfills one process runs (QUEUE_HIGH_WATER 64,
    // BACKFILL_MAX_JOBS_IN_FLIGHT 8): nine backfills keep 9 x 8 = 72 jobs queued.
    const { config, produce } = await setup({ BACKFILL_CONCURRENCY: '9' });
    const front = await start(config, ['ingest', 'backfill']);
    const c = backfillControl(config, cleanups);
    for (let b = 0; b < 9; b++) {
      const file = writeNdjson(Array.from({ length: 100 }, (_, i) => upsertEvent(`bulk-${b}-${i}`, 1, `bulk text ${b} ${i}`)), cleanups);
      await c.start({ source: { kind: 'file', path: file }, pageSize: 10 });
    }
    // No embed worker yet: every backfill fills its bound and waits.
    await waitFor('the nine backfills at their bounds', async () => (await front.embedQueue.getPrioritizedCount()) >= 72);

    await produce([upsertEvent('urgent-1', 1, 'live text that must not wait')]);
    // Ingest's high-water mark must not count the backfills' prioritized jobs.
    await waitFor('the live event queued while the backfills wait', async () => (await front.embedQueue.getWaitingCount()) === 1, { timeoutMs: 20_000 });
  });
});
