import { InvalidEventError } from '../core/errors.js';

/**
 * Debezium change events, read as they come from Kafka Connect's JsonConverter: the envelope
 * (`before`, `after`, `op`, `source`, `ts_ms`), with or without the converter's schema wrapper
 * (`{"schema": ..., "payload": ...}`). The envelope is turned into what the plain parser reads, as
 * Debezium's own ExtractNewRecordState SMT would: the row (of `after`; of `before` for a delete) is
 * the event, and its columns are what EVENT_TEXT_TEMPLATE, EVENT_ID_FIELD and the rest name.
 */

/** Debezium's operations: create, update, delete, read (a snapshot row), truncate, message. */
const OPERATIONS = new Set(['c', 'u', 'd', 'r', 't', 'm']);

/** The table an event came from, as `database.schema.table` (no schema where the database has none). */
export type TableName = string;

export interface EnvelopeOrdering {
  version: number;
  /** A subset of change-event's VersionSource (not imported: change-event imports this module). */
  versionSource: 'version' | 'updated_at';
  /** source.ts_ms as ISO 8601: when the database committed the change. */
  updatedAt: string | undefined;
}

export type EnvelopeChange =
  | ({ kind: 'row'; op: 'upsert' | 'delete'; row: Record<string, unknown>; table: TableName } & EnvelopeOrdering)
  | ({ kind: 'truncate'; table: TableName } & EnvelopeOrdering);

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * The payload of JsonConverter's `schemas.enable=true` form: exactly `schema` (a Connect schema,
 * which always names its `type`, or null) and `payload`. Anything else is returned as it is.
 */
export function unwrapSchema(value: unknown): unknown {
  if (!isObject(value)) return value;
  const keys = Object.keys(value);
  if (keys.length !== 2 || !('schema' in value) || !('payload' in value)) return value;
  const schema = value.schema;
  if (schema !== null && !(isObject(schema) && typeof schema.type === 'string')) return value;
  return value.payload;
}

/** A Debezium envelope by its shape: an `op` of Debezium's and a `source` naming its connector. */
/**
 * An object with Debezium's `op` and a `before` or `after` but no `source.connector`: an envelope
 * cut short (a transform that dropped `source`), not a plain event with an odd op.
 */
export function isEnvelopeWithoutSource(value: unknown): boolean {
  return isObject(value) && typeof value.op === 'string' && OPERATIONS.has(value.op) && ('after' in value || 'before' in value) && !isDebeziumEnvelope(value);
}

export function isDebeziumEnvelope(value: unknown): value is Json {
  return isObject(value) && typeof value.op === 'string' && OPERATIONS.has(value.op) && isObject(value.source) && typeof value.source.connector === 'string';
}

function tableOf(source: Json): TableName {
  const parts = [source.db, source.schema, source.table].filter((part): part is string => typeof part === 'string' && part !== '');
  if (typeof source.table !== 'string' || parts.length === 0) {
    throw new InvalidEventError('the Debezium envelope\'s "source" names no table (source.table): it is not a row change of a table', 'source.table');
  }
  return parts.join('.');
}

/**
 * The order of the changes of one row. PostgreSQL's LSN grows across the whole database (a row's
 * later change always has a higher one, since its earlier change committed first), so it is a
 * version; connectors without one (MySQL, ...) fall back to the commit time, source.ts_ms, which
 * is epoch ms like updated_at and as coarse: two commits of one row within a millisecond tie.
 */
function orderingOf(source: Json): EnvelopeOrdering {
  const updatedAt = typeof source.ts_ms === 'number' && Number.isFinite(source.ts_ms) ? new Date(source.ts_ms).toISOString() : undefined;
  if (source.lsn !== undefined && source.lsn !== null) {
    const lsn = source.lsn;
    if (typeof lsn !== 'number' || !Number.isInteger(lsn) || lsn < 0) {
      throw new InvalidEventError(`the Debezium envelope's source.lsn must be a non-negative integer, got ${JSON.stringify(lsn)}`, 'source.lsn');
    }
    if (!Number.isSafeInteger(lsn)) {
      // JSON.parse has already rounded it: two changes could now tie, or swap.
      throw new InvalidEventError(
        `the Debezium envelope's source.lsn ${String(lsn)} is over 2^53-1, where JSON numbers lose digits and changes could no longer be ordered (a database past 8 PiB of WAL)`,
        'source.lsn',
      );
    }
    return { version: lsn, versionSource: 'version', updatedAt };
  }
  if (typeof source.ts_ms === 'number' && Number.isSafeInteger(source.ts_ms) && source.ts_ms >= 0) {
    return { version: source.ts_ms, versionSource: 'updated_at', updatedAt };
  }
  throw new InvalidEventError('the Debezium envelope\'s "source" has neither lsn nor ts_ms: nothing orders this change against the row\'s others', 'source.lsn');
}

function rowOf(envelope: Json, field: 'before' | 'after'): Json | undefined {
  const row = envelope[field];
  if (row === undefined || row === null) return undefined;
  if (!isObject(row)) throw new InvalidEventError(`the Debezium envelope's "${field}" must be an object (the row) or null, got ${Array.isArray(row) ? 'an array' : typeof row}`, field);
  return row;
}

/** Reads an envelope (already unwrapped, see unwrapSchema) into a row change or a truncate. */
export function readEnvelope(envelope: Json): EnvelopeChange {
  const source = envelope.source as Json;
  const op = envelope.op as string;
  if (op === 'm') {
    throw new InvalidEventError('a Debezium message event (op "m", from pg_logical_emit_message) carries no row: route message events to another topic', 'op');
  }
  const table = tableOf(source);
  const ordering = orderingOf(source);
  if (op === 't') return { kind: 'truncate', table, ...ordering };
  if (op === 'd') {
    // With REPLICA IDENTITY DEFAULT `before` holds the key columns only, which is all a delete needs;
    // with none at all, the id comes from the message key.
    return { kind: 'row', op: 'delete', row: rowOf(envelope, 'before') ?? {}, table, ...ordering };
  }
  const after = rowOf(envelope, 'after');
  if (after === undefined) throw new InvalidEventError(`a Debezium "${op}" event must carry the row in "after", got null`, 'after');
  return { kind: 'row', op: 'upsert', row: after, table, ...ordering };
}

/**
 * The item id in a struct key (Debezium keys a row by its primary key: `{"id": 123}`, or
 * schema-wrapped): its one field. A composite key is refused (see below). Undefined when the key
 * is not a JSON object at all (a plain id).
 */
export function structKeyId(keyText: string, idField: string): string | undefined {
  if (!keyText.startsWith('{')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(keyText);
  } catch {
    return undefined;
  }
  const struct = unwrapSchema(parsed);
  if (!isObject(struct)) return undefined;
  const fields = Object.keys(struct);
  if (fields.length > 1) {
    // A composite primary key: its fields together name the row. Taking one of them would make
    // {tenant 1, id 5} and {tenant 2, id 5} one item, each overwriting and deleting the other.
    throw new InvalidEventError(
      `the message key ${keyText.length > 200 ? `${keyText.slice(0, 200)}...` : keyText} is a composite key (${fields.join(', ')}): the indexer needs one field that names the item. Key the topic by a unique column (Debezium's message.key.columns=<schema>.<table>:<column>) and set EVENT_ID_FIELD to it`,
      'key',
    );
  }
  if (fields.length === 0) throw new InvalidEventError('the message key is an empty struct: Debezium keys a row by its primary key; give the table one', 'key');
  // The key's one field, whatever its name: the row is checked against EVENT_ID_FIELD after.
  const raw = struct[fields[0] as string];
  if (typeof raw === 'string') return raw;
  if (typeof raw === 'number' && Number.isSafeInteger(raw)) return String(raw);
  throw new InvalidEventError(`the message key's field "${idField}" must be a string or an integer, got ${JSON.stringify(raw)}`, 'key');
}
