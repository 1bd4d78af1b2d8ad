/**
 * The contract server answers as Qdrant does (so the conformance suite means something), and the
 * Qdrant sink turns Qdrant's errors into the right typed errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SinkError } from '../../../src/core/errors.js';
import { pointId } from '../../../src/sinks/point-id.js';
import { QdrantSink } from '../../../src/sinks/qdrant/qdrant-sink.js';
import { buildPayload } from '../../../src/sinks/vector-sink.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';
import { uniqueName } from '../../support/helpers.js';

const server = new QdrantContractServer();
let url = '';

async function call(method: string, path: string, body?: unknown): Promise<{ status: number; body: { result?: unknown; status?: unknown; time?: number } }> {
  const response = await fetch(`${url}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as { result?: unknown; status?: unknown } };
}

async function collection(size = 3, distance = 'Dot'): Promise<string> {
  const name = uniqueName('c');
  expect((await call('PUT', `/collections/${name}`, { vectors: { size, distance } })).status).toBe(200);
  return name;
}

beforeAll(async () => {
  url = await server.start();
});
afterAll(() => server.stop());

describe('Qdrant contract server', () => {
  it('answers with Qdrant envelopes and error bodies', async () => {
    const name = await collection();
    const ok = await call('PUT', `/collections/${name}/points?wait=true`, { points: [{ id: 1, vector: [1, 0, 0] }] });
    expect(ok).toMatchObject({ status: 200, body: { status: 'ok', result: { status: 'completed' } } });
    expect(typeof ok.body.time).toBe('number');
    expect((await call('PUT', `/collections/${name}/points`, { points: [{ id: 2, vector: [1, 0, 0] }] })).body.result).toMatchObject({ status: 'acknowledged' });

    const missing = await call('GET', '/collections/nope');
    expect(missing).toEqual({ status: 404, body: { status: { error: 'Not found: Collection `nope` doesn\'t exist!' }, time: expect.any(Number) } });
    expect(missing.body).not.toHaveProperty('result');
    expect((await call('PUT', `/collections/${name}`, { vectors: { size: 3, distance: 'Dot' } })).status).toBe(409);
  });

  it('refuses point ids that are neither unsigned integers nor UUIDs, and wrong vector sizes', async () => {
    const name = await collection();
    const badId = await call('PUT', `/collections/${name}/points`, { points: [{ id: 'sku-1', vector: [1, 0, 0] }] });
    expect(badId.status).toBe(400);
    expect(badId.body.status).toEqual({ error: expect.stringContaining('value sku-1 is not a valid point ID, valid values are either an unsigned integer or a UUID') });
    const badSize = await call('PUT', `/collections/${name}/points`, { points: [{ id: 1, vector: [1, 0] }] });
    expect(badSize).toMatchObject({ status: 400, body: { status: { error: 'Wrong input: Vector dimension error: expected dim: 3, got 2' } } });
    expect((await call('PUT', `/collections/${name}/points`, { points: 'all' })).status).toBe(400);
    expect((await call('PUT', `/collections/${name}/points?wait=soon`, { points: [] })).status).toBe(400);
  });

  it('returns UUIDs in canonical form and normalises Cosine vectors', async () => {
    const name = await collection(2, 'Cosine');
    await call('PUT', `/collections/${name}/points?wait=true`, { points: [{ id: '550E8400-E29B-41D4-A716-446655440000', vector: [3, 4] }] });
    const got = await call('POST', `/collections/${name}/points`, { ids: ['550e8400-e29b-41d4-a716-446655440000'], with_vector: true });
    expect(got.body.result).toEqual([{ id: '550e8400-e29b-41d4-a716-446655440000', payload: {}, vector: [expect.closeTo(0.6, 6), expect.closeTo(0.8, 6)] }]);
  });

  it('applies update_filter as Qdrant does: silently skips non-matching points, always inserts new ones', async () => {
    const name = await collection();
    await call('PUT', `/collections/${name}/points?wait=true`, { points: [{ id: 1, vector: [1, 0, 0], payload: { version: 5 } }, { id: 2, vector: [1, 0, 0], payload: {} }] });
    const guarded = { must: [{ key: 'version', range: { lt: 4 } }] };
    const result = await call('PUT', `/collections/${name}/points?wait=true`, {
      points: [
        { id: 1, vector: [0, 1, 0], payload: { version: 4 } },
        { id: 2, vector: [0, 1, 0], payload: { version: 4 } },
        { id: 3, vector: [0, 1, 0], payload: { version: 4 } },
      ],
      update_filter: guarded,
    });
    expect(result.body.result).toMatchObject({ status: 'completed' });
    const points = (await call('POST', `/collections/${name}/points`, { ids: [1, 2, 3] })).body.result as { id: number; payload: { version?: number } }[];
    // 1 is newer (5 is not < 4): untouched. 2 lacks the key: a range never matches it. 3 is new: inserted.
    expect(points.map((p) => [p.id, p.payload.version])).toEqual([[1, 5], [2, undefined], [3, 4]]);
  });

  it('switches aliases atomically: all actions or none', async () => {
    const a = await collection();
    const b = await collection();
    const alias = uniqueName('alias');
    await call('POST', '/collections/aliases', { actions: [{ create_alias: { collection_name: a, alias_name: alias } }] });
    const failed = await call('POST', '/collections/aliases', { actions: [{ delete_alias: { alias_name: alias } }, { create_alias: { collection_name: 'missing', alias_name: alias } }] });
    expect(failed.status).toBe(404);
    expect((await call('GET', `/collections/${a}/aliases`)).body.result).toEqual({ aliases: [{ alias_name: alias, collection_name: a }] });
    await call('POST', '/collections/aliases', { actions: [{ delete_alias: { alias_name: alias } }, { create_alias: { collection_name: b, alias_name: alias } }] });
    expect((await call('GET', `/collections/${b}/aliases`)).body.result).toEqual({ aliases: [{ alias_name: alias, collection_name: b }] });
    expect((await call('GET', `/collections/${alias}/exists`)).body.result).toEqual({ exists: true });
  });
});

describe('QdrantSink against the contract server', () => {
  it('writes with wait=true, UUIDv5 ids and the documented payload', async () => {
    const name = uniqueName('c');
    const sink = new QdrantSink({ name, dimensions: 3, distance: 'cosine' }, { url, apiKey: undefined, timeoutMs: 5000 });
    await sink.open();
    const before = server.requests.length;
    const payload = buildPayload({ brand: 'Acme' }, { item_id: 'sku-1', version: 1, content_hash: 'h', model: 'm', source_updated_at: null, embedded_at: 'e', indexed_at: 'i', text_tokens: 3, truncated: false });
    await sink.upsert([{ itemId: 'sku-1', vector: new Float32Array([1, 0, 0]), payload }]);
    const upsert = server.requests.slice(before).find((r) => r.method === 'PUT');
    expect(upsert?.query).toContain('wait=true');
    expect(upsert?.body).toMatchObject({ points: [{ id: pointId('sku-1'), vector: [1, 0, 0], payload: { brand: 'Acme', item_id: 'sku-1', version: 1 } }] });
  });

  it('refuses a Qdrant older than 1.16 (no conditional updates)', async () => {
    const old = new QdrantContractServer({ version: '1.15.4' });
    const oldUrl = await old.start();
    try {
      const sink = new QdrantSink({ name: uniqueName('c'), dimensions: 3, distance: 'cosine' }, { url: oldUrl, apiKey: undefined, timeoutMs: 5000 });
      await expect(sink.open()).rejects.toThrow(/Qdrant 1\.15\.4 is too old: the indexer needs 1\.16 or newer/);
    } finally {
      await old.stop();
    }
  });

  it('types rejected requests as final and unreachable servers as retryable', async () => {
    const name = await collection(3, 'Cosine');
    const wrongSize = new QdrantSink({ name, dimensions: 2, distance: 'cosine' }, { url, apiKey: undefined, timeoutMs: 5000 });
    const payload = buildPayload({}, { item_id: 'x', version: 1, content_hash: 'h', model: 'm', source_updated_at: null, embedded_at: 'e', indexed_at: 'i', text_tokens: 3, truncated: false });
    const rejected = await wrongSize.upsert([{ itemId: 'x', vector: new Float32Array([1, 0]), payload }]).catch((e: unknown) => e);
    expect(rejected).toBeInstanceOf(SinkError);
    expect(rejected).toMatchObject({ code: 'SINK_REJECTED', canRetry: false });
    expect((rejected as Error).message).toContain('Vector dimension error: expected dim: 3, got 2');

    const down = new QdrantSink({ name, dimensions: 3, distance: 'cosine' }, { url: 'http://127.0.0.1:1', apiKey: undefined, timeoutMs: 2000 });
    await expect(down.open()).rejects.toMatchObject({ code: 'SINK_UNAVAILABLE', canRetry: true });
  });
});
