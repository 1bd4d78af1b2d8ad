import { createHash, randomUUID } from 'node:crypto';
import { countTokens } from 'gpt-tokenizer/encoding/cl100k_base';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { LoopbackServer } from './loopback-server.js';

/**
 * A stand-in for an OpenAI-compatible embeddings API: POST /v1/embeddings with OpenAI's request
 * and response shapes (float and base64 encodings, usage, error bodies), deterministic vectors, and
 * injectable faults. The paid API cannot be called from tests; this is faithful to its wire format.
 */
export interface StubFault {
  /**
   * `reset` drops the connection, `hang` never answers (a timeout), `wrong_dimensions` answers
   * 200 with vectors one element short, `nan` answers 200 with a NaN in every vector (as JSON null,
   * the only way JSON can carry it).
   */
  kind?: 'http' | 'reset' | 'hang' | 'wrong_dimensions' | 'nan';
  status?: number;
  /** OpenAI-style error body by default. */
  body?: unknown;
  headers?: Record<string, string>;
}

export interface EmbeddingsStubOptions {
  /**
   * Which server it imitates: `openai` (also vLLM's), `azure` (deployment URL with api-version,
   * `api-key` header, model from the deployment), `ollama` (float answers whatever was asked),
   * `tei` (Hugging Face TEI: float answers, flat error bodies {message, code, type}).
   */
  dialect?: 'openai' | 'azure' | 'ollama' | 'tei';
  dimensions?: number;
  apiKey?: string;
  /** Every answer waits this long... */
  latencyMs?: number;
  /** ...plus a uniformly random extra of up to this many ms. */
  latencyJitterMs?: number;
  /**
   * Enforces OpenAI-style limits per minute (token buckets that hold one minute's worth and refill
   * continuously; tokens counted as stubTokens), answers 429 `rate_limit_exceeded` with Retry-After
   * when a request does not fit, and sends x-ratelimit-* headers on every answer.
   */
  rateLimits?: { rpm?: number; tpm?: number };
  /** Answer float arrays whatever encoding_format asked for, as some "compatible" servers do. */
  ignoreEncodingFormat?: boolean;
  /** Inputs containing this marker are rejected as too long (400, like OpenAI's context-length error). */
  rejectMarker?: string;
  /** A request carrying an input with this marker is answered 503, as an overloaded server does. */
  unavailableMarker?: string;
  /** Batch API: how long a batch stays `in_progress` before it completes. */
  batchDelayMs?: number;
  /** Batch API: requests with an input containing this marker fail in the batch (500), not synchronously. */
  batchFailMarker?: string;
}

/** A Batch API batch as the stub keeps it (OpenAI's batch object, plus its input lines). */
interface StubBatch {
  id: string;
  object: 'batch';
  endpoint: string;
  errors: null | { object: 'list'; data: { code: string; message: string; line: number | null }[] };
  input_file_id: string;
  completion_window: string;
  status: 'validating' | 'in_progress' | 'finalizing' | 'completed' | 'failed' | 'expired' | 'cancelling' | 'cancelled';
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  expires_at: number;
  completed_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
}

export interface StubRequest {
  model: string;
  inputs: string[];
  encoding: string;
  status: number;
  /** Tokens the request carried (stubTokens), and when it arrived (ms since the epoch). */
  tokens: number;
  at: number;
}

/**
 * The stub's vector for a text: a xorshift128 stream seeded by the SHA-256 of model and text, unit
 * length. One hash per text, so that the stub costs a benchmark little. Tests compare sinks to it.
 */
export function stubVector(text: string, dimensions: number, model = 'stub-embedding'): Float32Array {
  const seed = createHash('sha256').update(`${model}\u0000${text}`).digest();
  let [a, b, c, d] = [seed.readUInt32LE(0) | 1, seed.readUInt32LE(4), seed.readUInt32LE(8), seed.readUInt32LE(12)];
  const vector = new Float32Array(dimensions);
  let norm = 0;
  for (let i = 0; i < dimensions; i++) {
    const t = a ^ (a << 11);
    [a, b, c] = [b, c, d];
    d = (d ^ (d >>> 19) ^ t ^ (t >>> 8)) >>> 0;
    const value = (d | 0) / 2 ** 31;
    vector[i] = value;
    norm += value * value;
  }
  const scale = 1 / Math.sqrt(norm);
  for (let i = 0; i < dimensions; i++) vector[i] = (vector[i] as number) * scale;
  return vector;
}

/**
 * The tokens the stub counts for a text, in usage and against its rate limits: cl100k_base, the
 * tokenizer OpenAI's text-embedding-3 models count with, so the stub's usage is what OpenAI's would be.
 */
export function stubTokens(text: string): number {
  return countTokens(text);
}

function openAiError(message: string, type: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type, param, code } };
}

/** OpenAI's way of printing a duration in its reset headers and 429 messages: "20ms", "1.5s", "6m0s". */
export function formatResetDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Number(((ms % 60_000) / 1000).toFixed(3));
  return minutes > 0 ? `${minutes}m${seconds}s` : `${seconds}s`;
}

/** One limit of the stub: a bucket holding a minute's worth, refilled continuously. */
class MinuteBucket {
  private available: number;
  private updatedAt = Date.now();

  constructor(readonly limit: number) {
    this.available = limit;
  }

  /** 0 when `cost` fits now, else how long until it would. A cost above the limit fits a full bucket. */
  waitFor(cost: number, now = Date.now()): number {
    this.refill(now);
    const wanted = Math.min(cost, this.limit);
    return this.available >= wanted ? 0 : Math.ceil(((wanted - this.available) * 60_000) / this.limit);
  }

  take(cost: number, now = Date.now()): void {
    this.refill(now);
    this.available -= Math.min(cost, this.limit);
  }

  remaining(now = Date.now()): number {
    this.refill(now);
    return Math.floor(this.available);
  }

  /** Until the bucket is full again. */
  resetMs(now = Date.now()): number {
    this.refill(now);
    return ((this.limit - this.available) * 60_000) / this.limit;
  }

  private refill(now: number): void {
    this.available = Math.min(this.limit, this.available + ((now - this.updatedAt) * this.limit) / 60_000);
    this.updatedAt = now;
  }
}

export class EmbeddingsStub {
  readonly requests: StubRequest[] = [];
  /** Batch API: uploaded files (purpose batch, and the output and error files it wrote) and batches. */
  readonly files = new Map<string, { purpose: string; filename: string; content: string; createdAt: number }>();
  readonly batches = new Map<string, StubBatch>();
  /** Inputs embedded through batches (not counted in `requests`). */
  batchInputs = 0;
  private readonly http = new LoopbackServer((req, res) => this.onRequest(req, res));
  private faults: StubFault[] = [];
  private readonly requestBucket: MinuteBucket | undefined;
  private readonly tokenBucket: MinuteBucket | undefined;
  options: Required<Omit<EmbeddingsStubOptions, 'apiKey' | 'rejectMarker' | 'unavailableMarker' | 'rateLimits' | 'batchDelayMs' | 'batchFailMarker'>> & Pick<EmbeddingsStubOptions, 'apiKey' | 'rejectMarker' | 'unavailableMarker' | 'rateLimits' | 'batchDelayMs' | 'batchFailMarker'>;

  constructor(options: EmbeddingsStubOptions = {}) {
    this.options = { dimensions: 8, latencyMs: 0, latencyJitterMs: 0, ignoreEncodingFormat: false, dialect: 'openai', ...options };
    this.requestBucket = options.rateLimits?.rpm ? new MinuteBucket(options.rateLimits.rpm) : undefined;
    this.tokenBucket = options.rateLimits?.tpm ? new MinuteBucket(options.rateLimits.tpm) : undefined;
    if (this.options.dialect === 'ollama' || this.options.dialect === 'tei') this.options.ignoreEncodingFormat = true;
    this.options.batchDelayMs ??= 0;
  }

  async start(port = 0): Promise<string> {
    return `${await this.http.start(port)}/v1`;
  }

  stop(): Promise<void> {
    return this.http.stop();
  }

  /** The next requests fail with these answers, in order. */
  failNext(...faults: StubFault[]): void {
    this.faults.push(...faults);
  }

  /** Successful requests and the inputs they carried. */
  get served(): StubRequest[] {
    return this.requests.filter((r) => r.status === 200);
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const arrivedAt = Date.now();
    const send = async (status: number, body: unknown, headers: Record<string, string> = {}) => {
      const latency = this.options.latencyMs + Math.random() * this.options.latencyJitterMs;
      if (latency > 0) await sleep(latency);
      const raw = (body as { __raw?: string } | null)?.__raw;
      res.writeHead(status, { 'content-type': raw === undefined ? 'application/json' : 'application/octet-stream', ...this.rateLimitHeaders(), ...headers });
      res.end(raw ?? JSON.stringify(body));
    };
    const dialect = this.options.dialect;
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method === 'GET' && url.pathname === '/_stub/stats') {
      // For a benchmark that runs the stub in a process of its own: what it served.
      const served = this.served;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ requests: this.requests.length, served: served.length, inputs: served.reduce((n, r) => n + r.inputs.length, 0), tokens: served.reduce((n, r) => n + r.tokens, 0) }));
      return;
    }
    const error = (message: string, type: string, code: string | null = null, param: string | null = null) =>
      dialect === 'tei' ? { message, code: code ?? 422, type } : openAiError(message, type, code, param);
    if (dialect === 'openai' && /^\/v1\/(files|batches)(\/|$)/.test(url.pathname)) return this.onBatchApi(req, url, Buffer.concat(chunks), send);
    const azure = /^\/openai\/deployments\/([^/]+)\/embeddings$/.exec(url.pathname);
    const pathOk = dialect === 'azure' ? azure !== null && url.searchParams.has('api-version') : /\/(v1\/)?embeddings$/.test(url.pathname);
    if (req.method !== 'POST' || !pathOk) {
      return send(404, dialect === 'azure' ? { error: { code: '404', message: 'Resource not found' } } : error(`Invalid URL (${req.method} ${req.url})`, 'invalid_request_error'));
    }
    const presented = dialect === 'azure' ? req.headers['api-key'] : req.headers.authorization;
    const expectedKey = dialect === 'azure' ? this.options.apiKey : `Bearer ${this.options.apiKey}`;
    if (this.options.apiKey && presented !== expectedKey) {
      this.requests.push({ model: '', inputs: [], encoding: '', status: 401, tokens: 0, at: arrivedAt });
      return send(401, error('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
    }
    let body: { model?: unknown; input?: unknown; encoding_format?: unknown; dimensions?: unknown };
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
    } catch {
      return send(400, openAiError('We could not parse the JSON body of your request.', 'invalid_request_error'));
    }
    const inputs = typeof body.input === 'string' ? [body.input] : body.input;
    const model = typeof body.model === 'string' ? body.model : azure ? decodeURIComponent(azure[1] as string) : '';
    const encoding = body.encoding_format === 'base64' ? 'base64' : 'float';
    const carried = Array.isArray(inputs) ? (inputs as unknown[]).filter((i): i is string => typeof i === 'string') : [];
    const tokens = carried.reduce((sum, text) => sum + stubTokens(text), 0);
    const record = (status: number) => this.requests.push({ model, inputs: carried, encoding, status, tokens, at: arrivedAt });

    const fault = this.faults.shift();
    if (fault?.kind === 'reset') {
      record(0);
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'hang') {
      record(0);
      return; // the stub's stop() drops the connection
    }
    const corrupt = fault?.kind === 'wrong_dimensions' || fault?.kind === 'nan' ? fault.kind : undefined;
    if (fault && !corrupt) {
      const status = fault.status ?? 500;
      record(status);
      return send(status, fault.body ?? error(`injected ${status}`, status === 429 ? 'requests' : 'server_error'), fault.headers);
    }
    if (!model) {
      record(400);
      return send(400, error('you must provide a model parameter', 'invalid_request_error', null, 'model'));
    }
    if (!Array.isArray(inputs) || inputs.length === 0 || inputs.length > 2048 || inputs.some((i) => typeof i !== 'string' || i.length === 0)) {
      record(400);
      return send(400, error("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", 'invalid_request_error', null, 'input'));
    }
    if (this.options.rejectMarker && (inputs as string[]).some((i) => i.includes(this.options.rejectMarker as string))) {
      record(400);
      return send(400, error("This model's maximum context length is 8192 tokens, however you requested 9000 tokens (9000 in your prompt; 0 for the completion). Please reduce your prompt; or completion length.", 'invalid_request_error', null, 'input'));
    }
    if (this.options.unavailableMarker && (inputs as string[]).some((i) => i.includes(this.options.unavailableMarker as string))) {
      record(503);
      return send(503, error('The server is overloaded or not ready yet.', 'server_error'));
    }
    const limited = this.overLimit(model, tokens);
    if (limited) {
      record(429);
      return send(429, error(limited.message, limited.type, 'rate_limit_exceeded'), { 'retry-after-ms': String(limited.waitMs), 'retry-after': String(Math.ceil(limited.waitMs / 1000)) });
    }
    record(200);
    const dimensions = typeof body.dimensions === 'number' ? body.dimensions : this.options.dimensions;
    const asBase64 = encoding === 'base64' && !this.options.ignoreEncodingFormat;
    await send(200, {
      object: 'list',
      data: (inputs as string[]).map((text, index) => {
        let vector = stubVector(text, dimensions, model);
        if (corrupt === 'wrong_dimensions') vector = vector.slice(0, dimensions - 1);
        if (corrupt === 'nan') vector[0] = Number.NaN;
        const embedding =
          corrupt === 'nan' ? Array.from(vector, (v) => (Number.isNaN(v) ? null : v)) : asBase64 ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64') : Array.from(vector);
        return { object: 'embedding', index, embedding };
      }),
      model,
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    });
  }

  /**
   * OpenAI's Batch API, as far as embeddings use it: upload a JSONL file (`POST /v1/files`,
   * multipart, purpose `batch`), create a batch over it (`POST /v1/batches`), poll it
   * (`GET /v1/batches/{id}`), download its output and error files (`GET /v1/files/{id}/content`).
   * A batch completes `batchDelayMs` after it is created; each line is answered as the synchronous
   * endpoint would (inputs with the reject marker fail, in the error file).
   */
  private async onBatchApi(req: IncomingMessage, url: URL, raw: Buffer, send: (status: number, body: unknown) => Promise<void>): Promise<void> {
    if (this.options.apiKey && req.headers.authorization !== `Bearer ${this.options.apiKey}`) return send(401, openAiError('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
    const now = () => Math.floor(Date.now() / 1000);
    if (req.method === 'POST' && url.pathname === '/v1/files') {
      const form = await new Response(raw, { headers: { 'content-type': String(req.headers['content-type'] ?? '') } }).formData().catch(() => undefined);
      const file = form?.get('file');
      const purpose = form?.get('purpose');
      if (!form || typeof file === 'string' || file === null || file === undefined) return send(400, openAiError("'file' is a required property", 'invalid_request_error', null, 'file'));
      if (purpose !== 'batch') return send(400, openAiError(`'${String(purpose)}' is not one of ['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals'] - 'purpose'`, 'invalid_request_error', null, 'purpose'));
      const id = `file-${randomUUID().replace(/-/g, '').slice(0, 24)}`;
      const content = await file.text();
      this.files.set(id, { purpose, filename: file.name, content, createdAt: now() });
      return send(200, { id, object: 'file', bytes: Buffer.byteLength(content), created_at: now(), filename: file.name, purpose });
    }
    const fileContent = /^\/v1\/files\/([^/]+)\/content$/.exec(url.pathname);
    if (req.method === 'GET' && fileContent) {
      const file = this.files.get(fileContent[1] as string);
      if (!file) return send(404, openAiError(`No such File object: ${fileContent[1]}`, 'invalid_request_error', null, 'id'));
      // JSONL, not JSON: sent as is.
      return send(200, { __raw: file.content });
    }
    if (req.method === 'POST' && url.pathname === '/v1/batches') {
      let body: { input_file_id?: unknown; endpoint?: unknown; completion_window?: unknown; metadata?: unknown };
      try {
        body = JSON.parse(raw.toString('utf8')) as typeof body;
      } catch {
        return send(400, openAiError('We could not parse the JSON body of your request.', 'invalid_request_error'));
      }
      if (body.endpoint !== '/v1/embeddings' && body.endpoint !== '/v1/chat/completions') return send(400, openAiError(`Invalid value: '${String(body.endpoint)}'. Supported values are: '/v1/chat/completions', '/v1/embeddings', ...`, 'invalid_request_error', 'invalid_value', 'endpoint'));
      if (body.completion_window !== '24h') return send(400, openAiError(`Invalid value: '${String(body.completion_window)}'. Supported values are: '24h'.`, 'invalid_request_error', 'invalid_value', 'completion_window'));
      const input = this.files.get(String(body.input_file_id));
      if (!input || input.purpose !== 'batch') return send(400, openAiError(`Invalid 'input_file_id': '${String(body.input_file_id)}'.`, 'invalid_request_error', null, 'input_file_id'));
      const lines = input.content.split('\n').filter((l) => l.trim() !== '');
      const batch: StubBatch = {
        id: `batch_${randomUUID().replace(/-/g, '').slice(0, 24)}`,
        object: 'batch',
        endpoint: body.endpoint,
        errors: null,
        input_file_id: String(body.input_file_id),
        completion_window: '24h',
        status: 'in_progress',
        output_file_id: null,
        error_file_id: null,
        created_at: now(),
        in_progress_at: now(),
        expires_at: now() + 24 * 3600,
        completed_at: null,
        request_counts: { total: lines.length, completed: 0, failed: 0 },
        metadata: (body.metadata as Record<string, string> | undefined) ?? null,
      };
      this.batches.set(batch.id, batch);
      setTimeout(() => this.completeBatch(batch, lines), this.options.batchDelayMs ?? 0).unref();
      return send(200, batch);
    }
    const batchPath = /^\/v1\/batches\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && batchPath) {
      const batch = this.batches.get(batchPath[1] as string);
      return batch ? send(200, batch) : send(404, openAiError(`No batch found with id '${batchPath[1]}'.`, 'invalid_request_error', null, 'batch_id'));
    }
    return send(404, openAiError(`Invalid URL (${req.method} ${req.url})`, 'invalid_request_error'));
  }

  /** Answers every line of a batch as the synchronous endpoint would; writes the output and error files. */
  private completeBatch(batch: StubBatch, lines: string[]): void {
    const output: string[] = [];
    const errors: string[] = [];
    for (const line of lines) {
      const requestId = `batch_req_${randomUUID().replace(/-/g, '').slice(0, 24)}`;
      let request: { custom_id?: string; method?: string; url?: string; body?: { model?: string; input?: unknown; encoding_format?: string; dimensions?: number } };
      try {
        request = JSON.parse(line) as typeof request;
      } catch {
        errors.push(JSON.stringify({ id: requestId, custom_id: null, response: null, error: { code: 'invalid_json', message: 'This line is not parseable as valid JSON.' } }));
        continue;
      }
      const inputs = typeof request.body?.input === 'string' ? [request.body.input] : (request.body?.input as string[] | undefined) ?? [];
      if (this.options.rejectMarker && inputs.some((i) => i.includes(this.options.rejectMarker as string))) {
        errors.push(JSON.stringify({ id: requestId, custom_id: request.custom_id, response: { status_code: 400, request_id: requestId, body: openAiError("This model's maximum context length is 8192 tokens, however you requested 9000 tokens.", 'invalid_request_error', null, 'input') }, error: null }));
        continue;
      }
      if (this.options.batchFailMarker && inputs.some((i) => i.includes(this.options.batchFailMarker as string))) {
        errors.push(JSON.stringify({ id: requestId, custom_id: request.custom_id, response: { status_code: 500, request_id: requestId, body: openAiError('The server had an error processing your request.', 'server_error') }, error: null }));
        continue;
      }
      const model = request.body?.model ?? '';
      const dimensions = request.body?.dimensions ?? this.options.dimensions;
      const tokens = inputs.reduce((sum, text) => sum + stubTokens(text), 0);
      this.batchInputs += inputs.length;
      const data = inputs.map((text, index) => {
        const vector = stubVector(text, dimensions, model);
        return { object: 'embedding', index, embedding: request.body?.encoding_format === 'base64' ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64') : Array.from(vector) };
      });
      output.push(JSON.stringify({ id: requestId, custom_id: request.custom_id, response: { status_code: 200, request_id: requestId, body: { object: 'list', data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } } }, error: null }));
    }
    const file = (content: string[]) => {
      const id = `file-${randomUUID().replace(/-/g, '').slice(0, 24)}`;
      this.files.set(id, { purpose: 'batch_output', filename: `${batch.id}_output.jsonl`, content: content.length ? `${content.join('\n')}\n` : '', createdAt: Math.floor(Date.now() / 1000) });
      return id;
    };
    Object.assign(batch, {
      status: 'completed',
      output_file_id: output.length > 0 ? file(output) : null,
      error_file_id: errors.length > 0 ? file(errors) : null,
      completed_at: Math.floor(Date.now() / 1000),
      request_counts: { total: lines.length, completed: output.length, failed: errors.length },
    });
  }

  /** OpenAI's wording for a request that does not fit its per-minute limits, or undefined if it fits. */
  private overLimit(model: string, tokens: number): { message: string; type: string; waitMs: number } | undefined {
    const now = Date.now();
    // Both checked before either is taken: a refused request consumes nothing.
    const requestWait = this.requestBucket?.waitFor(1, now) ?? 0;
    const tokenWait = this.tokenBucket?.waitFor(tokens, now) ?? 0;
    const describe = (kind: string, bucket: MinuteBucket, requested: number, waitMs: number) => ({
      message: `Rate limit reached for ${model} in organization org-stub on ${kind}: Limit ${bucket.limit}, Used ${bucket.limit - bucket.remaining(now)}, Requested ${requested}. Please try again in ${formatResetDuration(waitMs)}. Visit https://platform.openai.com/account/rate-limits to learn more.`,
      waitMs,
    });
    if (requestWait > 0 && this.requestBucket) return { ...describe('requests per min (RPM)', this.requestBucket, 1, requestWait), type: 'requests' };
    if (tokenWait > 0 && this.tokenBucket) return { ...describe('tokens per min (TPM)', this.tokenBucket, tokens, tokenWait), type: 'tokens' };
    this.requestBucket?.take(1, now);
    this.tokenBucket?.take(tokens, now);
    return undefined;
  }

  private rateLimitHeaders(): Record<string, string> {
    const headers: Record<string, string> = {};
    if (this.requestBucket) {
      headers['x-ratelimit-limit-requests'] = String(this.requestBucket.limit);
      headers['x-ratelimit-remaining-requests'] = String(this.requestBucket.remaining());
      headers['x-ratelimit-reset-requests'] = formatResetDuration(this.requestBucket.resetMs());
    }
    if (this.tokenBucket) {
      headers['x-ratelimit-limit-tokens'] = String(this.tokenBucket.limit);
      headers['x-ratelimit-remaining-tokens'] = String(this.tokenBucket.remaining());
      headers['x-ratelimit-reset-tokens'] = formatResetDuration(this.tokenBucket.resetMs());
    }
    return headers;
  }
}
