import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EmbeddingsError } from '../../../src/core/errors.js';
import { decodeEmbedding, OpenAIProvider, parseRetryAfter } from '../../../src/embed/openai-provider.js';
import { EmbeddingsStub, stubVector } from '../../support/embeddings-stub.js';

const stub = new EmbeddingsStub({ dimensions: 8, apiKey: 'sk-test-secret' });
let baseUrl: string;
const provider = (overrides: Partial<ConstructorParameters<typeof OpenAIProvider>[0]> = {}) =>
  new OpenAIProvider({ baseUrl, apiKey: 'sk-test-secret', model: 'stub-embedding', dimensions: 8, sendDimensions: false, encoding: 'base64', timeoutMs: 2000, ...overrides });

async function failure(p: OpenAIProvider, texts = ['a']): Promise<EmbeddingsError> {
  try {
    await p.embed(texts);
  } catch (error) {
    expect(error).toBeInstanceOf(EmbeddingsError);
    return error as EmbeddingsError;
  }
  throw new Error('expected the request to fail');
}

beforeAll(async () => {
  baseUrl = await stub.start();
});
afterAll(() => stub.stop());
beforeEach(() => {
  stub.requests.length = 0;
  stub.options.ignoreEncodingFormat = false;
});

describe('OpenAIProvider', () => {
  it.each(['base64', 'float'] as const)('reads %s answers into the exact vectors, in input order', async (encoding) => {
    const result = await provider({ encoding }).embed(['first text', 'second text']);
    expect(result.vectors.map((v) => Array.from(v))).toEqual([Array.from(stubVector('first text', 8)), Array.from(stubVector('second text', 8))]);
    expect(result.usage.totalTokens).toBeGreaterThan(0);
    expect(stub.requests[0]).toMatchObject({ encoding, inputs: ['first text', 'second text'] });
  });

  it('reads float arrays correctly when a server ignores encoding_format=base64', async () => {
    stub.options.ignoreEncodingFormat = true;
    const result = await provider({ encoding: 'base64' }).embed(['text']);
    expect(result.vectors[0]).toHaveLength(8);
    expect(Array.from(result.vectors[0] as Float32Array)).toEqual(Array.from(stubVector('text', 8)));
  });

  it('types a 429 as retryable with the Retry-After delay', async () => {
    stub.failNext({ status: 429, headers: { 'retry-after-ms': '1500' } });
    const error = await failure(provider());
    expect(error).toMatchObject({ code: 'EMBEDDINGS_RATE_LIMITED', canRetry: true, retryAfterMs: 1500 });
  });

  it('never retries an exhausted quota', async () => {
    stub.failNext({ status: 429, body: { error: { message: 'You exceeded your current quota', type: 'insufficient_quota', param: null, code: 'insufficient_quota' } } });
    expect(await failure(provider())).toMatchObject({ code: 'EMBEDDINGS_QUOTA_EXHAUSTED', canRetry: false });
  });

  it('retries 5xx and unreachable servers, not bad requests', async () => {
    stub.failNext({ status: 503 });
    expect(await failure(provider())).toMatchObject({ code: 'EMBEDDINGS_UNAVAILABLE', canRetry: true });
    expect(await failure(provider({ baseUrl: 'http://127.0.0.1:1/v1' }))).toMatchObject({ code: 'EMBEDDINGS_UNAVAILABLE', canRetry: true });
    const bad = await failure(provider(), ['']);
    expect(bad).toMatchObject({ code: 'EMBEDDINGS_REJECTED', canRetry: false });
    expect(bad.message).toContain("'$.input' is invalid");
  });

  it('types dropped connections and timeouts as retryable', async () => {
    stub.failNext({ kind: 'reset' });
    expect(await failure(provider())).toMatchObject({ code: 'EMBEDDINGS_UNAVAILABLE', canRetry: true });
    stub.failNext({ kind: 'hang' });
    const timeout = await failure(provider({ timeoutMs: 300 }));
    expect(timeout).toMatchObject({ code: 'EMBEDDINGS_UNAVAILABLE', canRetry: true });
    expect(timeout.message).toMatch(/timed out after 300 ms/);
  });

  it('reports a refused key without showing it', async () => {
    const error = await failure(provider({ apiKey: 'sk-wrong-key-123' }));
    expect(error).toMatchObject({ code: 'EMBEDDINGS_UNAUTHORIZED', canRetry: false });
    expect(error.message).toMatch(/EMBEDDINGS_API_KEY/);
    expect(JSON.stringify({ m: error.message, d: error.details })).not.toContain('sk-wrong-key-123');
  });

  it('sends dimensions only when configured', async () => {
    const result = await provider({ dimensions: 4, sendDimensions: true }).embed(['x']);
    expect(result.vectors[0]).toHaveLength(4);
  });
});

describe('decodeEmbedding', () => {
  it('refuses base64 that is not whole float32 values, and marks non-numbers as NaN', () => {
    expect(() => decodeEmbedding(Buffer.from([1, 2, 3]).toString('base64'))).toThrow(/not a whole number of float32/);
    expect(Number.isNaN(decodeEmbedding([1, null, 2])[1])).toBe(true);
  });
});

describe('parseRetryAfter', () => {
  it('reads ms, seconds and HTTP dates', () => {
    expect(parseRetryAfter({ 'retry-after-ms': '250.5' })).toBe(251);
    expect(parseRetryAfter({ 'retry-after': '2' })).toBe(2000);
    expect(parseRetryAfter({ 'retry-after': new Date(10_000).toUTCString() }, 4_000)).toBe(6000);
    expect(parseRetryAfter({})).toBeUndefined();
  });
});
