/**
 * The whole pipeline on the real parts: events produced into real Kafka, queues on real Redis,
 * the OpenAI-compatible provider against the embeddings stub, and each sink (LanceDB embedded, the
 * Qdrant contract server). Assertions are on what the sink holds.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { countTokens } from 'gpt-tokenizer/encoding/cl100k_base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/config.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { startPipeline, type Pipeline } from '../../../src/pipeline/pipeline.js';
import type { StoredRecord } from '../../../src/sinks/vector-sink.js';
import { Redis } from 'ioredis';
import { UsageStore } from '../../../src/embed/usage.js';
import { EmbeddingsStub, stubTokens, stubVector } from '../../support/embeddings-stub.js';
import { removeTestResources, testConfig, uniqueName, waitFor } from '../../support/helpers.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';

const DIMENSIONS = 16;
const MODEL = 'stub-embedding';

interface Product {
  id: string;
  version: number;
  text: string;
  metadata: Record<string, unknown>;
}

const upsert = (p: Product) => JSON.stringify({ id: p.id, op: 'upsert', version: p.version, updated_at: '2026-11-20T10:00:00Z', text: p.text, metadata: p.metadata });
const remove = (id: string, version: number) => JSON.stringify({ id, op: 'delete', version });

describe.each(['lancedb', 'qdrant'] as const)('pipeline end to end into %s', (sinkKind) => {
  const stub = new EmbeddingsStub({ dimensions: DIMENSIONS, apiKey: 'sk-pipeline-test' });
  const contract = new QdrantContractServer();
  const lancedbDir = mkdtempSync(join(tmpdir(), 'pipeline-lancedb-'));
  let config: Config;
  let pipeline: Pipeline;
  let topic: string;

  const produce = (lines: string[]) => produceLines(createKafka(config.kafka, silentLogger), topic, lines, { idField: 'id' });
  const sink = () => {
    if (!pipeline.sink) throw new Error('pipeline without write role');
    return pipeline.sink;
  };
  const holds = async (ids: string[]): Promise<Map<string, StoredRecord>> => new Map((await sink().retrieve(ids, { withVectors: true })).map((r) => [r.itemId, r]));

  beforeAll(async () => {
    const embeddingsUrl = await stub.start();
    const qdrantUrl = sinkKind === 'qdrant' ? await contract.start() : undefined;
    config = testConfig({
      EMBEDDINGS_BASE_URL: embeddingsUrl,
      EMBEDDINGS_API_KEY: 'sk-pipeline-test',
      EMBEDDINGS_MODEL: MODEL,
      EMBEDDINGS_DIMENSIONS: String(DIMENSIONS),
      EMBEDDINGS_BATCH_SIZE: '16',
      EMBEDDINGS_MAX_INPUT_TOKENS: '64',
      EMBEDDINGS_MAX_BATCH_TOKENS: '200',
      SINK: sinkKind,
      QDRANT_URL: qdrantUrl,
      LANCEDB_URI: lancedbDir,
      COLLECTION: uniqueName('items'),
    });
    topic = config.kafka.topics[0] as string;
    await ensureTopic(createKafka(config.kafka, silentLogger), topic, 3);
    pipeline = await startPipeline(config, { roles: ['ingest', 'embed', 'write'], logger: silentLogger });
  });

  afterAll(async () => {
    await pipeline?.close();
    await stub.stop();
    await contract.stop();
    await removeTestResources(config);
    rmSync(lancedbDir, { recursive: true, force: true });
  });

  it('indexes upserts, then applies updates and deletes', async () => {
    const products: Product[] = Array.from({ length: 30 }, (_, i) => ({
      id: `sku-${i}`,
      version: 1,
      text: `Product ${i}: a ${['tent', 'shoe', 'jacket'][i % 3]} for ${i % 2 ? 'winter' : 'summer'}`,
      metadata: { category: ['tents', 'shoes', 'jackets'][i % 3], price: 10 + i },
    }));
    await produce(products.map(upsert));
    const ids = products.map((p) => p.id);
    await waitFor('30 items indexed', async () => (await holds(ids)).size === 30);

    const first = await holds(ids);
    for (const p of products) {
      const stored = first.get(p.id) as StoredRecord;
      expect(stored.payload).toMatchObject({ item_id: p.id, version: 1, model: MODEL, source_updated_at: '2026-11-20T10:00:00Z', ...p.metadata });
      expect(stored.payload.content_hash).toMatch(/^[0-9a-f]{64}$/);
      const expected = stubVector(p.text, DIMENSIONS, MODEL);
      stored.vector?.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 5));
    }

    // Five new texts, five price changes, then four deletes.
    const changed = products.slice(0, 5).map((p) => ({ ...p, version: 2, text: `${p.text}, now waterproof` }));
    const repriced = products.slice(5, 10).map((p) => ({ ...p, version: 2, metadata: { ...p.metadata, price: 1 } }));
    const deleted = products.slice(10, 14).map((p) => p.id);
    await produce([...changed.map(upsert), ...repriced.map(upsert), ...deleted.map((id) => remove(id, 2))]);

    await waitFor('updates and deletes applied', async () => {
      const now = await holds(ids);
      return now.size === 26 && [...changed, ...repriced].every((p) => now.get(p.id)?.payload.version === 2);
    });
    const after = await holds(ids);
    for (const id of deleted) expect(after.has(id)).toBe(false);
    for (const p of changed) {
      const expected = stubVector(p.text, DIMENSIONS, MODEL);
      after.get(p.id)?.vector?.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 5));
    }
    for (const p of repriced) expect(after.get(p.id)?.payload.price).toBe(1);
    expect(await sink().count()).toBe(26);

    const hits = await sink().search(stubVector(changed[0]?.text as string, DIMENSIONS, MODEL), 1);
    expect(hits[0]?.itemId).toBe(changed[0]?.id);

    // Usage is the provider's own count, summed in Redis for every worker.
    const served = stub.served;
    const redis = new Redis(config.redis.url);
    const [usage] = await new UsageStore(redis, config.redis.prefix, { [MODEL]: 1 }).totals().finally(() => redis.disconnect());
    expect(usage).toEqual({
      model: MODEL,
      requests: served.length,
      inputs: served.reduce((s, r) => s + r.inputs.length, 0),
      tokens: served.reduce((s, r) => s + r.inputs.reduce((t, x) => t + stubTokens(x), 0), 0),
      estimatedCostUsd: expect.closeTo(served.reduce((s, r) => s + r.inputs.reduce((t, x) => t + stubTokens(x), 0), 0) / 1e6, 9),
    });
  });

  it('dead-letters bad events with the reason and original bytes, and keeps indexing the rest', async () => {
    const before = await pipeline.deadLetters.count();
    const good = [upsert({ id: 'good-1', version: 1, text: 'fine', metadata: {} }), upsert({ id: 'good-2', version: 1, text: 'also fine', metadata: {} })];
    const bad = ['{"id": "broken", ', JSON.stringify({ text: 'no id at all' }), JSON.stringify({ id: 'v', version: 'one', text: 'x' })];
    await produce([good[0] as string, ...bad, good[1] as string]);
    await waitFor('good events indexed', async () => (await holds(['good-1', 'good-2'])).size === 2);
    await waitFor('three dead letters', async () => (await pipeline.deadLetters.count()) - before === 3);
    const letters = (await pipeline.deadLetters.list(1000)).slice(-3);
    expect(letters.map((l) => l.original.toString('utf8')).sort()).toEqual([...bad].sort());
    // Partitions interleave, so the letters come in any order.
    for (const reason of [/not valid JSON/, /item id is missing/, /"version" must be/]) expect(letters.some((l) => reason.test(l.reason))).toBe(true);
    expect(letters.every((l) => l.stage === 'ingest' && l.code === 'EVENT_INVALID')).toBe(true);
  });

  it('cuts long texts to the token limit, records it, and keeps requests within the token budget', async () => {
    const long = Array.from({ length: 8 }, (_, i) => ({ id: `long-${i}`, version: 1, text: `Product ${i}. ${'A very detailed description of materials and fit. '.repeat(30)}`, metadata: {} }));
    const before = stub.served.length;
    await produce(long.map(upsert));
    await waitFor('the long items indexed', async () => (await holds(long.map((l) => l.id))).size === long.length);
    const stored = await holds(long.map((l) => l.id));
    for (const l of long) {
      const payload = stored.get(l.id)?.payload;
      expect(payload).toMatchObject({ truncated: true, text_tokens: 64 });
    }
    const requests = stub.served.slice(before);
    for (const r of requests) {
      for (const input of r.inputs) expect(countTokens(input)).toBeLessThanOrEqual(64);
      expect(r.inputs.reduce((s, t) => s + countTokens(t), 0)).toBeLessThanOrEqual(200);
    }
    // The hash is over what was embedded, so the stored vector is the cut text's.
    const sent = requests.flatMap((r) => r.inputs).find((t) => t.startsWith('Product 0.')) as string;
    const expected = stubVector(sent, DIMENSIONS, MODEL);
    stored.get('long-0')?.vector?.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 5));
  });

  it('never writes a vector of the wrong size or holding NaN', async () => {
    stub.failNext({ kind: 'wrong_dimensions' }, { kind: 'nan' });
    const items = [upsert({ id: 'corrupt-1', version: 1, text: 'first corrupt answer', metadata: {} })];
    await produce(items);
    const short = await waitFor('the short vector dead-lettered', async () => (await pipeline.deadLetters.list(1000)).find((l) => l.itemId === 'corrupt-1'));
    expect(short).toMatchObject({ stage: 'embed', code: 'VECTOR_INVALID' });
    expect(short.reason).toMatch(/has 15 dimensions, the configured model has 16/);
    await produce([upsert({ id: 'corrupt-2', version: 1, text: 'second corrupt answer', metadata: {} })]);
    const nan = await waitFor('the NaN vector dead-lettered', async () => (await pipeline.deadLetters.list(1000)).find((l) => l.itemId === 'corrupt-2'));
    expect(nan.reason).toMatch(/holds NaN at index 0/);
    expect((await holds(['corrupt-1', 'corrupt-2'])).size).toBe(0);
  });

  it('on a 429, holds the endpoint for the Retry-After across replicas, then indexes the item', async () => {
    stub.failNext({ status: 429, headers: { 'retry-after-ms': '3000' } });
    await produce([upsert({ id: 'limited-1', version: 1, text: 'rate limited once', metadata: {} })]);
    await waitFor('the item indexed after the wait', async () => (await holds(['limited-1'])).size === 1);
    const [limited, retried] = stub.requests.slice(-2);
    expect([limited?.status, retried?.status]).toEqual([429, 200]);
    // The retry waited for the Retry-After: the endpoint was blocked in the shared limiter, which
    // every replica consults before sending.
    expect((retried?.at ?? 0) - (limited?.at ?? 0)).toBeGreaterThanOrEqual(2900);
  });

  it('pauses the embed queue for every worker when the quota is exhausted, and resumes without losing items', async () => {
    stub.failNext({ status: 429, body: { error: { message: 'You exceeded your current quota', type: 'insufficient_quota', param: null, code: 'insufficient_quota' } } });
    const lettersBefore = await pipeline.deadLetters.count();
    await produce([upsert({ id: 'quota-1', version: 1, text: 'bought after the top-up', metadata: {} })]);
    await waitFor('the embed queue paused', () => pipeline.embedQueue.isPaused());
    expect((await holds(['quota-1'])).size).toBe(0);
    await pipeline.embedQueue.resume();
    await waitFor('the item indexed after resuming', async () => (await holds(['quota-1'])).size === 1);
    expect(await pipeline.deadLetters.count()).toBe(lettersBefore);
  });

  it('isolates a text the embeddings API rejects and indexes its batch-mates', async () => {
    stub.options.rejectMarker = 'POISON';
    try {
      const texts = Array.from({ length: 12 }, (_, i) => ({ id: `batch-${i}`, version: 1, text: i === 7 ? 'POISON text' : `batch text ${i}`, metadata: {} }));
      await produce(texts.map(upsert));
      const okIds = texts.filter((t) => !t.text.includes('POISON')).map((t) => t.id);
      await waitFor('the 11 good items indexed', async () => (await holds(okIds)).size === 11);
      const letter = await waitFor('the poison item dead-lettered', async () => (await pipeline.deadLetters.list(1000)).find((l) => l.itemId === 'batch-7'));
      expect(letter).toMatchObject({ stage: 'embed', code: 'EMBEDDINGS_REJECTED' });
      expect(letter.reason).toContain('maximum context length');
      expect((await holds(['batch-7'])).size).toBe(0);
    } finally {
      stub.options.rejectMarker = undefined;
    }
  });
});
