/**
 * The prune: what it must never delete (an item its own source has, because another
 * backfill read the item meanwhile), and what a prune interrupted half-way reports when it resumes.
 */
import { describe, expect, it } from 'vitest';
import type { BackfillStatus } from '../../../src/backfill/backfill-control.js';
import type { Config } from '../../../src/config/config.js';
import { waitFor } from '../../support/helpers.js';
import { backfillControl, backfillEnded, writeNdjson as writeRows } from '../../support/backfill-harness.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

describe('prune', () => {
  const { cleanups, setup, start } = pipelineHarness('prune');

  const control = (config: Config) => backfillControl(config, cleanups);
  const writeNdjson = (lines: string[]) => writeRows(lines, cleanups);

  const finished = backfillEnded;

  it('never deletes an item its own source has because another backfill read that item during the pass', async () => {
    const { config, produce } = await setup({ BACKFILL_CONCURRENCY: '2', BACKFILL_PAGE_SIZE: '10' });
    // keep-1 and keep-2 are live items, in the sink before any backfill starts.
    const live = await start(config, ['ingest', 'embed', 'write']);
    await produce([upsertEvent('keep-1', 1, 'text of keep-1'), upsertEvent('keep-2', 1, 'text of keep-2')]);
    await waitFor('two live items written', async () => (await live.sink?.count()) === 2);
    await live.close();

    // Backfill A: the whole catalog (keep-1, keep-2 and a new item), with --prune. With no embed
    // workers running, A reads its file and then waits for its new item's job: phase "finishing".
    await start(config, ['backfill']);
    const c = control(config);
    const a = await c.start({ source: { kind: 'file', path: writeNdjson([upsertEvent('keep-1', 1, 'text of keep-1'), upsertEvent('keep-2', 1, 'text of keep-2'), upsertEvent('new-1', 1, 'text of new-1')]) }, prune: true });
    await waitFor('backfill A read its source and waits for its jobs', async () => (await c.status(a))?.progress?.phase === 'finishing');

    // Backfill B (no prune) re-reads keep-1 meanwhile, e.g. "re-index this one item": it finds
    // the sink holds it already and completes at once.
    const b = await c.start({ source: { kind: 'file', path: writeNdjson([upsertEvent('keep-1', 1, 'text of keep-1')]) } });
    const bDone = await finished(c, b);
    expect(bDone.state).toBe('completed');
    expect(bDone.progress).toMatchObject({ read: 1, enqueued: 0, unchanged: 1 });

    // Now A's job is written and A prunes.
    const workers = await start(config, ['embed', 'write']);
    const aDone: BackfillStatus = await finished(c, a);
    expect(aDone.state).toBe('completed');
    const held = new Set((await workers.sink?.retrieve(['keep-1', 'keep-2', 'new-1']))?.map((r) => r.itemId));
    expect([...held].sort(), 'keep-1 is in backfill A\'s source, yet A\'s prune deleted it (the item\'s single "bf" mark was overwritten by backfill B)').toEqual(['keep-1', 'keep-2', 'new-1']);
    expect(aDone.progress?.pruned).toBe(0);
  });

  it('reports every point the prune deleted when the prune was interrupted (shutdown) and resumed', async () => {
    const env = { BACKFILL_PAGE_SIZE: '100', EMBED_JOB_MAX_ITEMS: '100', BACKFILL_MAX_JOBS_IN_FLIGHT: '2', JOB_LOCK_MS: '2000' };
    const { config } = await setup(env);
    const c = control(config);
    // 600 items in the sink (more than one prune page of 512).
    const items = Array.from({ length: 600 }, (_, i) => upsertEvent(`p-${i}`, 1, `text of item ${i}`));
    const filler = await start(config, ['embed', 'write', 'backfill']);
    expect((await finished(c, await c.start({ source: { kind: 'file', path: writeNdjson(items) } }))).state).toBe('completed');
    await filler.close();

    // The catalog now has only p-0: 599 points to prune. Without embed workers the prune queues
    // its first page's deletes and waits at its bound of jobs in flight...
    const first = await start(config, ['backfill']);
    const id = await c.start({ source: { kind: 'file', path: writeNdjson([items[0] as string]) }, prune: true });
    await waitFor('the prune under way, at its bound', async () => (await c.status(id))?.progress?.phase === 'pruning' && (await first.embedQueue.getPrioritizedCount()) >= 2);
    // ...when its process shuts down: the job goes back to the queue at its checkpoint.
    await first.close();
    await waitFor('the backfill handed back', async () => ['delayed', 'waiting', 'prioritized'].includes((await c.status(id))?.state ?? ''));

    const second = await start(config, ['embed', 'write', 'backfill']);
    const done = await finished(c, id);
    expect(done.state).toBe('completed');
    expect(await second.sink?.count()).toBe(1);
    expect(done.progress?.pruned, 'the resumed prune overwrote the count of the deletes queued before the interruption').toBe(599);
  });
});
