import { Agent, request, errors as undiciErrors } from 'undici';
import { EmbeddingsError } from '../core/errors.js';
import { floatsOf } from '../queue/jobs.js';
import type { EmbeddingProvider, EmbeddingResult, EmbedOptions } from './provider.js';
import { parseRateLimitHeaders } from './rate-limit-headers.js';

export interface OpenAIProviderOptions {
  /** Up to and including /v1, without a trailing slash. */
  baseUrl: string;
  /** The full embeddings URL when it is not `{baseUrl}/embeddings` (Azure's deployment URL). */
  url?: string;
  /** Bearer token (OpenAI and most servers) or Azure's `api-key` header. */
  auth?: 'bearer' | 'api-key';
  apiKey: string | undefined;
  model: string;
  dimensions: number;
  /** Send `dimensions` in the body (text-embedding-3 can shorten vectors; other servers may reject it). */
  sendDimensions: boolean;
  encoding: 'base64' | 'float';
  timeoutMs: number;
  /** Parallel connections to the API. */
  connections?: number;
}

interface EmbeddingsResponse {
  data?: { index?: number; embedding?: unknown }[];
  usage?: { prompt_tokens?: number; total_tokens?: number };
}

/** OpenAI-compatible POST {baseUrl}/embeddings over undici, with every failure typed. */
export class OpenAIProvider implements EmbeddingProvider {
  readonly kind = 'openai' as const;
  readonly model: string;
  readonly dimensions: number;
  private readonly agent: Agent;
  private readonly url: string;

  constructor(private readonly options: OpenAIProviderOptions) {
    this.model = options.model;
    this.dimensions = options.dimensions;
    this.url = options.url ?? `${options.baseUrl}/embeddings`;
    this.agent = new Agent({
      connections: options.connections ?? 16,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      keepAliveTimeout: 30_000,
    });
  }

  async embed(texts: string[], options: EmbedOptions = {}): Promise<EmbeddingResult> {
    const { signal } = options;
    const body: Record<string, unknown> = { model: this.model, input: texts, encoding_format: this.options.encoding };
    if (this.options.sendDimensions) body.dimensions = this.dimensions;
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
    if (this.options.apiKey) {
      if (this.options.auth === 'api-key') headers['api-key'] = this.options.apiKey;
      else headers.authorization = `Bearer ${this.options.apiKey}`;
    }

    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    let response: Awaited<ReturnType<typeof request>>;
    try {
      response = await request(this.url, {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        dispatcher: this.agent,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (error) {
      throw this.transportError(error, timeout.aborted);
    }

    let text: string;
    try {
      text = await response.body.text();
    } catch (error) {
      throw this.transportError(error, timeout.aborted);
    }
    if (response.statusCode !== 200) throw httpError(response.statusCode, response.headers, text);
    return { ...this.parse(text, texts.length), limits: parseRateLimitHeaders(response.headers) };
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  private transportError(error: unknown, timedOut: boolean): EmbeddingsError {
    const detail = timedOut || error instanceof undiciErrors.HeadersTimeoutError || error instanceof undiciErrors.BodyTimeoutError
      ? `timed out after ${this.options.timeoutMs} ms (EMBEDDINGS_TIMEOUT_MS)`
      : (error as Error).message;
    return new EmbeddingsError('EMBEDDINGS_UNAVAILABLE', `embeddings request to ${this.url} failed: ${detail}`, { canRetry: true, cause: error });
  }

  private parse(text: string, expected: number): EmbeddingResult {
    let parsed: EmbeddingsResponse;
    try {
      parsed = JSON.parse(text) as EmbeddingsResponse;
    } catch {
      throw new EmbeddingsError('EMBEDDINGS_BAD_RESPONSE', `the embeddings API answered 200 with a body that is not JSON: ${text.slice(0, 200)}`, { canRetry: true });
    }
    const data = parsed.data;
    if (!Array.isArray(data) || data.length !== expected) {
      throw new EmbeddingsError('EMBEDDINGS_BAD_RESPONSE', `the embeddings API returned ${Array.isArray(data) ? data.length : 'no'} embeddings for ${expected} inputs`, { canRetry: true });
    }
    const vectors: Float32Array[] = new Array(expected);
    data.forEach((entry, position) => {
      const index = typeof entry.index === 'number' ? entry.index : position;
      if (index < 0 || index >= expected || vectors[index] !== undefined) {
        throw new EmbeddingsError('EMBEDDINGS_BAD_RESPONSE', `the embeddings API returned an out-of-range or repeated index ${index}`, { canRetry: true });
      }
      vectors[index] = decodeEmbedding(entry.embedding);
    });
    const promptTokens = parsed.usage?.prompt_tokens ?? 0;
    return { vectors, usage: { promptTokens, totalTokens: parsed.usage?.total_tokens ?? promptTokens } };
  }
}

/**
 * Reads an embedding by its shape, whatever encoding_format we asked for: some "compatible" servers
 * ignore the field and send float arrays, and reading those as base64 would yield garbage.
 */
export function decodeEmbedding(embedding: unknown): Float32Array {
  if (Array.isArray(embedding)) {
    const vector = new Float32Array(embedding.length);
    embedding.forEach((value, i) => {
      // null or a string here is a broken answer; NaN makes checkVector refuse it loudly.
      vector[i] = typeof value === 'number' ? value : Number.NaN;
    });
    return vector;
  }
  if (typeof embedding === 'string') {
    const bytes = Buffer.from(embedding, 'base64');
    if (bytes.byteLength % 4 !== 0) {
      throw new EmbeddingsError('EMBEDDINGS_BAD_RESPONSE', `a base64 embedding decodes to ${bytes.byteLength} bytes, not a whole number of float32 values`, { canRetry: false });
    }
    return floatsOf(bytes);
  }
  throw new EmbeddingsError('EMBEDDINGS_BAD_RESPONSE', `an embedding is neither a float array nor a base64 string (got ${typeof embedding})`, { canRetry: false });
}

/** Retry-After in ms from `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP date). */
export function parseRetryAfter(headers: Record<string, string | string[] | undefined>, now = Date.now()): number | undefined {
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const ms = Number(first(headers['retry-after-ms']));
  if (first(headers['retry-after-ms']) !== undefined && Number.isFinite(ms) && ms >= 0) return Math.ceil(ms);
  const raw = first(headers['retry-after']);
  if (raw === undefined) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds * 1000);
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** The provider's own message: OpenAI's {error:{message}}, TEI's flat {message} / {error: "..."}. */
function providerMessage(body: string): { message: string; type: string | undefined; code: string | undefined } {
  try {
    const parsed = JSON.parse(body) as { error?: unknown; message?: unknown; type?: unknown; code?: unknown };
    if (parsed.error && typeof parsed.error === 'object') {
      const e = parsed.error as { message?: unknown; type?: unknown; code?: unknown };
      return { message: String(e.message ?? body), type: e.type ? String(e.type) : undefined, code: e.code ? String(e.code) : undefined };
    }
    if (typeof parsed.error === 'string') return { message: parsed.error, type: parsed.type ? String(parsed.type) : undefined, code: undefined };
    if (typeof parsed.message === 'string') return { message: parsed.message, type: parsed.type ? String(parsed.type) : undefined, code: parsed.code ? String(parsed.code) : undefined };
  } catch {
    // not JSON: fall through to the raw text
  }
  return { message: body.slice(0, 500) || '(empty body)', type: undefined, code: undefined };
}

function httpError(status: number, headers: Record<string, string | string[] | undefined>, body: string): EmbeddingsError {
  const { message, type, code } = providerMessage(body);
  const details = { status, type, code, limits: parseRateLimitHeaders(headers) };
  if (status === 429 && (code === 'insufficient_quota' || type === 'insufficient_quota')) {
    return new EmbeddingsError('EMBEDDINGS_QUOTA_EXHAUSTED', `the embeddings quota is exhausted (429 insufficient_quota): ${message}. Add credit or raise the limit; retrying will not help`, { canRetry: false, details });
  }
  if (status === 429) {
    return new EmbeddingsError('EMBEDDINGS_RATE_LIMITED', `rate limited by the embeddings API (429): ${message}`, { canRetry: true, retryAfterMs: parseRetryAfter(headers), details });
  }
  if (status === 408 || status === 409 || status >= 500) {
    return new EmbeddingsError('EMBEDDINGS_UNAVAILABLE', `the embeddings API answered ${status}: ${message}`, { canRetry: true, retryAfterMs: parseRetryAfter(headers), details });
  }
  if (status === 401 || status === 403) {
    return new EmbeddingsError('EMBEDDINGS_UNAUTHORIZED', `the embeddings API refused the credentials (${status}): ${message}. Check EMBEDDINGS_API_KEY`, { canRetry: false, details });
  }
  return new EmbeddingsError('EMBEDDINGS_REJECTED', `the embeddings API rejected the request (${status}): ${message}`, { canRetry: false, details });
}
