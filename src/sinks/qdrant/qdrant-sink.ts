import { QdrantClient } from '@qdrant/js-client-rest';
import { SchemaMismatchError, SinkError } from '../../core/errors.js';
import type { Distance } from '../../config/config.js';
import { pointId } from '../point-id.js';
import { withFields, type CollectionSpec, type Payload, type PayloadUpdate, type SearchHit, type SinkBatch, type SinkDelete, type SinkRecord, type StoredRecord, type VectorSink } from '../vector-sink.js';

/** Qdrant 1.16 added conditional updates (update_filter), which the version guards need. */
const MIN_QDRANT_MINOR = 16;
const QDRANT_DISTANCE: Record<Distance, 'Cosine' | 'Dot' | 'Euclid'> = { cosine: 'Cosine', dot: 'Dot', euclid: 'Euclid' };

export interface QdrantSinkOptions {
  url: string;
  apiKey: string | undefined;
  timeoutMs: number;
}

/** Qdrant through @qdrant/js-client-rest; every call waits for the write to be applied (wait=true). */
export class QdrantSink implements VectorSink {
  readonly kind = 'qdrant' as const;
  readonly remote = true;
  private readonly client: QdrantClient;

  constructor(
    readonly collection: CollectionSpec,
    options: QdrantSinkOptions,
  ) {
    // checkCompatibility off: the version check runs in the background and only warns; we check
    // what matters (the collection's vector parameters) in open().
    this.client = new QdrantClient({ url: options.url, apiKey: options.apiKey, timeout: options.timeoutMs, checkCompatibility: false });
  }

  async open(): Promise<void> {
    const { name, dimensions, distance } = this.collection;
    await this.requireConditionalUpdates();
    const exists = await this.call('check the collection', () => this.client.collectionExists(name));
    if (!exists.exists) {
      try {
        await this.client.createCollection(name, { vectors: { size: dimensions, distance: QDRANT_DISTANCE[distance] } });
      } catch (error) {
        // Another writer created it between our check and our create: fine, we check it below.
        if (statusOf(error) !== 409) throw toSinkError('create the collection', error);
      }
    }
    const info = await this.call('read the collection', () => this.client.getCollection(name));
    const vectors = info.config.params.vectors as { size?: number; distance?: string } | Record<string, unknown> | undefined;
    if (!vectors || typeof (vectors as { size?: unknown }).size !== 'number') {
      throw new SchemaMismatchError(`Qdrant collection "${name}" uses named vectors; the indexer writes one unnamed vector. Use another COLLECTION`, { vectors });
    }
    const { size, distance: actual } = vectors as { size: number; distance: string };
    if (size !== dimensions || actual !== QDRANT_DISTANCE[distance]) {
      throw new SchemaMismatchError(
        `Qdrant collection "${name}" holds ${size}-dimensional ${actual} vectors, but the configured embeddings model gives ${dimensions}-dimensional ${QDRANT_DISTANCE[distance]} vectors. ` +
          'Point COLLECTION at a new collection (re-index into it), or fix EMBEDDINGS_DIMENSIONS / VECTOR_DISTANCE',
        { expected: { size: dimensions, distance: QDRANT_DISTANCE[distance] }, actual: { size, distance: actual } },
      );
    }
  }

  /**
   * The version guards ride on conditional updates (`update_filter`, Qdrant 1.16+). An older server
   * would not apply them, and racing writers could then overwrite newer vectors unnoticed.
   */
  private async requireConditionalUpdates(): Promise<void> {
    const { version } = await this.call('read the server version', () => this.client.versionInfo());
    const [major = 0, minor = 0] = version.split('.').map(Number);
    if (major < 1 || (major === 1 && minor < MIN_QDRANT_MINOR)) {
      throw new SchemaMismatchError(`Qdrant ${version} is too old: the indexer needs 1.${MIN_QDRANT_MINOR} or newer (conditional updates guard against stale writes). Upgrade Qdrant`, { version });
    }
  }

  async upsert(records: SinkRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.call('upsert points', () => this.client.upsert(this.collection.name, { wait: true, ...this.upsertBody(records) }));
  }

  private upsertBody(records: SinkRecord[]) {
    return {
      points: records.map((r) => ({ id: pointId(r.itemId), vector: Array.from(r.vector), payload: r.payload })),
      // Conditional update (Qdrant >= 1.16): an existing point is replaced only when its version
      // is not newer; new points are always inserted. Skips are silent, by Qdrant's design.
      update_filter: versionGuard(records.map((r) => ({ itemId: r.itemId, version: r.payload.version }))),
    };
  }

  async delete(deletes: SinkDelete[]): Promise<void> {
    if (deletes.length === 0) return;
    await this.call('delete points', () => this.client.delete(this.collection.name, { wait: true, filter: versionGuard(deletes) }));
  }

  /** Upserts, payload overwrites and deletes as one `batch` request (plus a read for the payloads). */
  async write(batch: SinkBatch): Promise<{ missing: string[] }> {
    const { operations: overwrites, missing } = await this.payloadOperations(batch.payloads);
    const operations = [
      ...(batch.upserts.length > 0 ? [{ upsert: this.upsertBody(batch.upserts) }] : []),
      ...overwrites,
      ...(batch.deletes.length > 0 ? [{ delete: { filter: versionGuard(batch.deletes) } }] : []),
    ];
    if (operations.length > 0) await this.call('write a batch', () => this.client.batchUpdate(this.collection.name, { wait: true, operations }));
    return { missing };
  }

  async updatePayload(updates: PayloadUpdate[]): Promise<{ missing: string[] }> {
    const { operations, missing } = await this.payloadOperations(updates);
    // One request, one overwrite per point, each guarded by its own version.
    if (operations.length > 0) await this.call('overwrite payloads', () => this.client.batchUpdate(this.collection.name, { wait: true, operations }));
    return { missing };
  }

  /** One guarded overwrite per point that holds the update's text's vector; the rest are missing. */
  private async payloadOperations(updates: PayloadUpdate[]) {
    if (updates.length === 0) return { operations: [], missing: [] };
    const held = await this.call('retrieve points', () =>
      this.client.retrieve(this.collection.name, { ids: updates.map((u) => pointId(u.itemId)), with_payload: ['embedded_at', 'content_hash', 'model'], with_vector: false }),
    );
    // The vector stays, so does the time it was embedded. A point holding another text's vector
    // (an edit written meanwhile) is reported like a missing one: the writer embeds the text again.
    const wanted = new Map(updates.map((u) => [pointId(u.itemId), u.payload]));
    const matching = held.filter((p) => {
      const stored = (p.payload ?? {}) as { content_hash?: unknown; model?: unknown };
      const update = wanted.get(String(p.id));
      return update !== undefined && stored.content_hash === update.content_hash && stored.model === update.model;
    });
    const embeddedAt = new Map(matching.map((p) => [String(p.id), (p.payload as { embedded_at?: string } | null | undefined)?.embedded_at]));
    const missing = updates.filter((u) => !embeddedAt.has(pointId(u.itemId))).map((u) => u.itemId);
    const operations = updates
      .filter((u) => embeddedAt.has(pointId(u.itemId)))
      .map((u) => ({ overwrite_payload: { payload: withFields(u.payload, { embedded_at: u.payload.embedded_at || (embeddedAt.get(pointId(u.itemId)) ?? '') }), filter: versionGuard([{ itemId: u.itemId, version: u.payload.version }]) } }));
    return { operations, missing };
  }

  async retrieve(itemIds: string[], options: { withVectors?: boolean } = {}): Promise<StoredRecord[]> {
    if (itemIds.length === 0) return [];
    const points = await this.call('retrieve points', () =>
      this.client.retrieve(this.collection.name, { ids: itemIds.map(pointId), with_payload: true, with_vector: options.withVectors ?? false }),
    );
    return points.map((p) => toStored(p.payload, p.vector));
  }

  async search(vector: Float32Array, limit: number): Promise<SearchHit[]> {
    const result = await this.call('query points', () =>
      this.client.query(this.collection.name, { query: Array.from(vector), limit, with_payload: true }),
    );
    return result.points.map((p) => ({ ...toStored(p.payload, undefined), score: p.score }));
  }

  async *scan(options: { withVectors?: boolean; pageSize?: number } = {}): AsyncIterable<StoredRecord> {
    let offset: string | number | undefined | null;
    do {
      const page = await this.call('scroll points', () =>
        this.client.scroll(this.collection.name, {
          limit: options.pageSize ?? 256,
          with_payload: true,
          with_vector: options.withVectors ?? false,
          ...(offset === undefined || offset === null ? {} : { offset }),
        }),
      );
      for (const p of page.points) yield toStored(p.payload, p.vector);
      offset = page.next_page_offset as string | number | null | undefined;
    } while (offset !== undefined && offset !== null);
  }

  async count(): Promise<number> {
    const result = await this.call('count points', () => this.client.count(this.collection.name, { exact: true }));
    return result.count;
  }

  async drop(): Promise<void> {
    await this.call('delete the collection', () => this.client.deleteCollection(this.collection.name));
  }

  /** One update_aliases request: delete and create happen together, so searches never miss it. */
  async serveAs(alias: string): Promise<void> {
    const existing = await this.call('list the aliases', () => this.client.getAliases());
    const actions = [
      ...(existing.aliases.some((a) => a.alias_name === alias) ? [{ delete_alias: { alias_name: alias } }] : []),
      { create_alias: { collection_name: this.collection.name, alias_name: alias } },
    ];
    await this.call('switch the alias', () => this.client.updateCollectionAliases({ actions }));
  }

  async close(): Promise<void> {}

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      throw toSinkError(what, error);
    }
  }
}

/**
 * Matches each listed point only while its stored version is not newer than the given one. A
 * point without a version never matches a range, so points written by something else are left alone.
 */
export function versionGuard(items: { itemId: string; version: number }[]) {
  return {
    should: items.map((i) => ({ must: [{ has_id: [pointId(i.itemId)] }, { key: 'version', range: { lte: i.version } }] })),
  };
}

function toStored(payload: unknown, vector: unknown): StoredRecord {
  const p = (payload ?? {}) as Payload;
  const record: StoredRecord = { itemId: String(p.item_id), payload: p };
  if (Array.isArray(vector)) record.vector = vector as number[];
  return record;
}

function statusOf(error: unknown): number | undefined {
  const status = (error as { status?: unknown }).status;
  return typeof status === 'number' ? status : undefined;
}

/** Qdrant's own message from its error body {"status":{"error": "..."}}. */
function qdrantMessage(error: unknown): string {
  const data = (error as { data?: { status?: { error?: unknown } } }).data;
  const fromBody = data?.status?.error;
  return typeof fromBody === 'string' ? fromBody : (error as Error).message;
}

function toSinkError(what: string, error: unknown): SinkError {
  if (error instanceof SinkError) return error;
  const name = (error as Error).name;
  if (name === 'QdrantClientResourceExhaustedError') {
    const seconds = (error as { retry_after?: number }).retry_after ?? 1;
    return new SinkError('SINK_UNAVAILABLE', `Qdrant rate-limited the request to ${what} (429)`, { canRetry: true, retryAfterMs: seconds * 1000, cause: error });
  }
  if (name === 'QdrantClientTimeoutError') {
    return new SinkError('SINK_UNAVAILABLE', `Qdrant did not answer in time to ${what} (QDRANT_TIMEOUT_MS)`, { canRetry: true, cause: error });
  }
  const status = statusOf(error);
  if (status === undefined) {
    return new SinkError('SINK_UNAVAILABLE', `could not reach Qdrant to ${what}: ${(error as Error).message}`, { canRetry: true, cause: error });
  }
  const retryable = status === 408 || status === 429 || status >= 500;
  return new SinkError(retryable ? 'SINK_UNAVAILABLE' : 'SINK_REJECTED', `Qdrant answered ${status} to ${what}: ${qdrantMessage(error)}`, {
    canRetry: retryable,
    cause: error,
    details: { status },
  });
}
