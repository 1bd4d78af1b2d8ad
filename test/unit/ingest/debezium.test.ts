import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { InvalidEventError } from '../../../src/core/errors.js';
import { parseChangeEvent, readChangeMessage, type ChangeMessage, type EventMapping } from '../../../src/ingest/change-event.js';

const mapping: EventMapping = { ...loadConfig({}).events, textTemplate: '{title}\n{description}' };
const source = (lsn: number | null, extra: Record<string, unknown> = {}) => ({
  version: '3.4.3.Final',
  connector: 'postgresql',
  name: 'shop',
  ts_ms: 1_764_000_000_123,
  snapshot: 'false',
  db: 'postgres',
  sequence: '["100","200"]',
  schema: 'public',
  table: 'products',
  txId: 771,
  lsn,
  xmin: null,
  ...extra,
});
const row = (id: number, title: string, price = 9.5) => ({ id, title, description: `about ${title}`, price, updated_at: 1_764_000_000_000_000 });
const envelope = (op: string, before: unknown, after: unknown, lsn: number | null = 5000, extra: Record<string, unknown> = {}) => ({
  before,
  after,
  source: source(lsn, extra),
  transaction: null,
  op,
  ts_ms: 1_764_000_000_456,
});

/** JsonConverter with schemas.enable=true: every value and key carries its Connect schema. */
const withSchema = (payload: unknown) => ({ schema: { type: 'struct', fields: [], optional: false, name: 'shop.public.products.Envelope', version: 2 }, payload });
const keyOf = (id: number, schemas = false) => JSON.stringify(schemas ? { schema: { type: 'struct', fields: [{ type: 'int32', optional: false, field: 'id' }], optional: false, name: 'shop.public.products.Key' }, payload: { id } } : { id });

const read = (value: unknown, key: string | null, m: EventMapping = mapping): ChangeMessage =>
  readChangeMessage({ key: key === null ? null : Buffer.from(key), value: value === null ? null : Buffer.from(JSON.stringify(value)), timestampMs: 1_700_000_000_000 }, m);

function refusal(value: unknown, key: string | null, m: EventMapping = mapping): InvalidEventError {
  try {
    read(value, key, m);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidEventError);
    return error as InvalidEventError;
  }
  throw new Error('expected the event to be refused');
}

describe.each([
  ['schemaless', false],
  ['schema-wrapped', true],
])('Debezium envelopes, %s JSON', (_, schemas) => {
  const value = (payload: unknown) => (schemas ? withSchema(payload) : payload);

  it('reads a create as an upsert of the row in after, ordered by the LSN', () => {
    expect(read(value(envelope('c', null, row(7, 'Tent'), 5000)), keyOf(7, schemas))).toEqual({
      kind: 'change',
      table: 'postgres.public.products',
      event: {
        itemId: '7',
        op: 'upsert',
        version: 5000,
        versionSource: 'version',
        updatedAt: '2025-11-24T16:00:00.123Z',
        text: 'Tent\nabout Tent',
        metadata: row(7, 'Tent'),
      },
    });
  });

  it('reads updates and snapshot reads as upserts', () => {
    for (const op of ['u', 'r']) {
      const message = read(value(envelope(op, row(7, 'Tent'), row(7, 'Tarp', 12), 6000)), keyOf(7, schemas));
      expect(message).toMatchObject({ kind: 'change', event: { itemId: '7', op: 'upsert', version: 6000, text: 'Tarp\nabout Tarp', metadata: { price: 12 } } });
    }
  });

  it('reads a delete from before, or from the key when before holds nothing', () => {
    expect(read(value(envelope('d', row(7, 'Tent'), null, 7000)), keyOf(7, schemas))).toMatchObject({ kind: 'change', event: { itemId: '7', op: 'delete', version: 7000, text: undefined, metadata: {} } });
    expect(read(value(envelope('d', null, null, 7000)), keyOf(7, schemas))).toMatchObject({ kind: 'change', event: { itemId: '7', op: 'delete', version: 7000 } });
  });

  it('reads a truncate, which has no key, as a truncate of its table at its LSN', () => {
    expect(read(value(envelope('t', null, null, 8000)), null)).toEqual({ kind: 'truncate', table: 'postgres.public.products', version: 8000, versionSource: 'version' });
  });

  it('skips the tombstone that follows a delete', () => {
    expect(read(null, keyOf(7, schemas))).toEqual({ kind: 'tombstone' });
  });
});

describe('Debezium envelopes: ordering and ids', () => {
  it('orders by source.ts_ms, as updated_at, where the connector has no LSN', () => {
    const message = read(envelope('u', null, row(3, 'Cup'), null, { connector: 'mysql', schema: undefined, table: 'products', db: 'shop' }), keyOf(3));
    expect(message).toMatchObject({ kind: 'change', table: 'shop.products', event: { version: 1_764_000_000_123, versionSource: 'updated_at', updatedAt: '2025-11-24T16:00:00.123Z' } });
  });

  it('refuses an LSN past 2^53-1, which JSON numbers cannot hold exactly', () => {
    const raw = JSON.stringify(envelope('c', null, row(1, 'A'))).replace('"lsn":5000', '"lsn":18446744073709551000');
    const error = (() => {
      try {
        readChangeMessage({ key: Buffer.from(keyOf(1)), value: Buffer.from(raw), timestampMs: undefined }, mapping);
      } catch (e) {
        return e as InvalidEventError;
      }
      throw new Error('expected a refusal');
    })();
    expect(error).toBeInstanceOf(InvalidEventError);
    expect(error.message).toMatch(/source\.lsn .* over 2\^53-1/);
    expect(error.itemId).toBeUndefined();
  });

  it('takes a struct key\'s one field, refuses a key naming another item, and refuses a composite key', () => {
    expect(read(envelope('c', null, { ...row(1, 'A'), sku: 'S-1' }), JSON.stringify({ sku: 'S-1' }), { ...mapping, idField: 'sku' })).toMatchObject({ event: { itemId: 'S-1' } });
    expect(refusal(envelope('c', null, row(1, 'A')), keyOf(2)).message).toMatch(/message key \{"id":2\} names item "2", but field "id" holds "1": set EVENT_ID_FIELD/);
    // {tenant 1, id 5} and {tenant 2, id 5} would be one item, each overwriting the other.
    const composite = refusal(envelope('c', null, { ...row(5, 'A'), tenant_id: 1 }), JSON.stringify({ tenant_id: 1, id: 5 }));
    expect(composite.message).toMatch(/composite key \(tenant_id, id\).*message\.key\.columns/);
    expect(composite.field).toBe('key');
  });

  it('stores the row as metadata, or its metadata column (a jsonb column arrives as a string)', () => {
    expect(read(envelope('c', null, { ...row(1, 'A'), metadata: '{"color":"red"}' }), keyOf(1))).toMatchObject({ event: { metadata: { color: 'red' } } });
    expect(refusal(envelope('c', null, { ...row(1, 'A'), metadata: 'red' }), keyOf(1)).message).toMatch(/column "metadata" must be a JSON object/);
  });

  it('names the item and the fix when a row does not fit the text template', () => {
    const error = refusal(envelope('c', null, { id: 4 }), keyOf(4));
    expect(error.message).toMatch(/renders empty/);
    expect(error.itemId).toBe('4');
  });

  it('refuses message events and envelopes of no table', () => {
    expect(refusal({ op: 'm', source: source(1), message: { prefix: 'x' } }, null).message).toMatch(/message event/);
    expect(refusal({ op: 'c', after: row(1, 'A'), source: { connector: 'postgresql', lsn: 1 } }, keyOf(1)).message).toMatch(/names no table/);
  });
});

describe('EVENT_FORMAT', () => {
  const plainEvent = { id: 'sku-1', op: 'upsert', version: 3, text: 'Shoe' };

  it('auto reads plain events as before, and schema-wrapped flat rows (ExtractNewRecordState)', () => {
    expect(read(plainEvent, 'sku-1', { ...mapping, textTemplate: undefined })).toMatchObject({ kind: 'change', table: undefined, event: { itemId: 'sku-1', version: 3, text: 'Shoe' } });
    expect(read(withSchema(plainEvent), JSON.stringify({ id: 'sku-1' }), { ...mapping, textTemplate: undefined })).toMatchObject({ kind: 'change', event: { itemId: 'sku-1', version: 3 } });
  });

  it('auto refuses a tombstone keyed by a plain id: it may be a delete meant by a plain producer', () => {
    expect(refusal(null, 'sku-1').message).toMatch(/tombstone.*send \{"op":"delete"/);
    expect(read(null, keyOf(1))).toEqual({ kind: 'tombstone' });
  });

  it('plain never unwraps envelopes or struct keys, and refuses tombstones', () => {
    const plain = { ...mapping, format: 'plain' as const };
    expect(refusal(envelope('c', null, row(1, 'A')), keyOf(1), plain).message).toMatch(/field "op" must be "upsert" or "delete"/);
    expect(refusal(null, keyOf(1), plain).message).toMatch(/tombstone/);
  });

  it('debezium refuses anything but an envelope, and skips every tombstone', () => {
    const debezium = { ...mapping, format: 'debezium' as const };
    expect(refusal(plainEvent, 'sku-1', debezium).message).toMatch(/not a Debezium envelope.*EVENT_FORMAT=auto or plain/);
    expect(read(null, 'sku-1', debezium)).toEqual({ kind: 'tombstone' });
  });

  it('parseChangeEvent (a backfill replay) refuses what is not a change, saying why', () => {
    const parse = (value: unknown, key: string | null) => () =>
      parseChangeEvent({ key: key === null ? null : Buffer.from(key), value: value === null ? null : Buffer.from(JSON.stringify(value)), timestampMs: 1 }, mapping);
    expect(parse(envelope('t', null, null), null)).toThrow(/truncate of table postgres.public.products/);
    expect(parse(null, keyOf(1))).toThrow(/Debezium tombstone/);
  });
});
