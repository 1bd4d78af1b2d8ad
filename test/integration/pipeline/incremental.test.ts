/**
 * Invariants 1 and 2 on the real parts (Kafka, Redis, each sink): a scripted stream with
 * duplicates, bursts on hot items, out-of-order versions across partitions, deletes followed by
 * late stale upserts and metadata-only changes converges to the state computed from the event list
 * alone, and the embeddings API is paid exactly for the distinct latest texts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/config.js';
import { contentHash } from '../../../src/embed/content-hash.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { startPipeline, type Pipeline } from '../../../src/pipeline/pipeline.js';
import type { VectorSink } from '../../../src/sinks/vector-sink.js';
import { EmbeddingsStub, stubTokens } from '../../support/embeddings-stub.js';
import { removeTestResources, testConfig, uniqueName, waitFor } from '../../support/helpers.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';
import { expectedState, sendScripted, sinkMatchesEvents, type ScriptedEvent } from '../../support/stream.js';

const DIMENSIONS = 8;
const MODEL = 'stub-embedding';

/** Fails unless the sink holds exactly the expected items, versions, metadata and vectors. */
const sinkMatches = (sink: VectorSink, events: ScriptedEvent[]) => sinkMatchesEvents(sink, events, { model: MODEL, dimensions: DIMENSIONS });

describe.each(['lancedb', 'qdrant'] as const)('incremental semantics into %s', (sinkKind) => {
  const stub = new EmbeddingsStub({ dimensions: DIMENSIONS });
  const contract = new QdrantContractServer();
  const lancedbDir = mkdtempSync(join(tmpdir(), 'incremental-'));
  let config: Config;
  let topic: string;
  const running: Pipeline[] = [];
  const kafka = () => createKafka(config.kafka, silentLogger);
  const start = async (roles: ('ingest' | 'embed' | 'write')[]) => {
    const p = await startPipeline(config, { roles, logger: silentLogger });
    running.push(p);
    return p;
  };

  beforeAll(async () => {
    config = testConfig({
      EMBEDDINGS_BASE_URL: await stub.start(),
      EMBEDDINGS_MODEL: MODEL,
      EMBEDDINGS_DIMENSIONS: String(DIMENSIONS),
      SINK: sinkKind,
      QDRANT_URL: sinkKind === 'qdrant' ? await contract.start() : undefined,
      LANCEDB_URI: lancedbDir,
      COLLECTION: uniqueName('items'),
    });
    topic = config.kafka.topics[0] as string;
    await ensureTopic(kafka(), topic, 3);
  });

  afterAll(async () => {
    for (const p of running) await p.close();
    await stub.stop();
    await contract.stop();
    await removeTestResources(config);
    rmSync(lancedbDir, { recursive: true, force: true });
  });

  it('converges on a messy stream and pays only for the distinct latest texts', async () => {
    const events: ScriptedEvent[] = [];
    for (let i = 0; i < 12; i++) events.push({ id: `item-${i}`, op: 'upsert', version: 1, text: `item ${i} first text`, metadata: { n: i } });
    events.push(...events.slice(0, 4).map((e) => ({ ...e }))); // duplicates
    for (let v = 2; v <= 25; v++) events.push({ id: 'item-0', op: 'upsert', version: v, text: `hot item text v${v}`, metadata: { n: v } }); // a burst on a hot item
    events.push({ id: 'item-1', op: 'upsert', version: 5, text: 'item 1 at five', metadata: { n: 5 } });
    events.push({ id: 'item-1', op: 'upsert', version: 4, text: 'item 1 at four (late)', metadata: { n: 4 }, partition: 2 }); // out of order, another partition
    events.push({ id: 'item-2', op: 'delete', version: 3 });
    events.push({ id: 'item-2', op: 'upsert', version: 2, text: 'item 2 stale resurrection', partition: 1 }); // stale upsert after a delete
    events.push({ id: 'item-3', op: 'upsert', version: 2, text: 'shared text', metadata: {} });
    events.push({ id: 'item-4', op: 'upsert', version: 2, text: 'shared text', metadata: {} }); // identical texts: sent once

    // Everything is ingested before anything is embedded: the coalescing is then exact.
    const ingest = await start(['ingest']);
    await sendScripted(kafka(), topic, events);
    await waitFor('every event ingested', async () => (await ingest.metrics.eventsConsumed.get()).values[0]?.value === events.length);
    const workers = await start(['embed', 'write']);
    await waitFor('the sink matches the event list', async () => (await sinkMatches(workers.sink as VectorSink, events)) === true, { timeoutMs: 60_000 });

    const latestTexts = new Set([...expectedState(events).values()].map((e) => e.text));
    const sent = stub.served.flatMap((r) => r.inputs);
    expect(sent.sort()).toEqual([...latestTexts].sort());
    expect(stub.served.reduce((s, r) => s + r.inputs.reduce((t, x) => t + stubTokens(x), 0), 0)).toBe([...latestTexts].reduce((t, x) => t + stubTokens(x), 0));

    // Quiet stream, then: metadata-only changes, duplicates of the latest, late stale events.
    const requestsBefore = stub.served.length;
    const later: ScriptedEvent[] = [
      { id: 'item-5', op: 'upsert', version: 2, text: 'item 5 first text', metadata: { n: 5, price: 1 } },
      { id: 'item-6', op: 'upsert', version: 7, text: 'item 6 first text', metadata: { on_sale: true } },
      { id: 'item-1', op: 'upsert', version: 5, text: 'item 1 at five', metadata: { n: 5 } },
      { id: 'item-0', op: 'upsert', version: 3, text: 'hot item text v3', metadata: {}, partition: 0 },
      { id: 'item-2', op: 'upsert', version: 1, text: 'item 2 first text', partition: 2 },
      { id: 'item-7', op: 'delete', version: 1 },
    ];
    await sendScripted(kafka(), topic, later);
    const all = [...events, ...later];
    await waitFor('the later changes applied', async () => (await sinkMatches(workers.sink as VectorSink, all)) === true, { timeoutMs: 60_000 });
    // item-7's delete at version 1 equals its upsert's version: at an equal version a delete comes
    // after an upsert, so item-7 is deleted, as it would be had both arrived in one batch.
    expect(stub.served.length).toBe(requestsBefore);
    const item5 = await workers.state.get('item-5');
    expect(item5).toMatchObject({ writtenVersion: 2, deleted: false, contentHash: contentHash('item 5 first text', MODEL, DIMENSIONS) });
    expect(await workers.state.get('item-2')).toMatchObject({ writtenVersion: 3, deleted: true });
  });
});
