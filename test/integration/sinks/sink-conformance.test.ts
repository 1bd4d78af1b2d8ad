/**
 * One suite, every sink: LanceDB (embedded), the Qdrant contract server, and a real Qdrant when
 * QDRANT_URL is set. A sink that passes it can stand behind the VectorSink port. Every collection
 * a test creates is dropped after it, passed or failed, and the last test checks that none is left.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Distance } from '../../../src/config/config.js';
import { SchemaMismatchError } from '../../../src/core/errors.js';
import { LanceDbSink } from '../../../src/sinks/lancedb/lancedb-sink.js';
import { QdrantSink } from '../../../src/sinks/qdrant/qdrant-sink.js';
import { buildPayload, type SinkRecord, type VectorSink } from '../../../src/sinks/vector-sink.js';
import { stubVector } from '../../support/embeddings-stub.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';
import { uniqueName } from '../../support/helpers.js';

const DIMENSIONS = 16;

interface SinkFactory {
  name: string;
  setUp(): Promise<void>;
  make(collection: string, dimensions?: number, distance?: Distance): VectorSink;
  /** Every collection (or table) the store holds now: what the suite checks it left behind. */
  collections(): Promise<string[]>;
  tearDown(): Promise<void>;
}

/** GET /collections, as Qdrant answers it (the contract server too). */
async function qdrantCollections(url: string, apiKey?: string): Promise<string[]> {
  const response = await fetch(`${url}/collections`, { headers: apiKey ? { 'api-key': apiKey } : {} });
  if (!response.ok) throw new Error(`GET ${url}/collections answered ${response.status}: ${await response.text()}`);
  const body = (await response.json()) as { result: { collections: { name: string }[] } };
  return body.result.collections.map((c) => c.name);
}

const lancedbDir = mkdtempSync(join(tmpdir(), 'lancedb-conformance-'));
const contract = new QdrantContractServer();
let contractUrl = '';

const factories: SinkFactory[] = [
  {
    name: 'lancedb',
    setUp: async () => {},
    make: (collection, dimensions = DIMENSIONS, distance = 'cosine') => new LanceDbSink({ name: collection, dimensions, distance }, lancedbDir),
    collections: async () => {
      const db = await lancedb.connect(lancedbDir);
      try {
        return await db.tableNames();
      } finally {
        db.close();
      }
    },
    tearDown: async () => rmSync(lancedbDir, { recursive: true, force: true }),
  },
  {
    name: 'qdrant (contract server)',
    setUp: async () => {
      contractUrl = await contract.start();
    },
    make: (collection, dimensions = DIMENSIONS, distance = 'cosine') => new QdrantSink({ name: collection, dimensions, distance }, { url: contractUrl, apiKey: undefined, timeoutMs: 5000 }),
    collections: () => qdrantCollections(contractUrl),
    tearDown: () => contract.stop(),
  },
];
const realQdrant = process.env.QDRANT_URL;
if (realQdrant) {
  factories.push({
    name: `qdrant (real, ${realQdrant})`,
    setUp: async () => {},
    make: (collection, dimensions = DIMENSIONS, distance = 'cosine') =>
      new QdrantSink({ name: collection, dimensions, distance }, { url: realQdrant, apiKey: process.env.QDRANT_API_KEY || undefined, timeoutMs: 10_000 }),
    collections: () => qdrantCollections(realQdrant.replace(/\/+$/, ''), process.env.QDRANT_API_KEY || undefined),
    tearDown: async () => {},
  });
}

function record(itemId: string, version: number, text: string, metadata: Record<string, unknown> = {}): SinkRecord {
  return {
    itemId,
    vector: stubVector(text, DIMENSIONS),
    payload: buildPayload(metadata, {
      item_id: itemId,
      version,
      content_hash: `hash-of-${text}`,
      model: 'stub-embedding',
      source_updated_at: '2026-11-20T10:00:00Z',
      embedded_at: '2026-11-20T10:00:01.000Z',
      indexed_at: '2026-11-20T10:00:02.000Z',
      text_tokens: 3,
      truncated: false,
    }),
  };
}

/**
 * Drops each collection the sinks name (once, by the first sink naming it), then closes every
 * sink. Every step runs even when one fails; the failures are thrown together at the end.
 */
async function dropAndClose(sinks: VectorSink[]): Promise<void> {
  const failures: unknown[] = [];
  const attempt = async (step: () => Promise<void>) => {
    try {
      await step();
    } catch (error) {
      failures.push(error);
    }
  };
  const droppers = new Map<string, VectorSink>();
  for (const sink of sinks) if (!droppers.has(sink.collection.name)) droppers.set(sink.collection.name, sink);
  for (const sink of droppers.values()) await attempt(() => sink.drop());
  for (const sink of sinks) await attempt(() => sink.close());
  if (failures.length > 0) throw new AggregateError(failures, `cleanup failed for ${failures.length} step(s): the store may keep collections of this suite`);
}

describe.each(factories)('VectorSink conformance: $name', (factory) => {
  // One prefix per suite: on a shared Qdrant, what this run created is told from everything else.
  const prefix = uniqueName('conformance');
  let collectionCount = 0;
  const collectionName = () => `${prefix}-${++collectionCount}`;
  // Every sink a test makes, opened or not: afterEach drops their collections, whatever the outcome.
  const made: VectorSink[] = [];
  const make = (collection: string, dimensions?: number, distance?: Distance) => {
    const sink = factory.make(collection, dimensions, distance);
    made.push(sink);
    return sink;
  };
  const open = async (collection = collectionName(), dimensions?: number, distance?: Distance) => {
    const sink = make(collection, dimensions, distance);
    await sink.open();
    return sink;
  };

  const leftBehind = async () => (await factory.collections()).filter((name) => name.startsWith(`${prefix}-`));

  beforeAll(() => factory.setUp());
  afterEach(() => dropAndClose(made.splice(0)));
  afterAll(async () => {
    try {
      expect(await leftBehind(), 'collections this suite created and did not drop').toEqual([]);
    } finally {
      await factory.tearDown();
    }
  });

  it('creates the collection, and opens it again when its schema matches', async () => {
    const name = collectionName();
    const sink = await open(name);
    expect(await sink.count()).toBe(0);
    await expect(open(name)).resolves.toBeDefined();
  });

  it('refuses to open a collection of another size or distance', async () => {
    const name = collectionName();
    await open(name);
    await expect(make(name, DIMENSIONS * 2).open()).rejects.toThrow(SchemaMismatchError);
    await expect(make(name, DIMENSIONS, 'dot').open()).rejects.toThrow(/dot|Dot/);
  });

  it('upserts, reads back payload and vector, and replaces on a second upsert', async () => {
    const sink = await open();
    await sink.upsert([record('sku-1', 1, 'red shoe', { category: 'shoes', price: 10.5, tags: ['a', 'b'] }), record('sku-2', 1, 'blue tent')]);
    await sink.upsert([record('sku-1', 2, 'red running shoe', { category: 'shoes', price: 12 })]);
    expect(await sink.count()).toBe(2);
    const [got] = await sink.retrieve(['sku-1'], { withVectors: true });
    expect(got?.itemId).toBe('sku-1');
    expect(got?.payload).toMatchObject({ item_id: 'sku-1', version: 2, content_hash: 'hash-of-red running shoe', model: 'stub-embedding', category: 'shoes', price: 12, source_updated_at: '2026-11-20T10:00:00Z' });
    expect(got?.payload).not.toHaveProperty('tags');
    const expected = stubVector('red running shoe', DIMENSIONS);
    got?.vector?.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 5));
  });

  it('keeps the system fields when metadata uses the same names', async () => {
    const sink = await open();
    await sink.upsert([record('sku-1', 3, 'text', { version: 'from-metadata', item_id: 'spoofed', color: 'red' })]);
    const [got] = await sink.retrieve(['sku-1']);
    expect(got?.payload).toMatchObject({ item_id: 'sku-1', version: 3, color: 'red' });
  });

  it('deletes, and deleting a missing item is a no-op', async () => {
    const sink = await open();
    await sink.upsert([record('a', 1, 'x'), record('b', 1, 'y')]);
    await sink.delete([{ itemId: 'a', version: 1 }, { itemId: 'never-existed', version: 1 }]);
    expect((await sink.retrieve(['a', 'b'])).map((r) => r.itemId)).toEqual(['b']);
    expect(await sink.count()).toBe(1);
  });

  it('guards by version: an older upsert or delete never replaces a newer point', async () => {
    const sink = await open();
    await sink.upsert([record('g', 5, 'version five', { v: 5 })]);
    await sink.upsert([record('g', 4, 'version four', { v: 4 }), record('new', 1, 'brand new')]);
    await sink.delete([{ itemId: 'g', version: 3 }]);
    const [g] = await sink.retrieve(['g']);
    expect(g?.payload).toMatchObject({ version: 5, v: 5 });
    expect(await sink.count()).toBe(2);
    await sink.upsert([record('g', 5, 'version five again', { v: 55 })]);
    expect((await sink.retrieve(['g']))[0]?.payload).toMatchObject({ version: 5, v: 55 });
    await sink.delete([{ itemId: 'g', version: 6 }]);
    expect(await sink.retrieve(['g'])).toEqual([]);
  });

  it('updates payloads only (guarded), keeps the vector and embedded_at, and reports missing points', async () => {
    const sink = await open();
    await sink.upsert([record('p', 2, 'kept text', { price: 10, old: true })]);
    const update = (version: number, metadata: Record<string, unknown>) =>
      buildPayload(metadata, { item_id: 'p', version, content_hash: 'hash-of-kept text', model: 'stub-embedding', source_updated_at: null, embedded_at: '', indexed_at: '2026-11-21T00:00:00.000Z', text_tokens: 3, truncated: false });
    expect(await sink.updatePayload([{ itemId: 'p', payload: update(3, { price: 8 }) }, { itemId: 'ghost', payload: update(1, {}) }])).toEqual({ missing: ['ghost'] });
    await sink.updatePayload([{ itemId: 'p', payload: update(1, { price: 999 }) }]);
    const [p] = await sink.retrieve(['p'], { withVectors: true });
    expect(p?.payload).toMatchObject({ version: 3, price: 8, embedded_at: '2026-11-20T10:00:01.000Z', indexed_at: '2026-11-21T00:00:00.000Z', text_tokens: 3, truncated: false });
    expect(p?.payload).not.toHaveProperty('old');
    const expected = stubVector('kept text', DIMENSIONS);
    p?.vector?.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 5));
    expect(await sink.retrieve(['ghost'])).toEqual([]);
  });

  it('reports a point holding another text\'s vector as missing and leaves it alone (an edit written before a payload-only change of the old text)', async () => {
    const sink = await open();
    await sink.upsert([record('edited', 2, 'text B')]);
    const payloadOfA = buildPayload({ price: 3 }, { item_id: 'edited', version: 3, content_hash: 'hash-of-text A', model: 'stub-embedding', source_updated_at: null, embedded_at: '', indexed_at: '2026-11-21T00:00:00.000Z', text_tokens: 3, truncated: false });
    expect(await sink.updatePayload([{ itemId: 'edited', payload: payloadOfA }])).toEqual({ missing: ['edited'] });
    const [stored] = await sink.retrieve(['edited']);
    expect(stored?.payload).toMatchObject({ version: 2, content_hash: 'hash-of-text B' });
    expect(stored?.payload).not.toHaveProperty('price');
  });

  it('writes upserts, payload updates and deletes in one call, with the same guards and answers', async () => {
    const sink = await open();
    await sink.upsert([record('kept', 1, 'kept text', { price: 1 }), record('edited', 2, 'text B'), record('gone', 1, 'bye'), record('newer', 9, 'newer text')]);
    const payload = (itemId: string, version: number, text: string, metadata: Record<string, unknown>) =>
      buildPayload(metadata, { item_id: itemId, version, content_hash: `hash-of-${text}`, model: 'stub-embedding', source_updated_at: null, embedded_at: '', indexed_at: '2026-11-21T00:00:00.000Z', text_tokens: 3, truncated: false });
    const result = await sink.write({
      upserts: [record('fresh', 1, 'fresh text'), record('newer', 3, 'stale text')],
      payloads: [
        { itemId: 'kept', payload: payload('kept', 2, 'kept text', { price: 2 }) },
        { itemId: 'edited', payload: payload('edited', 3, 'text A', { price: 3 }) },
        { itemId: 'ghost', payload: payload('ghost', 1, 'x', {}) },
      ],
      deletes: [{ itemId: 'gone', version: 2 }],
    });
    expect(result.missing.sort()).toEqual(['edited', 'ghost']);
    const held = new Map((await sink.retrieve(['kept', 'edited', 'gone', 'fresh', 'newer', 'ghost'], { withVectors: true })).map((r) => [r.itemId, r]));
    expect([...held.keys()].sort()).toEqual(['edited', 'fresh', 'kept', 'newer']);
    expect(held.get('kept')?.payload).toMatchObject({ version: 2, price: 2, embedded_at: '2026-11-20T10:00:01.000Z' });
    expect(held.get('edited')?.payload).toMatchObject({ version: 2, content_hash: 'hash-of-text B' });
    expect(held.get('newer')?.payload).toMatchObject({ version: 9, content_hash: 'hash-of-newer text' });
    const kept = stubVector('kept text', DIMENSIONS);
    held.get('kept')?.vector?.forEach((v, i) => expect(v).toBeCloseTo(kept[i] as number, 5));
  });

  it('accepts any item id: integers, slashes, unicode', async () => {
    const sink = await open();
    const ids = ['123', 'sku/1 ü', 'a'.repeat(300), '550e8400-e29b-41d4-a716-446655440000'];
    await sink.upsert(ids.map((id) => record(id, 1, `text ${id}`)));
    expect((await sink.retrieve(ids)).map((r) => r.itemId).sort()).toEqual([...ids].sort());
  });

  it('searches nearest first, with metadata', async () => {
    const sink = await open();
    await sink.upsert(['alpha', 'beta', 'gamma', 'delta'].map((t) => record(`id-${t}`, 1, t, { word: t })));
    const hits = await sink.search(stubVector('gamma', DIMENSIONS), 2);
    expect(hits).toHaveLength(2);
    expect(hits[0]).toMatchObject({ itemId: 'id-gamma', payload: { word: 'gamma' } });
    expect(hits[0]?.score).toBeCloseTo(1, 4);
    expect(hits[0]?.score as number).toBeGreaterThan(hits[1]?.score as number);
  });

  it('scans every record across pages', async () => {
    const sink = await open();
    const ids = Array.from({ length: 53 }, (_, i) => `item-${i}`);
    await sink.upsert(ids.map((id) => record(id, 1, id)));
    const seen: string[] = [];
    for await (const r of sink.scan({ pageSize: 10 })) seen.push(r.itemId);
    expect(seen.sort()).toEqual([...ids].sort());
  });

  // Last: every test before it has run its afterEach. Any collection of this suite's prefix still
  // in the store (a test that skipped the bookkeeping, a drop that did nothing) fails it; afterAll
  // checks again after this test's own cleanup.
  it('leaves no collection behind', async () => {
    expect(await leftBehind()).toEqual([]);
    // The listing is not blind: a collection that exists is in it.
    const sink = await open();
    expect(await leftBehind()).toEqual([sink.collection.name]);
  });
});
