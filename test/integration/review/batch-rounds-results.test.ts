/**
 * Adversarial review of the batch rounds (src/ingest/batch-rounds.ts, commit 07a9927): what one
 * round makes of an item that several partitions of the same fetch bring (a re-keyed topic, two
 * producers), of invalid events spread over partitions, and of a Debezium TRUNCATE on one
 * partition with the table's rows on others. Events are produced before ingest starts, so the
 * first fetch carries every partition's batch, and those batches form one round.
 */
import { describe, expect, it } from 'vitest';
import type { Pipeline } from '../../../src/pipeline/pipeline.js';
import { waitFor } from '../../support/helpers.js';
import { consumed, pipelineHarness, queuedChanges, queuedJobs, sendToPartitions, skipped, upsertEvent, type PlacedMessage } from '../../support/pipeline-harness.js';

const upsert = (partition: number, id: string, version: number, text: string): PlacedMessage => ({ partition, key: id, value: upsertEvent(id, version, text) });
const remove = (partition: number, id: string, version: number): PlacedMessage => ({ partition, key: id, value: JSON.stringify({ id, op: 'delete', version }) });

const counterSum = async (p: Pipeline, counter: 'eventsSkipped' | 'eventsInvalid') => (await p.metrics[counter].get()).values.reduce((sum, v) => sum + v.value, 0);

describe('review: one round, several partitions', () => {
  const { setup, start } = pipelineHarness('review-rounds');

  it('keeps the newest change of an item several partitions bring in one round, queues it once, and the skip reasons add up', async () => {
    const { stub, config } = await setup({}, {}, 4);
    await sendToPartitions(config, [
      // x: three versions on three partitions, the newest in the middle one.
      upsert(0, 'x', 1, 'x one'),
      upsert(1, 'x', 3, 'x three'),
      upsert(2, 'x', 2, 'x two'),
      // y and z: a delete and an upsert at one version, in both orders: the delete wins.
      upsert(0, 'y', 5, 'y upsert'),
      remove(1, 'y', 5),
      remove(0, 'z', 4),
      upsert(1, 'z', 4, 'z upsert'),
      // w: coalesced inside partition 0, and its newest repeated on partition 3.
      upsert(0, 'w', 1, 'w one'),
      upsert(0, 'w', 2, 'w two'),
      upsert(3, 'w', 2, 'w two'),
      // One item of each partition alone.
      ...[0, 1, 2, 3].map((p) => upsert(p, `solo-${p}`, 1, `solo ${p}`)),
    ]);
    const ingest = await start(config, ['ingest']);
    await waitFor('every event ingested', async () => (await consumed(ingest)) === 14);

    const jobs = await queuedJobs(ingest);
    const changes = jobs.flatMap((job) => job.changes);
    const partitions = new Set(changes.map((c) => c.source?.split('@')[0]));
    expect(partitions.size, 'the round should have gathered every partition').toBe(4);
    expect(jobs, 'the four partitions\' batches made one round, so one job').toHaveLength(1);
    expect(
      changes.map((c) => [c.itemId, c.op, c.version]).sort(),
      'each item queued once, at its newest change',
    ).toEqual([
      ['solo-0', 'upsert', 1],
      ['solo-1', 'upsert', 1],
      ['solo-2', 'upsert', 1],
      ['solo-3', 'upsert', 1],
      ['w', 'upsert', 2],
      ['x', 'upsert', 3],
      ['y', 'delete', 5],
      ['z', 'delete', 4],
    ]);
    // 14 read: 1 coalesced inside partition 0 (w), 5 across partitions (x twice, y, z, w), 8 queued.
    expect(await skipped(ingest, 'coalesced')).toBe(6);
    expect(await queuedChanges(ingest)).toBe(8);
    expect((await counterSum(ingest, 'eventsSkipped')) + (await counterSum(ingest, 'eventsInvalid')) + (await queuedChanges(ingest))).toBe(await consumed(ingest));

    const workers = await start(config, ['embed', 'write']);
    await waitFor('the queued changes written', async () => (await workers.sink?.retrieve(['x', 'w', 'solo-0', 'solo-1', 'solo-2', 'solo-3']))?.length === 6);
    const [x] = (await workers.sink?.retrieve(['x'])) ?? [];
    expect(x?.payload.version).toBe(3);
    expect(await workers.sink?.retrieve(['y', 'z'])).toHaveLength(0);
    expect(stub.served.flatMap((r) => r.inputs).sort(), 'no superseded text was embedded').toEqual(['solo 0', 'solo 1', 'solo 2', 'solo 3', 'w two', 'x three']);
  });

  it('dead-letters each invalid event of a round once, whichever partition brought it, and indexes the rest', async () => {
    const { config } = await setup({}, {}, 4);
    const invalid: PlacedMessage[] = [0, 1, 2, 3].flatMap((p) => [
      { partition: p, key: `bad-json-${p}`, value: `{"id": "bad-json-${p}", not json` },
      { partition: p, key: `no-version-${p}`, value: JSON.stringify({ id: `no-version-${p}`, op: 'upsert', version: 'soon', text: 'x' }) },
    ]);
    // One item with a version on partition 0 and, on partition 1, only an updated_at: the item
    // state refuses the second source it meets (a dead letter made in the round, not in a batch).
    const conflict: PlacedMessage[] = [
      upsert(0, 'two-sources', 7, 'with a version'),
      { partition: 1, key: 'two-sources', value: JSON.stringify({ id: 'two-sources', op: 'upsert', updated_at: '2026-01-01T00:00:00Z', text: 'with a time' }) },
    ];
    const valid = [0, 1, 2, 3].flatMap((p) => [upsert(p, `ok-${p}-a`, 1, `ok ${p} a`), upsert(p, `ok-${p}-b`, 1, `ok ${p} b`)]);
    await sendToPartitions(config, [...valid.slice(0, 4), ...invalid, ...conflict, ...valid.slice(4)]);
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    const total = invalid.length + conflict.length + valid.length;
    await waitFor('every event ingested', async () => (await consumed(pipeline)) === total);
    const ids = valid.map((m) => m.key as string);
    await waitFor('the valid events indexed', async () => (await pipeline.sink?.retrieve([...ids, 'two-sources']))?.length === ids.length + 1);

    const letters = (await pipeline.deadLetters.list(1000)).filter((l) => l.stage === 'ingest');
    const bySource = new Map<string, number>();
    for (const letter of letters) bySource.set(letter.source ?? '', (bySource.get(letter.source ?? '') ?? 0) + 1);
    expect([...bySource.values()].every((n) => n === 1), `a dead letter stored twice: ${JSON.stringify([...bySource])}`).toBe(true);
    expect(letters).toHaveLength(invalid.length + 1);
    expect(new Set(letters.map((l) => l.source?.split('@')[0]))).toEqual(new Set([0, 1, 2, 3].map((p) => `${config.kafka.topics[0]}/${p}`)));
    expect(letters.filter((l) => l.itemId === 'two-sources')).toHaveLength(1);
    expect(await counterSum(pipeline, 'eventsInvalid')).toBe(invalid.length + 1);
  });

  it('deletes every row older than a TRUNCATE that another partition of the same round brings, and keeps the newer rows and other tables', async () => {
    const { config } = await setup({ EVENT_TEXT_TEMPLATE: '{title}\\n{description}' }, {}, 4);
    const source = (table: string, lsn: number) => ({ version: '3.4.3.Final', connector: 'postgresql', name: 'shop', ts_ms: 1_764_000_000_000, db: 'shop', schema: 'public', table, lsn });
    const create = (partition: number, table: string, id: number, lsn: number): PlacedMessage => ({
      partition,
      key: JSON.stringify({ id }),
      value: JSON.stringify({ before: null, after: { id, title: `item ${id}`, description: `of ${table}` }, source: source(table, lsn), op: 'c', ts_ms: 1_764_000_000_001 }),
    });
    const truncate = (partition: number, table: string, lsn: number): PlacedMessage => ({ partition, key: null, value: JSON.stringify({ before: null, after: null, source: source(table, lsn), op: 't', ts_ms: 1_764_000_000_001 }) });
    await sendToPartitions(config, [
      create(1, 'products', 10, 100),
      create(2, 'products', 11, 110),
      create(3, 'products', 12, 150),
      truncate(0, 'products', 200),
      create(1, 'products', 13, 250),
      create(2, 'articles', 90, 120),
    ]);
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    await waitFor('every event ingested', async () => (await consumed(pipeline)) === 6);
    const ids = async () => {
      const found: string[] = [];
      for await (const record of (pipeline.sink as NonNullable<Pipeline['sink']>).scan()) found.push(record.itemId);
      return found.sort().join();
    };
    await waitFor('only the row after the truncate and the other table left', async () => (await ids()) === '13,90' && (await pipeline.embedQueue.count()) === 0 && (await pipeline.writeQueue.count()) === 0);
    for (const id of ['10', '11', '12']) expect(await pipeline.state.get(id), `row ${id}`).toMatchObject({ seen: 200, seenDeleted: true });
    expect(await pipeline.deadLetters.list(100)).toEqual([]);
  });
});
