/**
 * Re-indexing to a new model and vector size while searches run: a new generation filled from the
 * Kafka history while live events are written to both, switched to, the old one dropped. No
 * search fails, and none mixes the two models.
 */
import { connect } from '@lancedb/lancedb';
import { describe, expect, it } from 'vitest';
import { runningGenerations } from '../../support/backfill-harness.js';
import { createProvider } from '../../../src/embed/create-provider.js';
import { servingConfig } from '../../../src/reindex/reindex.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import { waitFor } from '../../support/helpers.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';
import { HARNESS_MODEL, pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

const NEW_MODEL = 'stub-embedding-v2';

describe('re-index to a new model', () => {
  const { cleanups, setup } = pipelineHarness('reindex');

  it('fills a new generation while live events reach both, switches with searches running, and drops the old one', async () => {
    const { config, produce } = await setup();
    const { reindexer, redis } = await runningGenerations(config, cleanups, ['ingest', 'embed', 'write', 'backfill']);

    await produce(Array.from({ length: 100 }, (_, i) => upsertEvent(`r-${i}`, 1, `catalog item ${i}, a product to find`, { n: i })));
    const count = async (generation: number) => (await reindexer.status()).find((s) => s.generation.id === generation)?.points;
    await waitFor('generation 1 indexed', async () => (await count(1)) === 100);

    // Searches run throughout: each embeds its query with the serving generation's model and
    // reads that generation's collection.
    const searches: { model: string; hitModels: string[] }[] = [];
    const failures: string[] = [];
    let searching = true;
    const loop = (async () => {
      while (searching) {
        try {
          const { config: serving } = await servingConfig(config, redis);
          const provider = createProvider(serving.embeddings);
          const sink = createSink(serving.sink, serving.embeddings.dimensions);
          try {
            await sink.open();
            const { vectors } = await provider.embed(['a product to find']);
            const hits = await sink.search(vectors[0] as Float32Array, 5);
            searches.push({ model: serving.embeddings.model, hitModels: hits.map((h) => String(h.payload.model)) });
          } finally {
            await sink.close();
            await provider.close();
          }
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
    })();
    cleanups.push(async () => {
      searching = false;
      await loop;
    });

    const generation = await reindexer.start({ model: NEW_MODEL, dimensions: 16 });
    expect(generation).toMatchObject({ id: 2, model: NEW_MODEL, dimensions: 16 });
    await expect(reindexer.switchTo()).rejects.toThrow(/has not caught up/);
    // Live events during the fill are written to both generations.
    await produce(Array.from({ length: 20 }, (_, i) => upsertEvent(`r-${100 + i}`, 1, `new item ${100 + i}, a product to find`)));
    await waitFor('both generations hold every item', async () => (await count(1)) === 120 && (await count(2)) === 120, { timeoutMs: 90_000 });
    await waitFor('generation 2 caught up', async () => (await reindexer.status()).find((s) => s.generation.id === 2)?.caughtUp === true);
    const searchesBefore = searches.length;

    await reindexer.switchTo();
    expect((await reindexer.registry()).serving).toBe(2);
    await waitFor('searches on the new generation', () => searches.slice(searchesBefore).filter((s) => s.model === NEW_MODEL).length >= 3);
    const dropped = await reindexer.dropOld();
    expect(dropped.map((g) => g.id)).toEqual([1]);
    searching = false;
    await loop;

    expect(failures).toEqual([]);
    for (const s of searches) expect(new Set(s.hitModels), `a search with ${s.model} returned ${s.hitModels.join(', ')}`).toEqual(new Set([s.model]));
    expect(searches.some((s) => s.model === HARNESS_MODEL)).toBe(true);
    expect(searches.at(-1)?.model).toBe(NEW_MODEL);
    // The old collection is gone; the new one holds everything.
    const db = await connect(config.sink.lancedb.uri);
    expect(await db.tableNames()).toEqual([generation.collection]);
    expect(await count(2)).toBe(120);
  });

  it('points the Qdrant serving alias at the new generation\'s collection in one step, and deletes the old collection', async () => {
    const contract = new QdrantContractServer();
    const url = await contract.start();
    cleanups.push(() => contract.stop());
    const { config, produce } = await setup({ SINK: 'qdrant', QDRANT_URL: url, QDRANT_SERVING_ALIAS: 'products-serving' });
    const { reindexer } = await runningGenerations(config, cleanups);
    await produce(Array.from({ length: 10 }, (_, i) => upsertEvent(`q-${i}`, 1, `qdrant item ${i}`)));

    const generation = await reindexer.start({ model: NEW_MODEL, dimensions: 16 });
    await waitFor('generation 2 caught up with every item', async () => {
      const s = (await reindexer.status()).find((x) => x.generation.id === 2);
      return s?.caughtUp === true && s.points === 10;
    });
    await reindexer.switchTo();
    const aliases = (await (await fetch(`${url}/aliases`)).json()) as { result: { aliases: { alias_name: string; collection_name: string }[] } };
    expect(aliases.result.aliases).toEqual([{ alias_name: 'products-serving', collection_name: generation.collection }]);
    const viaAlias = (await (await fetch(`${url}/collections/products-serving/points/count`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"exact":true}' })).json()) as { result: { count: number } };
    expect(viaAlias.result.count).toBe(10);

    await reindexer.dropOld();
    expect((await fetch(`${url}/collections/${config.sink.collection}`)).status).toBe(404);
    expect((await fetch(`${url}/collections/${generation.collection}`)).status).toBe(200);
  });
});
