import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { InvalidEventError } from '../../../src/core/errors.js';
import { parseChangeEvent, renderTemplate, type EventMapping } from '../../../src/ingest/change-event.js';

const mapping = loadConfig({}).events;
const message = (value: unknown, key: string | null = null, timestampMs = 1_700_000_000_000) => ({
  key: key === null ? null : Buffer.from(key),
  value: value === null ? null : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)),
  timestampMs,
});
function refusal(value: unknown, m: EventMapping = mapping, key: string | null = null): InvalidEventError {
  try {
    parseChangeEvent(message(value, key), m);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidEventError);
    return error as InvalidEventError;
  }
  throw new Error('expected the event to be refused');
}

describe('parseChangeEvent', () => {
  it('reads the documented format', () => {
    const event = parseChangeEvent(
      message({ id: 'sku-123', op: 'upsert', version: 42, updated_at: '2026-11-20T10:00:00Z', text: 'Trail running shoe', metadata: { category: 'shoes', price: 89.9 } }, 'sku-123'),
      mapping,
    );
    expect(event).toEqual({ itemId: 'sku-123', op: 'upsert', version: 42, versionSource: 'version', updatedAt: '2026-11-20T10:00:00Z', text: 'Trail running shoe', metadata: { category: 'shoes', price: 89.9 } });
  });

  it('defaults op to upsert, accepts integer ids, and orders by updated_at, then the Kafka timestamp', () => {
    expect(parseChangeEvent(message({ id: 7, text: 'x', updated_at: '2026-11-20T10:00:00Z' }), mapping)).toMatchObject({ itemId: '7', op: 'upsert', version: Date.parse('2026-11-20T10:00:00Z'), versionSource: 'updated_at' });
    expect(parseChangeEvent(message({ id: 7, text: 'x' }), mapping)).toMatchObject({ version: 1_700_000_000_000, versionSource: 'kafka_timestamp' });
  });

  it('takes the id from the key when the body has none, and refuses a key that disagrees', () => {
    expect(parseChangeEvent(message({ text: 'x' }, 'sku-9'), mapping).itemId).toBe('sku-9');
    expect(refusal({ id: 'a', text: 'x' }, mapping, 'b').message).toMatch(/key "b" differs/);
  });

  it('needs no text for a delete and drops its metadata', () => {
    expect(parseChangeEvent(message({ id: 'a', op: 'delete', version: 3 }), mapping)).toMatchObject({ op: 'delete', text: undefined, metadata: {} });
  });

  it.each([
    ['not JSON', '{"id": ', /not valid JSON/, 'value'],
    ['a JSON array', '[1,2]', /must be a JSON object/, 'value'],
    ['no id and no key', { text: 'x' }, /item id is missing.*EVENT_ID_FIELD/, 'id'],
    ['an object id', { id: { a: 1 }, text: 'x' }, /"id" must be a string or an integer/, 'id'],
    ['an unknown op', { id: 'a', op: 'merge', text: 'x' }, /"op" must be "upsert" or "delete"/, 'op'],
    ['a fractional version', { id: 'a', version: 1.5, text: 'x' }, /"version" must be a non-negative integer/, 'version'],
    ['a bad date', { id: 'a', updated_at: 'yesterday', text: 'x' }, /"updated_at" must be an ISO 8601/, 'updated_at'],
    ['no text', { id: 'a' }, /upsert needs text.*EVENT_TEXT_FIELD/, 'text'],
    ['blank text', { id: 'a', text: '   ' }, /"text" is empty/, 'text'],
    ['array metadata', { id: 'a', text: 'x', metadata: [1] }, /"metadata" must be a JSON object/, 'metadata'],
  ])('refuses %s, naming the field', (_name, value, reason, field) => {
    const error = refusal(value);
    expect(error.message).toMatch(reason);
    expect(error.field).toBe(field);
    expect(error.canRetry).toBe(false);
  });

  it('refuses an id holding half of a UTF-16 surrogate pair (it has no UTF-8 form, so no point id), and accepts a whole pair', () => {
    for (const id of ['\ud800', 'sku-\udc00-1', 'a\udbff']) {
      const error = refusal(`{"id":${JSON.stringify(id)},"op":"upsert","version":1,"text":"x"}`);
      expect(error.details?.field).toBe('id');
      expect(error.message).toMatch(/surrogate/);
    }
    expect(parseChangeEvent(message({ id: 'sku-😀', op: 'upsert', version: 1, text: 'x' }), mapping).itemId).toBe('sku-😀');
  });

  it('refuses oversized events and Kafka tombstones', () => {
    expect(refusal({ id: 'a', text: 'x'.repeat(200) }, { ...mapping, maxBytes: 100 }).message).toMatch(/over EVENT_MAX_BYTES=100/);
    expect(refusal(null).message).toMatch(/tombstone/);
  });

  it('maps fields of other schemas, with dotted paths and a text template', () => {
    const custom: EventMapping = { ...mapping, idField: 'after.sku', versionField: 'after.rev', metadataField: 'after.attrs', textTemplate: '{after.title}\n{after.description} ({after.tags})' };
    const event = parseChangeEvent(message({ after: { sku: 'X1', rev: '5', title: 'Tent', description: 'Two doors', tags: ['camp', 'light'], attrs: { w: 2 } } }), custom);
    expect(event).toMatchObject({ itemId: 'X1', version: 5, text: 'Tent\nTwo doors (camp, light)', metadata: { w: 2 } });
    expect(refusal({ after: { sku: 'X1' } }, custom).message).toMatch(/renders empty/);
  });
});

describe('renderTemplate', () => {
  it('keeps escaped braces and renders missing fields as empty', () => {
    expect(renderTemplate('{{brand}} {brand} {missing}!', { brand: 'Acme' })).toEqual({ text: '{brand} Acme !', filled: 1 });
  });
});
