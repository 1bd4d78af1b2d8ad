import type { IncomingMessage, ServerResponse } from 'node:http';
import { matchesFilter, UnsupportedFilter, type Payload } from './filter.js';
import { LoopbackServer } from '../loopback-server.js';
import { describeAjvError, QdrantSpec } from './spec.js';

/**
 * An in-memory stand-in for Qdrant's REST API (the subset the indexer uses), faithful to the wire:
 * every request is validated against Qdrant's OpenAPI spec, every answer too, and errors come with
 * Qdrant's status codes and bodies. Qdrant itself cannot run on this machine; the same sink
 * conformance suite runs against a real Qdrant when QDRANT_URL is set.
 */

type Distance = 'Cosine' | 'Dot' | 'Euclid' | 'Manhattan';
interface VectorParams {
  size: number;
  distance: Distance;
}
interface StoredPoint {
  id: string | number;
  vector: number[];
  payload: Payload;
  /** Qdrant's per-point version: the id of the operation that last changed it. */
  version: number;
}
interface Collection {
  vectors: VectorParams | Record<string, VectorParams>;
  points: Map<string, StoredPoint>;
  metadata: Record<string, unknown> | undefined;
}

class QdrantHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Qdrant's canonical id: u64 stays a number, a UUID becomes lower-case hyphenated. */
function canonicalId(id: unknown): string | number {
  if (typeof id === 'number' && Number.isInteger(id) && id >= 0) return id;
  if (typeof id === 'string' && UUID.test(id)) {
    const hex = id.replace(/-/g, '').toLowerCase();
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
  throw new QdrantHttpError(400, `Format error in JSON body: value ${String(id)} is not a valid point ID, valid values are either an unsigned integer or a UUID`);
}
const idKey = (id: string | number) => (typeof id === 'number' ? `n:${id}` : `u:${id}`);
/** Qdrant orders integer ids before UUIDs, each in its natural order. */
function compareIds(a: string | number, b: string | number): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'number') return -1;
  if (typeof b === 'number') return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

function normalize(vector: number[]): number[] {
  const norm = Math.sqrt(vector.reduce((s, v) => s + v * v, 0));
  return norm === 0 ? vector : vector.map((v) => Math.fround(v / norm));
}

function score(distance: Distance, stored: number[], query: number[]): number {
  switch (distance) {
    case 'Cosine':
    case 'Dot':
      return stored.reduce((s, v, i) => s + v * (query[i] as number), 0);
    case 'Euclid':
      return Math.sqrt(stored.reduce((s, v, i) => s + (v - (query[i] as number)) ** 2, 0));
    case 'Manhattan':
      return stored.reduce((s, v, i) => s + Math.abs(v - (query[i] as number)), 0);
  }
}
const higherIsBetter = (d: Distance) => d === 'Cosine' || d === 'Dot';

function selectPayload(payload: Payload, selector: unknown, defaultValue: boolean): Payload | undefined {
  const s = selector === undefined || selector === null ? defaultValue : selector;
  if (s === true) return payload;
  if (s === false) return undefined;
  if (Array.isArray(s)) return Object.fromEntries(Object.entries(payload).filter(([k]) => (s as string[]).includes(k)));
  const sel = s as { include?: string[]; exclude?: string[] };
  if (sel.include) return Object.fromEntries(Object.entries(payload).filter(([k]) => sel.include?.includes(k)));
  if (sel.exclude) return Object.fromEntries(Object.entries(payload).filter(([k]) => !sel.exclude?.includes(k)));
  return payload;
}

interface Route {
  method: string;
  template: string;
  pattern: RegExp;
  handle: (ctx: RequestContext) => unknown;
}
interface RequestContext {
  params: Record<string, string>;
  query: URLSearchParams;
  body: Record<string, unknown>;
}

export interface ContractServerOptions {
  apiKey?: string;
  /** The version the root endpoint reports (default: the spec's, 1.19.0). */
  version?: string;
}

export class QdrantContractServer {
  private readonly spec = new QdrantSpec();
  private readonly collections = new Map<string, Collection>();
  private readonly aliases = new Map<string, string>();
  private readonly routes: Route[] = [];
  private operationId = 0;
  private readonly http = new LoopbackServer((req, res) => this.onRequest(req, res));
  /** Every request, for tests that assert what was sent (method, path, query, body). */
  readonly requests: { method: string; path: string; query: string; body: unknown }[] = [];
  /**
   * Called with each valid request before it is applied; a test holds a request (a slow server,
   * a request in flight while another arrives) by returning a promise it settles later.
   */
  gate: ((request: { method: string; path: string; body: unknown }) => Promise<void>) | undefined;

  constructor(private readonly options: ContractServerOptions = {}) {
    this.route('GET', '/', () => ({ raw: { title: 'qdrant - vector search engine', version: this.options.version ?? '1.19.0', commit: 'contract-server' } }));
    // Tests list what they left behind here, as they would on a real Qdrant.
    this.route('GET', '/collections', () => ({ collections: [...this.collections.keys()].map((name) => ({ name })) }));
    this.route('GET', '/collections/{collection_name}/exists', ({ params }) => ({ exists: this.resolve(params.collection_name as string) !== undefined }));
    this.route('GET', '/collections/{collection_name}', ({ params }) => this.collectionInfo(params.collection_name as string));
    this.route('PUT', '/collections/{collection_name}', (ctx) => this.createCollection(ctx));
    this.route('DELETE', '/collections/{collection_name}', ({ params }) => {
      const name = params.collection_name as string;
      for (const [alias, target] of this.aliases) if (target === name) this.aliases.delete(alias);
      return this.collections.delete(name);
    });
    this.route('PUT', '/collections/{collection_name}/points', (ctx) => this.upsert(ctx));
    this.route('POST', '/collections/{collection_name}/points', (ctx) => this.retrieve(ctx));
    this.route('POST', '/collections/{collection_name}/points/delete', (ctx) => this.deletePoints(ctx));
    this.route('POST', '/collections/{collection_name}/points/scroll', (ctx) => this.scroll(ctx));
    this.route('POST', '/collections/{collection_name}/points/query', (ctx) => this.queryPoints(ctx));
    this.route('POST', '/collections/{collection_name}/points/count', (ctx) => this.countPoints(ctx));
    this.route('POST', '/collections/{collection_name}/points/payload', (ctx) => this.setPayload(ctx, false));
    this.route('PUT', '/collections/{collection_name}/points/payload', (ctx) => this.setPayload(ctx, true));
    this.route('POST', '/collections/{collection_name}/points/batch', (ctx) => this.batchUpdate(ctx));
    this.route('POST', '/collections/aliases', (ctx) => this.updateAliases(ctx));
    this.route('GET', '/collections/{collection_name}/aliases', ({ params }) => {
      const name = params.collection_name as string;
      if (!this.collections.has(name)) throw notFound(name);
      return { aliases: [...this.aliases].filter(([, c]) => c === name).map(([alias_name, collection_name]) => ({ alias_name, collection_name })) };
    });
    this.route('GET', '/aliases', () => ({ aliases: [...this.aliases].map(([alias_name, collection_name]) => ({ alias_name, collection_name })) }));
  }

  /** Listens on 127.0.0.1 (a random free port unless one is given); returns the base URL. */
  async start(port = 0): Promise<string> {
    return `${await this.http.start(port)}`;
  }

  stop(): Promise<void> {
    return this.http.stop();
  }

  private route(method: string, template: string, handle: Route['handle']): void {
    const pattern = new RegExp(`^${template.replace(/\{(\w+)\}/g, '(?<$1>[^/]+)')}$`);
    this.routes.push({ method, template, pattern, handle });
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const url = new URL(req.url ?? '/', 'http://localhost');
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const elapsed = () => Number(process.hrtime.bigint() - started) / 1e9;
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const fail = (status: number, message: string) => send(status, { status: { error: message }, time: elapsed() });

    let parsedBody: unknown;
    try {
      if (this.options.apiKey && req.headers['api-key'] !== this.options.apiKey && req.headers.authorization !== `Bearer ${this.options.apiKey}`) {
        return fail(401, 'Must provide an API key or an Authorization bearer token');
      }
      const matched = this.routes.map((r) => ({ r, m: req.method === r.method ? r.pattern.exec(url.pathname) : null })).find((x) => x.m);
      if (!matched?.m) return fail(404, `Not found: ${req.method} ${url.pathname}`);
      const { r, m } = matched;
      const validators = this.spec.operation(r.method, r.template);
      for (const [name, validate] of validators.query) {
        const value = url.searchParams.get(name);
        if (value === null) continue;
        const typed = value === 'true' ? true : value === 'false' ? false : /^\d+$/.test(value) ? Number(value) : value;
        if (!validate(typed)) return fail(400, `Query deserialize error: ${name}: ${describeAjvError(validate.errors, typed)}`);
      }
      try {
        parsedBody = raw.length === 0 ? undefined : JSON.parse(raw);
      } catch (error) {
        return fail(400, `Format error in JSON body: ${(error as Error).message}`);
      }
      this.requests.push({ method: r.method, path: url.pathname, query: url.search, body: parsedBody });
      if (validators.body) {
        if (parsedBody === undefined) return fail(400, 'Format error in JSON body: EOF while parsing a value at line 1 column 0');
        if (!validators.body(parsedBody)) {
          findInvalidPointId(parsedBody); // throws Qdrant's own message when an id is the problem
          return fail(400, `Format error in JSON body: ${describeAjvError(validators.body.errors, parsedBody)}`);
        }
      }
      if (this.gate) await this.gate({ method: r.method, path: url.pathname, body: parsedBody });
      const result = r.handle({ params: { ...(m.groups ?? {}) }, query: url.searchParams, body: (parsedBody ?? {}) as Record<string, unknown> });
      if (result && typeof result === 'object' && 'raw' in result) return send(200, (result as { raw: unknown }).raw);
      const body = { result, status: 'ok', time: elapsed() };
      if (validators.response && !validators.response(body)) {
        return fail(500, `contract server bug: its answer to ${validators.operationId} breaks the spec: ${describeAjvError(validators.response.errors, body)}`);
      }
      return send(200, body);
    } catch (error) {
      if (error instanceof QdrantHttpError) return fail(error.status, error.message);
      if (error instanceof UnsupportedFilter) return fail(500, `contract server does not implement this filter: ${error.message}`);
      return fail(500, `Service internal error: ${(error as Error).message}`);
    }
  }

  private resolve(name: string): Collection | undefined {
    return this.collections.get(this.aliases.get(name) ?? name);
  }

  private require(name: string): Collection {
    const collection = this.resolve(name);
    if (!collection) throw notFound(name);
    return collection;
  }

  private collectionInfo(name: string): unknown {
    const c = this.require(name);
    return {
      status: 'green',
      optimizer_status: 'ok',
      indexed_vectors_count: 0,
      points_count: c.points.size,
      segments_count: 2,
      config: {
        params: { vectors: c.vectors, shard_number: 1, replication_factor: 1, write_consistency_factor: 1, on_disk_payload: true },
        hnsw_config: { m: 16, ef_construct: 100, full_scan_threshold: 10000, max_indexing_threads: 0, on_disk: false },
        optimizer_config: { deleted_threshold: 0.2, vacuum_min_vector_number: 1000, default_segment_number: 0, max_segment_size: null, memmap_threshold: null, indexing_threshold: 10000, flush_interval_sec: 5, max_optimization_threads: null },
        wal_config: { wal_capacity_mb: 32, wal_segments_ahead: 0 },
        quantization_config: null,
        ...(c.metadata ? { metadata: c.metadata } : {}),
      },
      payload_schema: {},
    };
  }

  private createCollection({ params, body }: RequestContext): boolean {
    const name = params.collection_name as string;
    if (this.collections.has(name) || this.aliases.has(name)) throw new QdrantHttpError(409, `Wrong input: Collection \`${name}\` already exists!`);
    const vectors = body.vectors as VectorParams | Record<string, VectorParams> | undefined;
    if (!vectors) throw new QdrantHttpError(400, 'Wrong input: contract server needs "vectors" in the collection config');
    const all = 'size' in vectors ? [vectors as VectorParams] : Object.values(vectors);
    if (all.some((v) => v.size < 1)) throw new QdrantHttpError(422, 'Validation error in JSON body: [vectors.size: value 0 invalid, must be 1 or larger]');
    this.collections.set(name, { vectors, points: new Map(), metadata: body.metadata as Record<string, unknown> | undefined });
    return true;
  }

  private vectorParams(c: Collection): VectorParams {
    if (!('size' in c.vectors)) throw new QdrantHttpError(400, 'Wrong input: contract server supports unnamed vectors only for point writes');
    return c.vectors as VectorParams;
  }

  private checkVector(c: Collection, vector: unknown): number[] {
    const params = this.vectorParams(c);
    if (!Array.isArray(vector)) throw new QdrantHttpError(400, 'Wrong input: Not existing vector name error: ');
    if (vector.length !== params.size) throw new QdrantHttpError(400, `Wrong input: Vector dimension error: expected dim: ${params.size}, got ${vector.length}`);
    return params.distance === 'Cosine' ? normalize(vector as number[]) : (vector as number[]).map(Math.fround);
  }

  private updated(query: URLSearchParams): { operation_id: number; status: 'acknowledged' | 'completed' } {
    return { operation_id: ++this.operationId, status: query.get('wait') === 'true' ? 'completed' : 'acknowledged' };
  }

  private upsert({ params, query, body }: RequestContext): unknown {
    const c = this.require(params.collection_name as string);
    let incoming: { id: unknown; vector: unknown; payload: unknown }[];
    if ('batch' in body) {
      const b = body.batch as { ids: unknown[]; vectors: unknown[]; payloads?: unknown[] | null };
      incoming = b.ids.map((id, i) => ({ id, vector: b.vectors[i], payload: b.payloads?.[i] }));
    } else {
      incoming = body.points as { id: unknown; vector: unknown; payload: unknown }[];
    }
    // Validate everything first: Qdrant rejects the whole request on one bad point.
    const prepared = incoming.map((p) => ({ id: canonicalId(p.id), vector: this.checkVector(c, p.vector), payload: (p.payload ?? {}) as Payload }));
    const filter = body.update_filter as Record<string, unknown> | undefined;
    const mode = (body.update_mode as string | undefined) ?? 'upsert';
    const result = this.updated(query);
    for (const p of prepared) {
      const existing = c.points.get(idKey(p.id));
      if (existing) {
        if (mode === 'insert_only') continue;
        // Conditional update (v1.16+): an existing point that does not match is left as it is, silently.
        if (filter && !matchesFilter(existing, filter)) continue;
      } else if (mode === 'update_only') {
        continue;
      }
      c.points.set(idKey(p.id), { ...p, version: result.operation_id });
    }
    return result;
  }

  private selectIds(c: Collection, body: Record<string, unknown>): StoredPoint[] {
    if ('points' in body) {
      return (body.points as unknown[]).map((id) => c.points.get(idKey(canonicalId(id)))).filter((p): p is StoredPoint => p !== undefined);
    }
    return [...c.points.values()].filter((p) => matchesFilter(p, body.filter as Record<string, unknown>));
  }

  private deletePoints({ params, query, body }: RequestContext): unknown {
    const c = this.require(params.collection_name as string);
    for (const p of this.selectIds(c, body)) c.points.delete(idKey(p.id));
    return this.updated(query);
  }

  private record(p: StoredPoint, withPayload: unknown, withVector: unknown, payloadDefault: boolean): Record<string, unknown> {
    const out: Record<string, unknown> = { id: p.id };
    const payload = selectPayload(p.payload, withPayload, payloadDefault);
    if (payload !== undefined) out.payload = payload;
    if (withVector === true) out.vector = p.vector;
    return out;
  }

  private retrieve({ params, body }: RequestContext): unknown {
    const c = this.require(params.collection_name as string);
    const ids = (body.ids as unknown[]).map(canonicalId);
    return ids
      .map((id) => c.points.get(idKey(id)))
      .filter((p): p is StoredPoint => p !== undefined)
      .map((p) => this.record(p, body.with_payload, body.with_vector, true));
  }

  private scroll({ params, body }: RequestContext): unknown {
    const c = this.require(params.collection_name as string);
    const limit = (body.limit as number | undefined) ?? 10;
    const offset = body.offset === undefined || body.offset === null ? undefined : canonicalId(body.offset);
    const sorted = [...c.points.values()]
      .filter((p) => matchesFilter(p, body.filter as Record<string, unknown>))
      .sort((a, b) => compareIds(a.id, b.id))
      .filter((p) => offset === undefined || compareIds(p.id, offset) >= 0);
    const page = sorted.slice(0, limit);
    return { points: page.map((p) => this.record(p, body.with_payload, body.with_vector, true)), next_page_offset: sorted[limit]?.id ?? null };
  }

  private queryPoints({ params, body }: RequestContext): unknown {
    const c = this.require(params.collection_name as string);
    const { distance } = this.vectorParams(c);
    let query = body.query as unknown;
    if (query && typeof query === 'object' && !Array.isArray(query) && 'nearest' in query) query = (query as { nearest: unknown }).nearest;
    if (!Array.isArray(query)) throw new QdrantHttpError(500, 'contract server implements only nearest-vector queries');
    const vector = this.checkVector(c, query);
    const limit = (body.limit as number | undefined) ?? 10;
    const threshold = body.score_threshold as number | undefined;
    const scored = [...c.points.values()]
      .filter((p) => matchesFilter(p, body.filter as Record<string, unknown>))
      .map((p) => ({ p, s: score(distance, p.vector, vector) }))
      .filter(({ s }) => threshold === undefined || threshold === null || (higherIsBetter(distance) ? s >= threshold : s <= threshold))
      .sort((a, b) => (higherIsBetter(distance) ? b.s - a.s : a.s - b.s) || compareIds(a.p.id, b.p.id))
      .slice((body.offset as number | undefined) ?? 0)
      .slice(0, limit);
    return { points: scored.map(({ p, s }) => ({ ...this.record(p, body.with_payload, body.with_vector, false), version: p.version, score: Math.fround(s) })) };
  }

  private countPoints({ params, body }: RequestContext): unknown {
    const c = this.require(params.collection_name as string);
    return { count: [...c.points.values()].filter((p) => matchesFilter(p, body.filter as Record<string, unknown>)).length };
  }

  private setPayload({ params, query, body }: RequestContext, overwrite: boolean): unknown {
    const c = this.require(params.collection_name as string);
    if ('points' in body) {
      for (const id of (body.points as unknown[]).map(canonicalId)) {
        if (!c.points.has(idKey(id))) throw new QdrantHttpError(404, `Not found: No point with id ${id} found`);
      }
    }
    if (body.key) throw new QdrantHttpError(500, 'contract server does not implement set_payload with "key"');
    const result = this.updated(query);
    for (const p of this.selectIds(c, body)) {
      p.payload = overwrite ? { ...(body.payload as Payload) } : { ...p.payload, ...(body.payload as Payload) };
      p.version = result.operation_id;
    }
    return result;
  }

  /** Applies the operations in order; each answers as its own endpoint would. */
  private batchUpdate({ params, query, body }: RequestContext): unknown {
    const results: unknown[] = [];
    for (const operation of body.operations as Record<string, Record<string, unknown>>[]) {
      const ctx = { params, query, body: {} as Record<string, unknown> };
      if (operation.upsert) results.push(this.upsert({ ...ctx, body: operation.upsert }));
      else if (operation.delete) results.push(this.deletePoints({ ...ctx, body: operation.delete }));
      else if (operation.set_payload) results.push(this.setPayload({ ...ctx, body: operation.set_payload }, false));
      else if (operation.overwrite_payload) results.push(this.setPayload({ ...ctx, body: operation.overwrite_payload }, true));
      else throw new QdrantHttpError(500, `contract server does not implement batch operation ${Object.keys(operation).join(',')}`);
    }
    return results;
  }

  private updateAliases({ body }: RequestContext): boolean {
    // All actions are checked against a copy and applied together: the switch is atomic.
    const next = new Map(this.aliases);
    for (const action of body.actions as Record<string, Record<string, string>>[]) {
      if (action.create_alias) {
        const { collection_name, alias_name } = action.create_alias as { collection_name: string; alias_name: string };
        if (!this.collections.has(collection_name)) throw notFound(collection_name);
        if (this.collections.has(alias_name)) throw new QdrantHttpError(409, `Wrong input: Collection \`${alias_name}\` already exists!`);
        next.set(alias_name, collection_name);
      } else if (action.delete_alias) {
        const { alias_name } = action.delete_alias as { alias_name: string };
        if (!next.delete(alias_name)) throw new QdrantHttpError(404, `Not found: Alias ${alias_name} does not exists!`);
      } else if (action.rename_alias) {
        const { old_alias_name, new_alias_name } = action.rename_alias as { old_alias_name: string; new_alias_name: string };
        const target = next.get(old_alias_name);
        if (target === undefined) throw new QdrantHttpError(404, `Not found: Alias ${old_alias_name} does not exists!`);
        next.delete(old_alias_name);
        next.set(new_alias_name, target);
      }
    }
    this.aliases.clear();
    for (const [k, v] of next) this.aliases.set(k, v);
    return true;
  }
}

function notFound(name: string): QdrantHttpError {
  return new QdrantHttpError(404, `Not found: Collection \`${name}\` doesn't exist!`);
}

/** Qdrant's deserializer names a bad point id before anything else; find one where ids live. */
function findInvalidPointId(body: unknown): void {
  const b = body as Record<string, unknown>;
  const candidates: unknown[] = [];
  if (Array.isArray(b.points)) for (const p of b.points) candidates.push(p && typeof p === 'object' ? (p as { id?: unknown }).id : p);
  if (Array.isArray(b.ids)) candidates.push(...b.ids);
  if (b.batch && typeof b.batch === 'object' && Array.isArray((b.batch as { ids?: unknown }).ids)) candidates.push(...((b.batch as { ids: unknown[] }).ids));
  if (b.offset !== undefined && b.offset !== null) candidates.push(b.offset);
  for (const id of candidates) if (id !== undefined) canonicalId(id);
}
