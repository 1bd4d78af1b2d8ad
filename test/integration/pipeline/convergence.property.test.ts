/**
 * Property: for any sequence of change events (random ops, versions arriving in any order across
 * partitions, duplicates), the sink converges to the state computed from the events alone, and no
 * change is paid for twice. Runs on the real pipeline (Kafka, Redis, LanceDB); each run uses its
 * own item ids so runs never interfere.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/config.js';
import { contentHash } from '../../../src/embed/content-hash.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { startPipeline, type Pipeline } from '../../../src/pipeline/pipeline.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { removeTestResources, testConfig, waitFor } from '../../support/helpers.js';
import { expectedState, sendScripted, type ScriptedEvent } from '../../support/stream.js';

const TEXTS = ['red tent', 'blue tent', 'trail shoe', 'rain jacket', 'headlamp'];

/** Per item, distinct versions 1..n in a random order, some repeated (duplicates), interleaved. */
const eventStream = fc
  .array(
    fc.record({
      item: fc.integer({ min: 0, max: 3 }),
      changes: fc.array(fc.record({ op: fc.constantFrom('upsert', 'upsert', 'delete'), text: fc.constantFrom(...TEXTS), price: fc.integer({ min: 1, max: 3 }), partition: fc.integer({ min: 0, max: 2 }) }), { minLength: 1, maxLength: 5 }),
    }),
    { minLength: 1, maxLength: 4 },
  )
  .chain((items) => {
    const events = items.flatMap(({ item, changes }, k) =>
      changes.map((c, v) => ({ id: `i${item}-${k}`, op: c.op as 'upsert' | 'delete', version: v + 1, text: c.text, metadata: { price: c.price }, partition: c.partition })),
    );
    return fc.tuple(fc.shuffledSubarray(events, { minLength: events.length, maxLength: events.length }), fc.subarray(events));
  })
  .map(([shuffled, duplicates]) => [...shuffled, ...duplicates] as ScriptedEvent[]);

describe('convergence property (fast-check, real pipeline)', () => {
  const stub = new EmbeddingsStub({ dimensions: 8 });
  const dir = mkdtempSync(join(tmpdir(), 'property-'));
  let config: Config;
  let pipeline: Pipeline;
  let topic: string;

  beforeAll(async () => {
    config = testConfig({ EMBEDDINGS_BASE_URL: await stub.start(), EMBEDDINGS_MODEL: 'stub-embedding', EMBEDDINGS_DIMENSIONS: '8', LANCEDB_URI: dir });
    topic = config.kafka.topics[0] as string;
    await ensureTopic(createKafka(config.kafka, silentLogger), topic, 3);
    pipeline = await startPipeline(config, { roles: ['ingest', 'embed', 'write'], logger: silentLogger });
  });

  afterAll(async () => {
    await pipeline?.close();
    await stub.stop();
    await removeTestResources(config);
    rmSync(dir, { recursive: true, force: true });
  });

  it('converges to the newest version of every item and never pays twice for a change', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(eventStream, async (stream) => {
        const prefix = `r${run++}-`;
        const events = stream.map((e) => ({ ...e, id: prefix + e.id }));
        const before = stub.served.flatMap((r) => r.inputs).length;
        await sendScripted(createKafka(config.kafka, silentLogger), topic, events);
        const expected = expectedState(events);
        const ids = [...new Set(events.map((e) => e.id))];
        const sink = pipeline.sink;
        if (!sink) throw new Error('no sink');
        await waitFor(
          `convergence of ${JSON.stringify(events.map((e) => [e.id, e.op, e.version, e.text]))}`,
          async () => {
            const held = new Map((await sink.retrieve(ids)).map((r) => [r.itemId, r.payload]));
            return ids.every((id) => {
              const want = expected.get(id);
              const got = held.get(id);
              if (!want) return got === undefined;
              return got !== undefined && got.version === want.version && got.price === want.metadata.price && got.content_hash === contentHash(want.text, 'stub-embedding', 8);
            });
          },
          { timeoutMs: 30_000, intervalMs: 50 },
        );
        // Every embedding bought belongs to a distinct upsert (item, version): duplicates and
        // stale events never cost a request.
        const distinctUpserts = new Set(events.filter((e) => e.op === 'upsert').map((e) => `${e.id}@${e.version}`)).size;
        expect(stub.served.flatMap((r) => r.inputs).length - before).toBeLessThanOrEqual(distinctUpserts);
      }),
      { numRuns: 25, seed: Number(process.env.PROPERTY_SEED ?? 20261123) },
    );
  });
});
