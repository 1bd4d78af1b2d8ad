/**
 * Review of issue 11 (Debezium envelopes): hostile and unusual messages against readChangeMessage.
 * Tests marked "was a defect" failed on the code as first reviewed (fixed since); the others held.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { InvalidEventError } from '../../../src/core/errors.js';
import { readChangeMessage } from '../../../src/ingest/change-event.js';

const mapping = (env: Record<string, string> = {}) => loadConfig({ EVENT_TEXT_TEMPLATE: '{title}', ...env }).events;
const source = { version: '3.4.3.Final', connector: 'postgresql', name: 'shop', ts_ms: 1_764_000_000_000, db: 'shop', schema: 'public', table: 'orders', lsn: 100 };
const message = (key: unknown, value: unknown) => ({
  key: key === null ? null : Buffer.from(typeof key === 'string' ? key : JSON.stringify(key)),
  value: value === null ? null : Buffer.from(JSON.stringify(value)),
  timestampMs: 1_764_000_000_000,
});
const read = (key: unknown, value: unknown, env?: Record<string, string>) => readChangeMessage(message(key, value), mapping(env));
const refusal = (fn: () => unknown): InvalidEventError => {
  try {
    fn();
  } catch (error) {
    if (error instanceof InvalidEventError) return error;
    throw error;
  }
  throw new Error('expected an InvalidEventError, got none');
};

describe('review: Debezium struct keys', () => {
  // Was a defect (wrong results, silent; fixed): a table with a composite primary key (tenant_id, id) is keyed
  // {"tenant_id":1,"id":5}. structKeyId (src/ingest/debezium.ts, `idField in struct ? ...`) takes
  // just "id" from it, so rows (1, 5) and (2, 5) both become item "5": each overwrites the
  // other's vector, a delete of one deletes the other, and, keyed by the whole struct, they can
  // sit on different partitions, so their order is lost too. Nothing is dead-lettered or logged.
  // The key names more than EVENT_ID_FIELD: it should be refused with the fix (a single-column key,
  // or an id column that is the whole key), not silently cut down.
  it('refuses a composite key of which EVENT_ID_FIELD names only a part (rows of two tenants would be one item)', () => {
    const row = (tenant: number) => ({ before: null, after: { tenant_id: tenant, id: 5, title: `order of tenant ${tenant}` }, source, op: 'c' });
    const ids: string[] = [];
    for (const tenant of [1, 2]) {
      try {
        const change = read({ tenant_id: tenant, id: 5 }, row(tenant));
        if (change.kind === 'change') ids.push(change.event.itemId);
      } catch (error) {
        if (!(error instanceof InvalidEventError)) throw error;
      }
    }
    // Either distinct items or refusals; never two rows as one item.
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('review: Debezium tombstones', () => {
  // Was a defect (README "Debezium change events"; resolved by documenting the rule): "Tombstones ... are skipped, not dead-lettered"):
  // with EVENT_FORMAT=auto (the default) a tombstone is skipped only when its key is a JSON object.
  // Debezium's keys stop being objects with the usual key settings: key.converter=StringConverter
  // or the ExtractField$Key SMT (to key messages by the bare id, as plain producers do). Then every
  // delete's tombstone becomes a dead letter (`isSkippedTombstone` in src/ingest/change-event.ts),
  // and the DLQ alert fires on routine deletes. The tombstone follows a Debezium delete on the same
  // key; auto could skip it, or the README should say which keys it needs.
  // Decided: under auto a null value with a plain key may be a plain producer's delete, so it is
  // dead-lettered (loud) rather than skipped (silent); the reason names EVENT_FORMAT=debezium, which
  // skips every tombstone. The README says so.
  it('dead-letters, with EVENT_FORMAT=auto, a bare-id tombstone, naming EVENT_FORMAT=debezium as the fix', () => {
    const deleted = read('5', { before: { id: 5 }, after: null, source, op: 'd' });
    expect(deleted).toMatchObject({ kind: 'change', event: { itemId: '5', op: 'delete' } });
    expect(refusal(() => read('5', null)).message).toMatch(/set EVENT_FORMAT=debezium to skip them/);
  });

  it('held: skips a tombstone keyed by a struct, and with EVENT_FORMAT=debezium any tombstone', () => {
    expect(read({ id: 5 }, null)).toEqual({ kind: 'tombstone' });
    expect(read({ schema: { type: 'struct' }, payload: { id: 5 } }, null)).toEqual({ kind: 'tombstone' });
    expect(read('5', null, { EVENT_FORMAT: 'debezium' })).toEqual({ kind: 'tombstone' });
  });

  it('held: EVENT_FORMAT=plain refuses a struct-keyed tombstone rather than skip a delete', () => {
    expect(refusal(() => read({ id: 5 }, null, { EVENT_FORMAT: 'plain' })).field).toBe('value');
  });
});

describe('review: hostile envelopes', () => {
  it('held: each is refused naming the field', () => {
    const cases: [unknown, string][] = [
      [{ before: null, after: [1, 2], source, op: 'c' }, 'after'],
      [{ before: null, after: 'row', source, op: 'u' }, 'after'],
      [{ before: null, after: null, source, op: 'c' }, 'after'],
      [{ before: null, after: { id: 5, title: 't' }, source: { ...source, lsn: '100' }, op: 'c' }, 'source.lsn'],
      [{ before: null, after: { id: 5, title: 't' }, source: { ...source, lsn: 2 ** 60 }, op: 'c' }, 'source.lsn'],
      [{ before: null, after: { id: 5, title: 't' }, source: { ...source, lsn: -1 }, op: 'c' }, 'source.lsn'],
      [{ before: null, after: { id: 5, title: 't' }, source: { ...source, lsn: null, ts_ms: null }, op: 'c' }, 'source.lsn'],
      [{ before: null, after: { id: 5, title: 't' }, source: { ...source, table: undefined }, op: 'c' }, 'source.table'],
      [{ before: null, after: null, source, op: 'm', message: { prefix: 'x', content: 'eA==' } }, 'op'],
    ];
    for (const [value, field] of cases) expect(refusal(() => read({ id: 5 }, value)).field, JSON.stringify(value)).toBe(field);
  });

  it('held: an envelope under EVENT_FORMAT=plain is refused, not indexed as a plain event', () => {
    const value = { before: null, after: { id: 5, title: 't' }, source, op: 'c' };
    expect(() => read('5', value, { EVENT_FORMAT: 'plain' })).toThrow(InvalidEventError);
  });

  // Low harm, unclear error: an envelope missing `source` (or `source.connector`) is not recognised
  // as Debezium under auto, falls to the plain parser and is refused as 'field "op" must be
  // "upsert" or "delete" ... got "c"', which sends the operator to the wrong fix. The refusal
  // should say the value looks like a Debezium envelope without source.connector.
  it('names the missing source when an envelope lacks it (auto)', () => {
    const error = refusal(() => read({ id: 5 }, { before: null, after: { id: 5, title: 't' }, op: 'c' }));
    expect(error.message).toMatch(/source/);
  });

  it('held: an update whose primary key changed arrives as delete (old key) + create (new key): two items', () => {
    const del = read({ id: 1 }, { before: { id: 1 }, after: null, source: { ...source, lsn: 300 }, op: 'd' });
    const create = read({ id: 100 }, { before: null, after: { id: 100, title: 't' }, source: { ...source, lsn: 300 }, op: 'c' });
    expect(del).toMatchObject({ kind: 'change', event: { itemId: '1', op: 'delete', version: 300 } });
    expect(create).toMatchObject({ kind: 'change', event: { itemId: '100', op: 'upsert', version: 300 } });
  });

  it('held: an update whose row id differs from its key is refused (EVENT_ID_FIELD not the key)', () => {
    expect(refusal(() => read({ id: 1 }, { before: { id: 1, title: 'a' }, after: { id: 2, title: 'b' }, source, op: 'u' })).field).toBe('id');
  });
});
