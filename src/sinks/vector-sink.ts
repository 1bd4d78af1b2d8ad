import type { Distance } from '../config/config.js';

/** Fields the indexer writes beside the item's metadata; metadata never overrides them. */
export interface SystemPayload {
  item_id: string;
  version: number;
  content_hash: string;
  model: string;
  source_updated_at: string | null;
  embedded_at: string;
  indexed_at: string;
  /** Tokens of the embedded text, and whether it was cut to EMBEDDINGS_MAX_INPUT_TOKENS. */
  text_tokens: number;
  truncated: boolean;
}

export type Payload = SystemPayload & Record<string, unknown>;

export const SYSTEM_FIELDS: readonly (keyof SystemPayload)[] = ['item_id', 'version', 'content_hash', 'model', 'source_updated_at', 'embedded_at', 'indexed_at', 'text_tokens', 'truncated'];

export interface SinkRecord {
  itemId: string;
  vector: Float32Array;
  payload: Payload;
}

/** A record as read back from a sink. */
export interface StoredRecord {
  itemId: string;
  payload: Payload;
  vector?: number[];
}

export interface SearchHit extends StoredRecord {
  /** As Qdrant reports it: similarity for cosine and dot (higher is closer), distance for euclid. */
  score: number;
}

export interface CollectionSpec {
  name: string;
  dimensions: number;
  distance: Distance;
}

/** A delete, guarded by the version of the change that deleted the item. */
export interface SinkDelete {
  itemId: string;
  version: number;
}

/** One writer batch: distinct items, each in one list. */
export interface SinkBatch {
  upserts: SinkRecord[];
  payloads: PayloadUpdate[];
  deletes: SinkDelete[];
}

/** A metadata-only change: the stored vector stays, the payload (with the new version) is replaced. */
export interface PayloadUpdate {
  itemId: string;
  payload: Payload;
}

/**
 * The port every vector store implements. Writes are idempotent (upserting the same record twice,
 * deleting a missing item, are no-ops) so that the queue may redeliver them freely, and guarded by
 * version inside the store: a write never replaces or deletes a point holding a newer version,
 * even when two writers race (see docs/ARCHITECTURE.md, "Newest version wins").
 */
export interface VectorSink {
  readonly kind: 'qdrant' | 'lancedb';
  /**
   * A server that may apply a request after its client gave up (a timeout, a reset): the writer
   * then keeps the item locked for a lease. False for an embedded store, whose failed commit did
   * not happen.
   */
  readonly remote: boolean;
  readonly collection: CollectionSpec;
  /**
   * Creates the collection when missing; throws SchemaMismatchError when an existing one has
   * another vector size or distance (invariant 4: the writer refuses to start).
   */
  open(): Promise<void>;
  /** Inserts new points; replaces an existing point only when its version is not newer. */
  upsert(records: SinkRecord[]): Promise<void>;
  /** Deletes points whose version is not newer than the delete's. */
  delete(deletes: SinkDelete[]): Promise<void>;
  /**
   * Replaces the payload of points whose version is not newer and whose vector is the update's
   * text's (same content_hash and model); returns the items it does not hold so (absent, or holding
   * another text's vector), which the writer sends back to be embedded.
   */
  updatePayload(updates: PayloadUpdate[]): Promise<{ missing: string[] }>;
  /**
   * What the writer calls: upsert, updatePayload and delete of distinct items in one call (one
   * commit or one request where the store allows), with the same guards and answers as the three.
   */
  write(batch: SinkBatch): Promise<{ missing: string[] }>;
  retrieve(itemIds: string[], options?: { withVectors?: boolean }): Promise<StoredRecord[]>;
  search(vector: Float32Array, limit: number): Promise<SearchHit[]>;
  /** Every record, in pages; for export and verification. */
  scan(options?: { withVectors?: boolean; pageSize?: number }): AsyncIterable<StoredRecord>;
  count(): Promise<number>;
  /** Deletes the whole collection (a re-index dropping an old generation). Idempotent. */
  drop(): Promise<void>;
  /**
   * Where the store has aliases (Qdrant): points `alias` at this collection in one atomic
   * operation, whatever it pointed at before (a re-index switching the serving name).
   */
  serveAs?(alias: string): Promise<void>;
  close(): Promise<void>;
}

/** The payload as written: metadata first, so that system fields always win a name clash. */
export function buildPayload(metadata: Record<string, unknown>, system: SystemPayload): Payload {
  return withFields(metadata, system);
}

/**
 * `{ ...base, ...fields }`, by Object.assign: V8 (Node 20) spreads property by property, ~15 µs per
 * payload. Object.assign *sets* a key named "__proto__" (JSON.parse makes it an own key of the
 * metadata): the copy's prototype would change and the key be lost, so such a base is spread.
 */
export function withFields<B extends object, F extends object>(base: B, fields: F): B & F {
  return Object.hasOwn(base, '__proto__') ? { ...base, ...fields } : Object.assign({}, base, fields);
}
