import { InvalidEventError } from '../core/errors.js';
import type { Config } from '../config/config.js';
import { isEnvelopeWithoutSource, isDebeziumEnvelope, readEnvelope, structKeyId, unwrapSchema, type TableName } from './debezium.js';

export type Operation = 'upsert' | 'delete';

/**
 * Where an event's version comes from. Versions of two sources never compare: a `version` counter
 * (42) is always "older" than a time in epoch ms (1.8e12), so an item keeps one source for good
 * (the item state records it; an event of another source is dead-lettered, see OBSERVE).
 */
export type VersionSource = 'version' | 'updated_at' | 'kafka_timestamp';

/** A change event after validation and field mapping: the only shape the pipeline sees. */
export interface ChangeEvent {
  itemId: string;
  op: Operation;
  /** Orders the item's events: the version field, else updated_at in ms, else the Kafka timestamp. */
  version: number;
  versionSource: VersionSource;
  /** ISO 8601, as the producer sent it, when it did. */
  updatedAt: string | undefined;
  /** The text to embed (templated already); undefined for deletes. */
  text: string | undefined;
  metadata: Record<string, unknown>;
}

export type EventMapping = Config['events'];

export interface RawMessage {
  key: Buffer | null;
  value: Buffer | null;
  /** Kafka record timestamp in ms: the last resort for ordering (none for a file's lines). */
  timestampMs: number | undefined;
}

const MAX_ID_LENGTH = 512;
/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Reads `a.b.c` from nested objects; a key that itself contains dots is tried whole first. */
export function readPath(source: unknown, path: string): unknown {
  if (source === null || typeof source !== 'object') return undefined;
  const record = source as Record<string, unknown>;
  if (path in record) return record[path];
  let current: unknown = source;
  for (const part of path.split('.')) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}

function renderValue(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return value.map(renderValue).filter(Boolean).join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/**
 * `{title}\n{description}`: each `{path}` is replaced by that field; `{{` and `}}` are literal
 * braces. `filled` counts the placeholders that found a value: a template whose fields are all
 * missing renders only its punctuation, which is nothing worth embedding.
 */
export function renderTemplate(template: string, event: unknown): { text: string; filled: number } {
  let filled = 0;
  const text = template
    .replace(/\{\{|\}\}|\{([^{}]+)\}/g, (match, path: string | undefined) => {
      if (match === '{{') return '{';
      if (match === '}}') return '}';
      const value = renderValue(readPath(event, (path ?? '').trim()));
      if (value.trim() !== '') filled++;
      return value;
    })
    .trim();
  return { text, filled };
}

/**
 * The item a message key names: the key itself, or, unless EVENT_FORMAT=plain, the id inside a
 * struct key (Debezium keys rows by their primary key: `{"id":123}`, maybe schema-wrapped).
 */
function keyIdOf(key: Buffer | null, mapping: EventMapping): { id: string; text: string; struct: boolean } | undefined {
  if (key === null || key.length === 0) return undefined;
  const text = key.toString('utf8');
  const fromStruct = mapping.format === 'plain' ? undefined : structKeyId(text, mapping.idField);
  return fromStruct === undefined ? { id: text, text, struct: false } : { id: fromStruct, text, struct: true };
}

function parseItemId(body: Record<string, unknown>, key: Buffer | null, mapping: EventMapping): string {
  const raw = readPath(body, mapping.idField);
  const fromKey = keyIdOf(key, mapping);
  const keyText = fromKey?.id;
  let id: string;
  if (raw === undefined || raw === null) {
    if (keyText === undefined) {
      throw new InvalidEventError(`the item id is missing: field "${mapping.idField}" is absent and the message has no key (set EVENT_ID_FIELD to the field holding the id)`, mapping.idField);
    }
    id = keyText;
  } else if (typeof raw === 'string') {
    id = raw;
  } else if (typeof raw === 'number' && Number.isSafeInteger(raw)) {
    id = String(raw);
  } else {
    throw new InvalidEventError(`field "${mapping.idField}" must be a string or an integer, got ${JSON.stringify(raw)}`, mapping.idField);
  }
  if (id.length === 0 || id.length > MAX_ID_LENGTH) {
    throw new InvalidEventError(`field "${mapping.idField}" must be 1 to ${MAX_ID_LENGTH} characters long, got ${id.length}`, mapping.idField);
  }
  if (LONE_SURROGATE.test(id)) {
    // Half a UTF-16 pair has no UTF-8 form: the point id (a UUIDv5 of its bytes) cannot be made,
    // and the write job carrying it would fail for its batch-mates as well.
    throw new InvalidEventError(`field "${mapping.idField}" holds half of a UTF-16 surrogate pair (${JSON.stringify(id)}), which has no UTF-8 form: send the id as valid Unicode`, mapping.idField);
  }
  if (fromKey !== undefined && fromKey.id !== id) {
    // Per-item ordering rests on key = item id: a mismatch would let two partitions hold one item.
    throw new InvalidEventError(
      fromKey.struct
        ? `message key ${fromKey.text} names item ${JSON.stringify(fromKey.id)}, but field "${mapping.idField}" holds ${JSON.stringify(id)}: set EVENT_ID_FIELD to the key column (the table's primary key)`
        : `message key ${JSON.stringify(fromKey.id)} differs from field "${mapping.idField}" ${JSON.stringify(id)}: produce with key = item id`,
      mapping.idField,
    );
  }
  return id;
}

function parseOp(body: Record<string, unknown>, mapping: EventMapping): Operation {
  const raw = readPath(body, mapping.opField);
  if (raw === undefined || raw === null) return 'upsert';
  if (raw === 'upsert' || raw === 'delete') return raw;
  throw new InvalidEventError(`field "${mapping.opField}" must be "upsert" or "delete" (or absent, meaning upsert), got ${JSON.stringify(raw)}`, mapping.opField);
}

function parseVersion(body: Record<string, unknown>, mapping: EventMapping): number | undefined {
  const raw = readPath(body, mapping.versionField);
  if (raw === undefined || raw === null) return undefined;
  const value = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : raw;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidEventError(`field "${mapping.versionField}" must be a non-negative integer (at most 2^53-1), got ${JSON.stringify(raw)}`, mapping.versionField);
  }
  return value;
}

/**
 * An ISO 8601 (RFC 3339) date-time: the date, `T` (or a space, as PostgreSQL prints it), the time
 * to the minute or finer, then `Z` or an offset (±HH:MM, ±HHMM, ±HH). The zone is optional here
 * only so that its absence can be reported as such.
 */
const ISO_DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$/;

const daysInMonth = (year: number, month: number) => (month === 2 ? (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31);

/**
 * Epoch ms of an ISO 8601 date-time with a time zone. Read here rather than by Date.parse, which
 * takes a zone-less time in the process's local zone (so two hosts order one event differently),
 * rolls 30 February over into March, and accepts formats that are not ISO at all.
 */
export function readIsoDateTime(text: string): { ms: number } | { problem: 'not_iso' | 'no_zone' } {
  const m = ISO_DATE_TIME.exec(text);
  if (m === null) return { problem: 'not_iso' };
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6] ?? '0'].map(Number) as [number, number, number, number, number, number];
  const [offsetHours, offsetMinutes] = [Number(m[10] ?? 0), Number(m[11] ?? 0)];
  // 60 seconds: RFC 3339's leap second.
  const inRange = month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month) && hour <= 23 && minute <= 59 && second <= 60 && offsetHours <= 23 && offsetMinutes <= 59;
  if (!inRange) return { problem: 'not_iso' };
  if (m[8] === undefined && m[9] === undefined) return { problem: 'no_zone' };
  const date = new Date(0);
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0 to 99 as 1900 to 1999.
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second, Number((m[7] ?? '').padEnd(3, '0').slice(0, 3)));
  const offsetMs = (m[9] === '-' ? -1 : 1) * (offsetHours * 60 + offsetMinutes) * 60_000;
  return { ms: date.getTime() - offsetMs };
}

function parseUpdatedAt(body: Record<string, unknown>, mapping: EventMapping): { iso: string; ms: number } | undefined {
  const raw = readPath(body, mapping.updatedAtField);
  if (raw === undefined || raw === null) return undefined;
  const field = mapping.updatedAtField;
  const read = typeof raw === 'string' ? readIsoDateTime(raw) : ({ problem: 'not_iso' } as const);
  if ('ms' in read) return { iso: raw as string, ms: read.ms };
  if (read.problem === 'no_zone') {
    throw new InvalidEventError(
      `field "${field}" has no time zone (${JSON.stringify(raw)}): it would be read in the local time zone of whichever host reads it; add Z for UTC (${JSON.stringify(`${raw as string}Z`)}) or the offset it was written in (e.g. ${JSON.stringify(`${raw as string}+02:00`)})`,
      field,
    );
  }
  throw new InvalidEventError(`field "${field}" must be an ISO 8601 date-time with a time zone, such as "2026-11-20T10:00:00Z" or "2026-11-20T12:00:00+02:00", got ${JSON.stringify(raw)}`, field);
}

function parseText(body: Record<string, unknown>, mapping: EventMapping): string {
  if (mapping.textTemplate !== undefined) {
    const { text, filled } = renderTemplate(mapping.textTemplate, body);
    if (filled === 0 || text.length === 0) {
      throw new InvalidEventError(`the text template ${JSON.stringify(mapping.textTemplate)} renders empty for this event: check EVENT_TEXT_TEMPLATE against the event's fields`, 'EVENT_TEXT_TEMPLATE');
    }
    return text;
  }
  const raw = readPath(body, mapping.textField);
  if (typeof raw !== 'string') {
    throw new InvalidEventError(
      raw === undefined
        ? `an upsert needs text: field "${mapping.textField}" is absent (set EVENT_TEXT_FIELD, or EVENT_TEXT_TEMPLATE to build it from other fields)`
        : `field "${mapping.textField}" must be a string, got ${typeof raw}`,
      mapping.textField,
    );
  }
  if (raw.trim().length === 0) throw new InvalidEventError(`field "${mapping.textField}" is empty: there is nothing to embed`, mapping.textField);
  return raw;
}

function parseMetadata(body: Record<string, unknown>, mapping: EventMapping): Record<string, unknown> {
  return checkMetadata(readPath(body, mapping.metadataField), `field "${mapping.metadataField}"`, mapping.metadataField);
}

function checkMetadata(raw: unknown, what: string, field: string): Record<string, unknown> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidEventError(`${what} must be a JSON object, got ${Array.isArray(raw) ? 'an array' : typeof raw}`, field);
  }
  if (nestsDeeperThan(raw, METADATA_MAX_DEPTH)) {
    throw new InvalidEventError(`${what} nests objects or arrays more than ${METADATA_MAX_DEPTH} levels deep: flatten it (no sink can filter on a payload that deep, and it cannot be queued)`, field);
  }
  return raw as Record<string, unknown>;
}

/**
 * How deep metadata may nest (the metadata object itself is level 1). JSON.parse reads any depth,
 * but JSON.stringify, which queues the change, recurses and throws past a few thousand levels; the
 * bound is far below that and far above any real payload. EVENT_MAX_BYTES bounds the size.
 */
export const METADATA_MAX_DEPTH = 64;

/** Walks with a stack of its own, not recursion, so that the check itself cannot overflow. */
function nestsDeeperThan(root: object, maxDepth: number): boolean {
  const pending: [unknown, number][] = [[root, 1]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [value, depth] = next;
    if (depth > maxDepth) return true;
    for (const child of Object.values(value as object)) {
      if (child !== null && typeof child === 'object') pending.push([child, depth + 1]);
    }
  }
  return false;
}

/**
 * What one Kafka message asks for: a change of an item (with the table it came from, for a
 * Debezium row); nothing (a tombstone: Debezium follows each delete with a null value, for log
 * compaction, and the delete itself came just before); or, from Debezium, the truncate of a table:
 * every item of that table is gone as of `version`.
 */
export type ChangeMessage =
  | { kind: 'change'; event: ChangeEvent; table: TableName | undefined }
  | { kind: 'tombstone' }
  | { kind: 'truncate'; table: TableName; version: number; versionSource: VersionSource };

/**
 * A null value is Debezium's tombstone (skipped) with EVENT_FORMAT=debezium, and with auto when
 * the key is a struct, as Debezium's are; a plain producer's tombstone is refused, so that a delete
 * meant by it is not lost silently.
 */
function isSkippedTombstone(key: Buffer | null, mapping: EventMapping): boolean {
  if (mapping.format === 'debezium') return true;
  if (mapping.format === 'plain' || key === null) return false;
  const text = key.toString('utf8');
  if (!text.startsWith('{')) return false;
  try {
    const struct = unwrapSchema(JSON.parse(text));
    return struct !== null && typeof struct === 'object' && !Array.isArray(struct);
  } catch {
    return false;
  }
}

/** Validates one Kafka message (see ChangeMessage); throws InvalidEventError naming the field and the fix. */
export function readChangeMessage(message: RawMessage, mapping: EventMapping): ChangeMessage {
  if (message.value === null) {
    if (isSkippedTombstone(message.key, mapping)) return { kind: 'tombstone' };
    throw new InvalidEventError(
      'the message has no value (a Kafka tombstone): send {"op":"delete", ...} to delete an item. Debezium\'s tombstones are skipped when keyed by a struct; with a plain key (a string key converter, an ExtractField transform) set EVENT_FORMAT=debezium to skip them',
      'value',
    );
  }
  if (message.value.length > mapping.maxBytes) {
    throw new InvalidEventError(`the event is ${message.value.length} bytes, over EVENT_MAX_BYTES=${mapping.maxBytes}`, 'value');
  }
  let body: unknown;
  try {
    body = JSON.parse(message.value.toString('utf8'));
  } catch (error) {
    throw new InvalidEventError(`the value is not valid JSON: ${(error as Error).message}`, 'value');
  }
  const fallback = message.timestampMs === undefined ? undefined : ({ ms: message.timestampMs, source: 'kafka_timestamp' } as const);
  if (mapping.format === 'plain') return { kind: 'change', event: parseChangeRecord(body, message.key, fallback, mapping), table: undefined };
  const unwrapped = unwrapSchema(body);
  if (unwrapped === null && body !== null) return { kind: 'tombstone' };
  if (isDebeziumEnvelope(unwrapped)) return readDebeziumChange(unwrapped, message.key, mapping);
  if (isEnvelopeWithoutSource(unwrapped)) {
    throw new InvalidEventError('the value looks like a Debezium envelope (op and before/after) but has no "source" naming its "connector": keep Debezium\'s source block (a transform may have dropped it); the indexer reads the table and the version from it', 'source');
  }
  if (mapping.format === 'debezium') {
    throw new InvalidEventError('the value is not a Debezium envelope (an object with "op" c, u, d, r or t and a "source" naming its "connector"): set EVENT_FORMAT=auto or plain for other events', 'value');
  }
  return { kind: 'change', event: parseChangeRecord(unwrapped, message.key, fallback, mapping), table: undefined };
}

/** Validates one Kafka message that must be a change of an item (a backfill's replay or file). */
export function parseChangeEvent(message: RawMessage, mapping: EventMapping): ChangeEvent {
  const read = readChangeMessage(message, mapping);
  if (read.kind === 'change') return read.event;
  if (read.kind === 'tombstone') throw new InvalidEventError('the message has no value (a Debezium tombstone): it changes nothing, the delete before it does', 'value');
  throw new InvalidEventError(`a Debezium truncate of table ${read.table}: only live ingest applies truncates`, 'op');
}

function readDebeziumChange(envelope: Record<string, unknown>, key: Buffer | null, mapping: EventMapping): ChangeMessage {
  const change = readEnvelope(envelope);
  if (change.kind === 'truncate') return { kind: 'truncate', table: change.table, version: change.version, versionSource: change.versionSource };
  const itemId = parseItemId(change.row, key, mapping);
  try {
    const upsert = change.op === 'upsert';
    const event: ChangeEvent = {
      itemId,
      op: change.op,
      version: change.version,
      versionSource: change.versionSource,
      updatedAt: change.updatedAt,
      text: upsert ? parseText(change.row, mapping) : undefined,
      metadata: upsert ? rowMetadata(change.row, mapping) : {},
    };
    return { kind: 'change', event, table: change.table };
  } catch (error) {
    if (error instanceof InvalidEventError) error.itemId ??= itemId;
    throw error;
  }
}

/**
 * A row's metadata: its EVENT_METADATA_FIELD column when it has one (a json/jsonb column, which
 * Debezium sends as a string, is read as the object it holds); else every column of the row.
 */
function rowMetadata(row: Record<string, unknown>, mapping: EventMapping): Record<string, unknown> {
  const column = readPath(row, mapping.metadataField);
  if (column === undefined) return checkMetadata(row, 'the row', 'after');
  let value: unknown = column;
  if (typeof column === 'string' && column.trimStart().startsWith('{')) {
    try {
      value = JSON.parse(column) as unknown;
    } catch {
      // Not JSON after all: refused as the string it is.
    }
  }
  return checkMetadata(value, `column "${mapping.metadataField}"`, mapping.metadataField);
}

/**
 * Validates one change record already decoded (a Kafka value, an NDJSON line, a database row),
 * with the same field mapping everywhere. `fallback` orders records that carry neither a version
 * nor updated_at; without one (a file or a table has no record timestamp), such a record is
 * refused, because nothing else could tell it from an older copy of the item.
 */
export function parseChangeRecord(body: unknown, key: Buffer | null, fallback: { ms: number; source: 'kafka_timestamp' } | undefined, mapping: EventMapping): ChangeEvent {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new InvalidEventError('the value must be a JSON object', 'value');
  }
  const record = body as Record<string, unknown>;
  const itemId = parseItemId(record, key, mapping);
  try {
    return parseChangeOf(itemId, record, fallback, mapping);
  } catch (error) {
    if (error instanceof InvalidEventError) error.itemId ??= itemId;
    throw error;
  }
}

function parseChangeOf(itemId: string, record: Record<string, unknown>, fallback: { ms: number; source: 'kafka_timestamp' } | undefined, mapping: EventMapping): ChangeEvent {
  const op = parseOp(record, mapping);
  const version = parseVersion(record, mapping);
  const updatedAt = parseUpdatedAt(record, mapping);
  let ordering: Pick<ChangeEvent, 'version' | 'versionSource'>;
  if (version !== undefined) ordering = { version, versionSource: 'version' };
  else if (updatedAt !== undefined) ordering = { version: updatedAt.ms, versionSource: 'updated_at' };
  else if (fallback !== undefined) ordering = { version: fallback.ms, versionSource: fallback.source };
  else {
    throw new InvalidEventError(
      `the record has neither field "${mapping.versionField}" nor "${mapping.updatedAtField}": a backfill row needs one, so that a newer live change is never overwritten by it (set EVENT_VERSION_FIELD or EVENT_UPDATED_AT_FIELD to the column holding it)`,
      mapping.versionField,
    );
  }
  return {
    itemId,
    op,
    ...ordering,
    updatedAt: updatedAt?.iso,
    text: op === 'upsert' ? parseText(record, mapping) : undefined,
    metadata: op === 'upsert' ? parseMetadata(record, mapping) : {},
  };
}

/**
 * Where events of one item coalesce (in a Kafka batch, a backfill page): only with events of the
 * same version source, since versions of two sources do not compare; the item state then decides
 * which source the item keeps.
 */
export function coalescingKey(event: Pick<ChangeEvent, 'itemId' | 'versionSource'>): string {
  return `${event.versionSource}\u0000${event.itemId}`;
}

function describeVersionSource(source: VersionSource, mapping: EventMapping): string {
  if (source === 'version') return `field "${mapping.versionField}"`;
  if (source === 'updated_at') return `field "${mapping.updatedAtField}" (no "${mapping.versionField}")`;
  return `the Kafka record timestamp (neither "${mapping.versionField}" nor "${mapping.updatedAtField}")`;
}

/**
 * The item's versions come from one source and this event's from another: accepted, it would
 * freeze the item (every later event of the other source looks older) or let an old copy win.
 */
export function versionSourceConflict(itemId: string, itemSource: VersionSource, eventSource: VersionSource, mapping: EventMapping): InvalidEventError {
  // The field whose presence tells the two sources apart is the one to send always (or never).
  const decisive = itemSource === 'version' || eventSource === 'version' ? mapping.versionField : mapping.updatedAtField;
  return new InvalidEventError(
    `item ${JSON.stringify(itemId)} is ordered by ${describeVersionSource(itemSource, mapping)}, but this event by ${describeVersionSource(eventSource, mapping)}: versions of the two never compare, so mixing them would freeze the item or let an old copy win; send "${decisive}" on every event of an item, or on none`,
    decisive,
  );
}
