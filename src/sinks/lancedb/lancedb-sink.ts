import * as lancedb from '@lancedb/lancedb';
import { Bool, Field, FixedSizeList, Float32, Float64, makeData, RecordBatch, Schema, Struct, Table, Utf8, vectorFromArray, type Data, type DataType } from 'apache-arrow';
import { SchemaMismatchError, SinkError } from '../../core/errors.js';
import type { Distance } from '../../config/config.js';
import { pointId } from '../point-id.js';
import { withFields, type CollectionSpec, type Payload, type PayloadUpdate, type SearchHit, type SinkBatch, type SinkDelete, type SinkRecord, type StoredRecord, type VectorSink } from '../vector-sink.js';

const LANCE_DISTANCE: Record<Distance, 'cosine' | 'dot' | 'l2'> = { cosine: 'cosine', dot: 'dot', euclid: 'l2' };
const DISTANCE_KEY = 'indexer.distance';
/**
 * Every this many commits the table is compacted: each merge-insert adds a small fragment, and
 * reading rows by id (payload-only updates) slows with every fragment not yet compacted.
 */
const OPTIMIZE_EVERY_COMMITS = 100;
/**
 * How far ahead LanceDB's scans (compaction's among them) read: it takes the value from its
 * environment at every scan, so it is one value for the whole process. Its own, 256 MiB on a local
 * disk (32 MiB per I/O thread), let a compaction hold that much of the files it rewrites.
 */
export const READ_AHEAD_ENV = 'LANCE_DEFAULT_IO_BUFFER_SIZE';
export const DEFAULT_READ_AHEAD_BYTES = 64 * 2 ** 20;
/**
 * The bound of each of the session's caches (file metadata, indexes). Under LanceDB's own (1 GiB
 * of metadata, 6 GiB of indexes) the metadata cache grew by 6-12 MiB every 100 commits, whatever
 * their size: over 3,000 commits of 10 rows, a writer's RSS rose from 232 to 490 MiB on a table
 * of 30k rows, and nothing but the 1 GiB would have stopped it.
 */
export const DEFAULT_CACHE_BYTES = 32 * 2 ** 20;

type Row = {
  id: string;
  item_id: string;
  vector: number[] | Float32Array;
  version: number;
  content_hash: string;
  model: string;
  source_updated_at: string | null;
  embedded_at: string;
  indexed_at: string;
  text_tokens: number;
  truncated: boolean;
  /** The item's metadata as JSON: LanceDB tables have a fixed schema, metadata does not. */
  metadata: string;
};

/**
 * LanceDB, embedded: the default sink for local runs and small deployments. One writer process per
 * table (LanceDB commits are optimistic; concurrent writers from many processes would conflict).
 */
export class LanceDbSink implements VectorSink {
  readonly kind = 'lancedb' as const;
  readonly remote = false;
  private db: lancedb.Connection | undefined;
  private table: lancedb.Table | undefined;
  private session: lancedb.Session | undefined;
  private commits = 0;
  private readonly schema: Schema;

  constructor(
    readonly collection: CollectionSpec,
    private readonly uri: string,
    private readonly options: { readAheadBytes?: number; cacheBytes?: number } = {},
  ) {
    this.schema = tableSchema(collection.dimensions, collection.distance);
  }

  async open(): Promise<void> {
    const { name, dimensions, distance } = this.collection;
    // Read by LanceDB at each scan, for every table of the process: the last sink opened sets it.
    process.env[READ_AHEAD_ENV] = String(this.options.readAheadBytes ?? DEFAULT_READ_AHEAD_BYTES);
    this.session = this.boundedSession();
    this.db = await this.connect(this.session);
    const names = await this.db.tableNames();
    if (!names.includes(name)) {
      try {
        await this.db.createEmptyTable(name, this.schema, { mode: 'create', existOk: true });
      } catch (error) {
        throw new SinkError('SINK_UNAVAILABLE', `could not create LanceDB table "${name}" in ${this.uri}: ${(error as Error).message}`, { canRetry: true, cause: error });
      }
    }
    this.table = await this.db.openTable(name);
    const schema = await this.table.schema();
    const vectorField = schema.fields.find((f) => f.name === 'vector');
    const size = vectorField?.type instanceof FixedSizeList ? vectorField.type.listSize : (vectorField?.type as { listSize?: number } | undefined)?.listSize;
    const storedDistance = schema.metadata.get(DISTANCE_KEY);
    if (size !== dimensions || storedDistance !== distance) {
      throw new SchemaMismatchError(
        `LanceDB table "${name}" in ${this.uri} holds ${size ?? 'unknown'}-dimensional ${storedDistance ?? 'unknown-distance'} vectors, but the configured embeddings model gives ${dimensions}-dimensional ${distance} vectors. ` +
          'Point COLLECTION at a new table (re-index into it), or fix EMBEDDINGS_DIMENSIONS / VECTOR_DISTANCE',
        { expected: { size: dimensions, distance }, actual: { size, distance: storedDistance } },
      );
    }
  }

  async upsert(records: SinkRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.mergeRows(records);
  }

  async delete(deletes: SinkDelete[]): Promise<void> {
    if (deletes.length === 0) return;
    const guarded = deletes.map((d) => `(id = '${pointId(d.itemId)}' AND version <= ${versionLiteral(d.version)})`).join(' OR ');
    await this.call('delete rows', () => this.requireTable().delete(guarded));
    await this.afterCommit();
  }

  /** Upserts and payload updates in one merge-insert (one commit), deletes in a second. */
  async write(batch: SinkBatch): Promise<{ missing: string[] }> {
    const { merged, missing } = await this.payloadRows(batch.payloads);
    const records = [...batch.upserts, ...merged];
    if (records.length > 0) await this.mergeRows(records);
    await this.delete(batch.deletes);
    return { missing };
  }

  async updatePayload(updates: PayloadUpdate[]): Promise<{ missing: string[] }> {
    const { merged, missing } = await this.payloadRows(updates);
    if (merged.length > 0) await this.mergeRows(merged);
    return { missing };
  }

  /** The stored rows of the updated items, with their new payload and their vector kept. */
  private async payloadRows(updates: PayloadUpdate[]): Promise<{ merged: SinkRecord[]; missing: string[] }> {
    if (updates.length === 0) return { merged: [], missing: [] };
    // LanceDB updates rows by SQL expression, one value set per call; reading the rows and merging
    // them back with their new payload (guarded like any upsert) is one commit for the batch.
    const rows = (await this.call('read rows', () => this.requireTable().query().where(idPredicate(updates.map((u) => u.itemId))).toArray())) as Row[];
    // A row holding another text's vector (an edit written meanwhile) must not get this text's
    // payload over it: it is reported like a missing one, and the writer embeds the text again.
    const updateOf = new Map(updates.map((u) => [u.itemId, u]));
    const byId = new Map(rows.filter((r) => holdsVectorOf(r, updateOf.get(r.item_id))).map((r) => [r.item_id, r]));
    const missing = updates.filter((u) => !byId.has(u.itemId)).map((u) => u.itemId);
    const merged = updates.flatMap((u) => {
      const row = byId.get(u.itemId);
      if (!row) return [];
      // The vector stays, so does the time it was embedded.
      const payload = withFields(u.payload, { embedded_at: u.payload.embedded_at || row.embedded_at });
      return [{ itemId: u.itemId, vector: Float32Array.from(row.vector as ArrayLike<number>), payload }];
    });
    return { merged, missing };
  }

  /** Inserts new rows; replaces an existing row only when its version is not newer (the guard). */
  private async mergeRows(records: SinkRecord[]): Promise<void> {
    const rows = toArrowTable(this.schema, records);
    await this.call('upsert rows', () =>
      this.requireTable().mergeInsert('id').whenMatchedUpdateAll({ where: 'target.version <= source.version' }).whenNotMatchedInsertAll().execute(rows),
    );
    await this.afterCommit();
  }

  async retrieve(itemIds: string[], options: { withVectors?: boolean } = {}): Promise<StoredRecord[]> {
    if (itemIds.length === 0) return [];
    const rows = (await this.call('read rows', () => this.requireTable().query().where(idPredicate(itemIds)).toArray())) as Row[];
    return rows.map((row) => fromRow(row, options.withVectors ?? false));
  }

  async search(vector: Float32Array, limit: number): Promise<SearchHit[]> {
    const distance = this.collection.distance;
    const rows = (await this.call('search', () =>
      this.requireTable().vectorSearch(Array.from(vector)).distanceType(LANCE_DISTANCE[distance]).limit(limit).toArray(),
    )) as (Row & { _distance: number })[];
    return rows.map((row) => ({ ...fromRow(row, false), score: distance === 'euclid' ? Math.sqrt(row._distance) : 1 - row._distance }));
  }

  async *scan(options: { withVectors?: boolean; pageSize?: number } = {}): AsyncIterable<StoredRecord> {
    const table = this.requireTable();
    for await (const batch of table.query()) {
      for (const row of batch.toArray() as unknown as Row[]) yield fromRow(row, options.withVectors ?? false);
    }
  }

  async count(): Promise<number> {
    return this.call('count rows', () => this.requireTable().countRows());
  }

  async drop(): Promise<void> {
    const db = this.db ?? (await this.connect(this.boundedSession()));
    this.table?.close();
    this.table = undefined;
    try {
      if ((await db.tableNames()).includes(this.collection.name)) await this.call('drop the table', () => db.dropTable(this.collection.name));
    } finally {
      // A sink dropped without being opened (a re-index dropping an old generation) closes what it opened.
      if (db !== this.db) db.close();
    }
  }

  async close(): Promise<void> {
    this.table?.close();
    this.db?.close();
    this.table = undefined;
    this.db = undefined;
    this.session = undefined;
  }

  /** What LanceDB's caches hold for this sink now (bounded by LANCEDB_CACHE_MIB). */
  cacheBytes(): number {
    return Number(this.session?.sizeBytes() ?? 0n);
  }

  /** LanceDB's caches (index, metadata), each bounded (see DEFAULT_CACHE_BYTES). */
  private boundedSession(): lancedb.Session {
    const cacheBytes = BigInt(this.options.cacheBytes ?? DEFAULT_CACHE_BYTES);
    return new lancedb.Session(cacheBytes, cacheBytes);
  }

  private connect(session: lancedb.Session): Promise<lancedb.Connection> {
    return this.call('connect', () => lancedb.connect(this.uri, { session }));
  }

  private requireTable(): lancedb.Table {
    if (!this.table) throw new Error('LanceDbSink used before open()');
    return this.table;
  }

  private async afterCommit(): Promise<void> {
    this.commits++;
    if (this.commits % OPTIMIZE_EVERY_COMMITS === 0) {
      // Compaction merges small fragments; old versions older than a minute are dropped.
      await this.call('optimize', () => this.requireTable().optimize({ cleanupOlderThan: new Date(Date.now() - 60_000) }));
    }
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      if (error instanceof SinkError) throw error;
      // LanceDB errors are I/O or commit conflicts: worth retrying; bad rows are caught before.
      throw new SinkError('SINK_UNAVAILABLE', `LanceDB could not ${what} in ${this.uri}: ${(error as Error).message}`, { canRetry: true, cause: error });
    }
  }
}

function holdsVectorOf(row: Row, update: PayloadUpdate | undefined): boolean {
  return update !== undefined && row.content_hash === update.payload.content_hash && row.model === update.payload.model;
}

function tableSchema(dimensions: number, distance: Distance): Schema {
  return new Schema(
    [
      new Field('id', new Utf8(), false),
      new Field('item_id', new Utf8(), false),
      new Field('vector', new FixedSizeList(dimensions, new Field('item', new Float32(), true)), false),
      new Field('version', new Float64(), false),
      new Field('content_hash', new Utf8(), false),
      new Field('model', new Utf8(), false),
      new Field('source_updated_at', new Utf8(), true),
      new Field('embedded_at', new Utf8(), false),
      new Field('indexed_at', new Utf8(), false),
      new Field('text_tokens', new Float64(), false),
      new Field('truncated', new Bool(), false),
      new Field('metadata', new Utf8(), false),
    ],
    new Map([[DISTANCE_KEY, distance]]),
  );
}

function versionLiteral(version: number): string {
  // Versions are safe integers (checked at ingest); written as a float64 literal to match the column.
  return `${version}.0`;
}

function idPredicate(itemIds: string[]): string {
  // Point ids are UUIDs: nothing in them needs escaping.
  return `id IN (${itemIds.map((id) => `'${pointId(id)}'`).join(', ')})`;
}

/**
 * The records as one Arrow table, column by column: every vector goes into one Float32Array that
 * becomes the vector column as it is. Rows of JS objects would make Arrow convert each float on
 * its own, which was the writer's largest cost.
 */
function toArrowTable(schema: Schema, records: SinkRecord[]): Table {
  const dimensions = (schema.fields.find((f) => f.name === 'vector')?.type as FixedSizeList).listSize;
  const floats = new Float32Array(records.length * dimensions);
  records.forEach((r, i) => floats.set(r.vector, i * dimensions));
  const systems = records.map((r) => splitPayload(r.payload));
  const columns: Record<string, unknown[]> = {
    id: records.map((r) => pointId(r.itemId)),
    item_id: systems.map((p) => p.item_id),
    version: systems.map((p) => p.version),
    content_hash: systems.map((p) => p.content_hash),
    model: systems.map((p) => p.model),
    source_updated_at: systems.map((p) => p.source_updated_at),
    embedded_at: systems.map((p) => p.embedded_at),
    indexed_at: systems.map((p) => p.indexed_at),
    text_tokens: systems.map((p) => p.text_tokens),
    truncated: systems.map((p) => p.truncated),
    metadata: systems.map((p) => JSON.stringify(p.metadata)),
  };
  const children = schema.fields.map((field) => {
    if (field.name === 'vector') {
      const type = field.type as FixedSizeList;
      return makeData({ type, length: records.length, nullCount: 0, child: makeData({ type: type.children[0]?.type as Float32, length: floats.length, data: floats }) });
    }
    return columnData(columns[field.name] as unknown[], field.type as DataType);
  });
  const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: records.length, nullCount: 0, children }));
  return new Table(schema, [batch]);
}

/**
 * One column's Arrow data, its buffers filled directly: apache-arrow's vectorFromArray goes through
 * a builder value by value, 5 times slower for strings and 50 times for numbers, which made it the
 * writer's largest JavaScript cost after the vectors went in as one Float32Array.
 */
export function columnData(values: unknown[], type: DataType): Data {
  if (type instanceof Utf8) return utf8Data(values as (string | null | undefined)[]);
  if (type instanceof Float64) return makeData({ type, length: values.length, nullCount: 0, data: Float64Array.from(values as number[]) });
  if (type instanceof Bool) return makeData({ type, length: values.length, nullCount: 0, data: bitmap(values, Boolean) });
  return vectorFromArray(values, type).data[0] as Data;
}

/** UTF-8 bytes end to end with their offsets; a null (only in nullable columns) is cleared in the validity bitmap. */
function utf8Data(values: (string | null | undefined)[]): Data<Utf8> {
  const offsets = new Int32Array(values.length + 1);
  let bytes = 0;
  let nulls = 0;
  values.forEach((value, i) => {
    if (value == null) nulls++;
    else bytes += Buffer.byteLength(value);
    offsets[i + 1] = bytes;
  });
  const data = Buffer.allocUnsafe(bytes);
  values.forEach((value, i) => {
    if (value != null) data.write(value, offsets[i] as number, 'utf8');
  });
  const validity = nulls > 0 ? bitmap(values, (value) => value != null) : undefined;
  return makeData({ type: new Utf8(), length: values.length, nullCount: nulls, nullBitmap: validity, valueOffsets: offsets, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
}

/** Arrow's bit-packed form (booleans, validity): bit i set where `isSet` holds for value i. */
function bitmap<T>(values: T[], isSet: (value: T) => boolean): Uint8Array {
  const bits = new Uint8Array((values.length + 7) >> 3);
  values.forEach((value, i) => {
    if (isSet(value)) bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7));
  });
  return bits;
}

function splitPayload(payload: Payload) {
  const { item_id, version, content_hash, model, source_updated_at, embedded_at, indexed_at, text_tokens, truncated, ...metadata } = payload;
  return { item_id, version, content_hash, model, source_updated_at, embedded_at, indexed_at, text_tokens, truncated, metadata };
}

function fromRow(row: Row, withVectors: boolean): StoredRecord {
  const payload: Payload = {
    ...(JSON.parse(row.metadata) as Record<string, unknown>),
    item_id: row.item_id,
    version: row.version,
    content_hash: row.content_hash,
    model: row.model,
    source_updated_at: row.source_updated_at ?? null,
    embedded_at: row.embedded_at,
    indexed_at: row.indexed_at,
    text_tokens: row.text_tokens,
    truncated: row.truncated,
  };
  const record: StoredRecord = { itemId: row.item_id, payload };
  if (withVectors) record.vector = Array.from(row.vector as ArrayLike<number>);
  return record;
}
