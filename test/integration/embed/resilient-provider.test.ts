/**
 * The embeddings endpoints as the embed stage sees them: circuit breakers, fallbacks and the
 * shared rate limiter (real Redis), against stubs speaking OpenAI's wire format.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { DeferredError, IndexerError } from '../../../src/core/errors.js';
import { createProvider } from '../../../src/embed/create-provider.js';
import type { EmbeddingProvider } from '../../../src/embed/provider.js';
import { Metrics } from '../../../src/observability/metrics.js';
import { EmbeddingsStub, stubTokens } from '../../support/embeddings-stub.js';
import { deletePrefix, services, uniqueName, waitFor } from '../../support/helpers.js';

describe('embeddings endpoints', () => {
  let redis: Redis;
  const prefix = uniqueName('endpoints');
  const stubs: EmbeddingsStub[] = [];
  const providers: EmbeddingProvider[] = [];

  beforeAll(() => {
    redis = new Redis(services().redisUrl);
  });

  afterEach(async () => {
    await Promise.all(providers.splice(0).map((p) => p.close()));
    await Promise.all(stubs.splice(0).map((s) => s.stop()));
  });

  afterAll(async () => {
    await deletePrefix(services().redisUrl, prefix);
    redis.disconnect();
  });

  const startStub = async (options: ConstructorParameters<typeof EmbeddingsStub>[0] = {}) => {
    const stub = new EmbeddingsStub({ dimensions: 8, ...options });
    stubs.push(stub);
    return { stub, url: await stub.start() };
  };

  const provider = (env: Record<string, string>, metrics = new Metrics()) => {
    const config = loadConfig({ EMBEDDINGS_MODEL: 'stub-embedding', EMBEDDINGS_DIMENSIONS: '8', EMBEDDINGS_TIMEOUT_MS: '2000', ...env });
    const created = createProvider(config.embeddings, { redis, prefix: `${prefix}:${uniqueName('p')}`, metrics });
    providers.push(created);
    return created;
  };

  /** A text the stub counts as exactly `tokens` tokens (" a" is one cl100k token). */
  const textOf = (tokens: number, tag: string) => {
    const text = tag + ' a'.repeat(tokens - stubTokens(tag));
    if (stubTokens(text) !== tokens) throw new Error(`textOf: ${stubTokens(text)} tokens, not ${tokens}`);
    return text;
  };
  const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error as IndexerError);

  it("fails over while the primary is down, stops calling it once its circuit opens, and probes it after the cool-down", async () => {
    const primary = await startStub();
    const fallback = await startStub();
    const metrics = new Metrics();
    const p = provider({ EMBEDDINGS_BASE_URL: primary.url, EMBEDDINGS_FALLBACK_BASE_URLS: fallback.url, EMBEDDINGS_BREAKER_FAILURES: '2', EMBEDDINGS_BREAKER_COOLDOWN_MS: '500' }, metrics);
    primary.stub.failNext({ status: 503 }, { status: 503 });

    expect((await p.embed(['one'])).vectors).toHaveLength(1);
    expect((await p.embed(['two'])).vectors).toHaveLength(1);
    expect(p.health?.().map((e) => [e.name, e.circuit])).toEqual([['primary', 'open'], ['fallback-1', 'closed']]);
    expect((await metrics.embeddingCircuitState.get()).values.find((v) => v.labels.endpoint === 'primary')?.value).toBe(2);

    const primaryCalls = primary.stub.requests.length;
    expect((await p.embed(['three'])).vectors).toHaveLength(1);
    expect(primary.stub.requests.length).toBe(primaryCalls); // open: not called at all
    expect(fallback.stub.served.map((r) => r.inputs[0])).toEqual(['one', 'two', 'three']);

    await waitFor('the primary probed after the cool-down and closed', async () => {
      await p.embed(['probe']);
      return primary.stub.served.length === 1;
    });
    expect(p.health?.()[0]?.circuit).toBe('closed');
  });

  it('fails over to a second key on the same URL when the first is refused', async () => {
    const server = await startStub({ apiKey: 'sk-right' });
    const p = provider({ EMBEDDINGS_BASE_URL: server.url, EMBEDDINGS_API_KEY: 'sk-wrong', EMBEDDINGS_FALLBACK_API_KEYS: 'sk-right' });
    expect((await p.embed(['keyed'])).vectors).toHaveLength(1);
    expect(server.stub.requests.map((r) => r.status)).toEqual([401, 200]);
  });

  it('neither fails over nor trips the circuit for an input the API rejects', async () => {
    const primary = await startStub({ rejectMarker: 'POISON' });
    const fallback = await startStub();
    const p = provider({ EMBEDDINGS_BASE_URL: primary.url, EMBEDDINGS_FALLBACK_BASE_URLS: fallback.url, EMBEDDINGS_BREAKER_FAILURES: '2' });
    for (let i = 0; i < 3; i++) expect(await failure(p.embed([`POISON ${i}`]))).toMatchObject({ code: 'EMBEDDINGS_REJECTED' });
    expect(fallback.stub.requests).toHaveLength(0);
    expect(p.health?.()[0]?.circuit).toBe('closed');
  });

  it('with every circuit open, calls nothing and defers with the time left', async () => {
    const server = await startStub();
    const p = provider({ EMBEDDINGS_BASE_URL: server.url, EMBEDDINGS_BREAKER_FAILURES: '1', EMBEDDINGS_BREAKER_COOLDOWN_MS: '60000' });
    server.stub.failNext({ kind: 'reset' });
    expect(await failure(p.embed(['down']))).toMatchObject({ code: 'EMBEDDINGS_UNAVAILABLE' });
    const deferred = await failure(p.embed(['still down?']));
    expect(deferred).toBeInstanceOf(DeferredError);
    expect(deferred).toMatchObject({ code: 'EMBEDDINGS_CIRCUIT_OPEN', canRetry: true });
    expect(deferred?.retryAfterMs).toBeGreaterThan(0);
    expect(deferred?.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(server.stub.requests).toHaveLength(1);
  });

  it('the stub enforces tokens per minute as OpenAI does: 429 rate_limit_exceeded, Retry-After, x-ratelimit headers', async () => {
    const server = await startStub({ rateLimits: { tpm: 1000 } });
    const unshared = createProvider(loadConfig({ EMBEDDINGS_BASE_URL: server.url, EMBEDDINGS_MODEL: 'stub-embedding', EMBEDDINGS_DIMENSIONS: '8' }).embeddings);
    providers.push(unshared);
    const ok = await unshared.embed([textOf(900, 'a')]);
    expect(ok.limits).toMatchObject({ limitTokens: 1000, remainingTokens: 100 });
    const limited = await failure(unshared.embed([textOf(200, 'b')]));
    expect(limited).toMatchObject({ code: 'EMBEDDINGS_RATE_LIMITED', canRetry: true });
    expect(limited?.message).toMatch(/tokens per min \(TPM\): Limit 1000, Used 9\d\d, Requested 200/);
    expect(limited?.retryAfterMs).toBeGreaterThan(5000); // 100 tokens short at 1000 a minute
    expect(limited?.details?.limits).toMatchObject({ limitTokens: 1000, remainingTokens: 100 });
  });

  it('two replicas share a tokens-per-minute budget through Redis: past it, they wait instead of meeting 429s', async () => {
    const server = await startStub({ rateLimits: { tpm: 6000 }, latencyMs: 5, latencyJitterMs: 20 });
    const shared = { EMBEDDINGS_BASE_URL: server.url, EMBEDDINGS_TPM: '6000' };
    // Same bucket key: same URL, key and model, and the same Redis prefix.
    const config = loadConfig({ EMBEDDINGS_MODEL: 'stub-embedding', EMBEDDINGS_DIMENSIONS: '8', ...shared });
    const bucketPrefix = `${prefix}:${uniqueName('shared')}`;
    const [a, b] = [0, 1].map(() => createProvider(config.embeddings, { redis, prefix: bucketPrefix })) as [EmbeddingProvider, EmbeddingProvider];
    providers.push(a, b);
    // 14 requests of 500 tokens: 7,000 tokens against 6,000 a minute.
    const texts = Array.from({ length: 14 }, (_, i) => textOf(500, `shared-${i}`));
    const results = await Promise.all(texts.map((text, i) => (i % 2 ? a : b).embed([text], { estimatedTokens: stubTokens(text) })));
    expect(results.every((r) => r.vectors.length === 1)).toBe(true);
    expect(server.stub.requests.filter((r) => r.status === 429)).toHaveLength(0);
    expect(server.stub.served).toHaveLength(14);
  });

  it('with no limit configured, learns it from the first answer and keeps the next burst under it', async () => {
    const server = await startStub({ rateLimits: { tpm: 6000, rpm: 1000 } });
    const p = provider({ EMBEDDINGS_BASE_URL: server.url });
    await p.embed(['learn'], { estimatedTokens: 2 });
    expect(p.health?.()[0]).toMatchObject({ rpm: 1000, tpm: 6000 });
    const texts = Array.from({ length: 13 }, (_, i) => textOf(500, `learned-${i}`));
    await Promise.all(texts.map((text) => p.embed([text], { estimatedTokens: stubTokens(text) })));
    expect(server.stub.requests.filter((r) => r.status === 429)).toHaveLength(0);
  });
});
