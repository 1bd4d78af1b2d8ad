/**
 * Hostile rows: values that are not objects, deeply nested JSON, prototype keys, invalid UTF-8, in a
 * backfill file and as live events. Each bad record must be dead-lettered alone while the rest
 * flows; none may stop the backfill or the partition.
 */
import { appendFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/helpers.js';
import { backfillControl, backfillEnded, writeNdjson } from '../../support/backfill-harness.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

/** Within EVENT_MAX_BYTES (1 MiB): JSON.parse reads it, JSON.stringify overflows the stack. */
const DEPTH = 200_000;
const deepEvent = (id: string) => `{"id":"${id}","version":1,"text":"deep","metadata":{"x":${'['.repeat(DEPTH)}${']'.repeat(DEPTH)}}}`;

describe('hostile records', () => {
  const { cleanups, setup, start } = pipelineHarness('hostile');

  it('a backfill file with non-object values, deeply nested JSON, prototype keys and invalid UTF-8 dead-letters each bad line alone and writes the rest', async () => {
    const { config } = await setup();
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    const c = backfillControl(config, cleanups);
    const bad = ['null', '[]', '"a string"', '42', 'true', '{"id":{"nested":1},"version":1,"text":"x"}', deepEvent('deep-1'), '{"id":"v","version":-1,"text":"negative"}', '{"id":"v2","version":1e300,"text":"huge version"}'];
    const good = [upsertEvent('ok-1', 1, 'fine'), '{"id":"proto","version":1,"text":"proto","metadata":{"__proto__":{"polluted":true},"constructor":{"prototype":{"p":1}}}}', upsertEvent('ok-2', 1, 'also fine')];
    const file = writeNdjson([...bad, ...good], cleanups);
    // A last line of bytes that are not UTF-8.
    appendFileSync(file, Buffer.from([0xff, 0xfe, 0x0a]));
    const done = await backfillEnded(c, await c.start({ source: { kind: 'file', path: file } }));
    expect(done.state, done.failedReason).toBe('completed');
    expect(done.progress).toMatchObject({ read: bad.length + good.length + 1, failed: bad.length + 1, enqueued: good.length });
    expect((await pipeline.sink?.retrieve(['ok-1', 'ok-2', 'proto']))?.map((r) => r.itemId).sort()).toEqual(['ok-1', 'ok-2', 'proto']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('a deeply nested live event is dead-lettered alone and the events after it in its partition are indexed', async () => {
    const { config, produce } = await setup({}, {}, 1);
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    await produce([deepEvent('deep-live'), upsertEvent('after-deep', 1, 'the event after the deep one')]);
    await waitFor(
      'the event after the deep one written (the deep one dead-lettered)',
      async () => (await pipeline.sink?.retrieve(['after-deep']))?.length === 1,
      { timeoutMs: 30_000 },
    );
    const dead = await pipeline.deadLetters.list?.(10);
    expect(JSON.stringify(dead ?? [])).toContain('deep-live');
  });
});
