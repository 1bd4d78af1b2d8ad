/**
 * The state never claims more than the sink holds: a metadata-only change to a point the sink lost
 * is re-embedded rather than skipped, and `verify` finds (and `--repair` mends) drift between the
 * state and the sink.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/config.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { startPipeline, type Pipeline } from '../../../src/pipeline/pipeline.js';
import { buildPayload, type VectorSink } from '../../../src/sinks/vector-sink.js';
import { verify } from '../../../src/state/verify.js';
import { EmbeddingsStub, stubVector } from '../../support/embeddings-stub.js';
import { removeTestResources, testConfig, waitFor } from '../../support/helpers.js';
import { sendScripted, type ScriptedEvent } from '../../support/stream.js';

describe('state and sink drift', () => {
  const stub = new EmbeddingsStub({ dimensions: 8 });
  const dir = mkdtempSync(join(tmpdir(), 'drift-'));
  let config: Config;
  let pipeline: Pipeline;
  let sink: VectorSink;
  const send = (events: ScriptedEvent[]) => sendScripted(createKafka(config.kafka, silentLogger), config.kafka.topics[0] as string, events);
  const version = async (id: string) => (await sink.retrieve([id]))[0]?.payload.version;

  beforeAll(async () => {
    config = testConfig({ EMBEDDINGS_BASE_URL: await stub.start(), EMBEDDINGS_MODEL: 'stub-embedding', EMBEDDINGS_DIMENSIONS: '8', LANCEDB_URI: dir });
    await ensureTopic(createKafka(config.kafka, silentLogger), config.kafka.topics[0] as string, 2);
    pipeline = await startPipeline(config, { roles: ['ingest', 'embed', 'write'], logger: silentLogger });
    sink = pipeline.sink as VectorSink;
    await send(['a', 'b', 'c', 'd'].map((id) => ({ id, op: 'upsert', version: 1, text: `text of ${id}`, metadata: { price: 1 } })));
    await send([{ id: 'd', op: 'delete', version: 2 }]);
    await waitFor('a, b, c indexed and d deleted', async () => (await sink.count()) === 3 && (await pipeline.state.get('d')).deleted);
  });

  afterAll(async () => {
    await pipeline?.close();
    await stub.stop();
    await removeTestResources(config);
    rmSync(dir, { recursive: true, force: true });
  });

  it('re-embeds a metadata-only change whose point the sink lost', async () => {
    await sink.delete([{ itemId: 'a', version: 1 }]); // the sink loses a point behind the indexer's back
    const before = stub.served.length;
    await send([{ id: 'a', op: 'upsert', version: 2, text: 'text of a', metadata: { price: 2 } }]);
    await waitFor('a back in the sink at version 2', async () => (await version('a')) === 2);
    expect(stub.served.length).toBe(before + 1);
    expect((await sink.retrieve(['a']))[0]?.payload.price).toBe(2);
  });

  it('reports drift, and repairs it', async () => {
    const payload = (id: string, v: number) => buildPayload({}, { item_id: id, version: v, content_hash: 'x', model: 'stub-embedding', source_updated_at: null, embedded_at: 'e', indexed_at: 'i', text_tokens: 3, truncated: false });
    await sink.delete([{ itemId: 'b', version: 1 }]); // missing
    await sink.upsert([{ itemId: 'c', vector: stubVector('other', 8), payload: payload('c', 1) }]); // stale: another text
    await sink.upsert([{ itemId: 'd', vector: stubVector('d', 8), payload: payload('d', 1) }]); // deleted, but present
    await sink.upsert([{ itemId: 'stranger', vector: stubVector('s', 8), payload: payload('stranger', 1) }]); // untracked

    const report = await verify(pipeline.state, sink, { repair: false });
    expect(report.drift.map((d) => `${d.kind}:${d.itemId}`).sort()).toEqual(['deleted_but_present:d', 'missing:b', 'stale:c', 'untracked:stranger']);

    const repair = await verify(pipeline.state, sink, { repair: true });
    expect(repair.repaired).toEqual({ deleted: 1, forgotten: 2 });
    expect(await sink.retrieve(['d'])).toEqual([]);
    // The state forgot b and c: their replay is written, not skipped as already indexed.
    await send([
      { id: 'b', op: 'upsert', version: 1, text: 'text of b', metadata: { price: 1 } },
      { id: 'c', op: 'upsert', version: 1, text: 'text of c', metadata: { price: 1 } },
    ]);
    await waitFor('b and c re-indexed', async () => {
      const held = await sink.retrieve(['b', 'c']);
      return held.length === 2 && held.every((r) => r.payload.content_hash !== 'x');
    });
    expect((await verify(pipeline.state, sink, { repair: false })).drift.map((d) => d.kind)).toEqual(['untracked']);
  });
});
