/**
 * `updated_at` must carry a time zone: a zone-less time used to be read in the process's local
 * zone, so two hosts (or one host across a daylight-saving change) ordered one event differently.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { InvalidEventError } from '../../../src/core/errors.js';
import { parseChangeEvent, parseChangeRecord, readIsoDateTime, type EventMapping } from '../../../src/ingest/change-event.js';

const mapping = loadConfig({}).events;
const message = (value: unknown) => ({ key: null, value: Buffer.from(JSON.stringify(value)), timestampMs: 1_700_000_000_000 });

function refusal(parse: () => unknown): InvalidEventError {
  try {
    parse();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidEventError);
    return error as InvalidEventError;
  }
  throw new Error('expected the event to be refused');
}

describe('updated_at', () => {
  it.each([
    ['UTC', '2026-11-20T10:00:00Z', Date.UTC(2026, 10, 20, 10)],
    ['lower-case t and z', '2026-11-20t10:00:00z', Date.UTC(2026, 10, 20, 10)],
    ['an offset', '2026-11-20T12:00:00+02:00', Date.UTC(2026, 10, 20, 10)],
    ['an offset without a colon', '2026-11-20T12:00:00+0200', Date.UTC(2026, 10, 20, 10)],
    ['an offset in hours (PostgreSQL text output, with a space)', '2026-11-20 12:00:00+02', Date.UTC(2026, 10, 20, 10)],
    ['a negative offset with minutes', '2026-11-20T04:30:00-05:30', Date.UTC(2026, 10, 20, 10)],
    ['microseconds (Debezium, PostgreSQL)', '2026-11-20T10:00:00.123456Z', Date.UTC(2026, 10, 20, 10, 0, 0, 123)],
    ['a decimal comma', '2026-11-20T10:00:00,5Z', Date.UTC(2026, 10, 20, 10, 0, 0, 500)],
    ['minutes only', '2026-11-20T10:00Z', Date.UTC(2026, 10, 20, 10)],
    ['29 February of a leap year', '2024-02-29T00:00:00Z', Date.UTC(2024, 1, 29)],
  ])('accepts %s, ordered by its instant', (_name, updatedAt, ms) => {
    const event = parseChangeEvent(message({ id: 'a', updated_at: updatedAt, text: 'x' }), mapping);
    expect(event).toMatchObject({ version: ms, versionSource: 'updated_at', updatedAt });
  });

  it('reads a year below 100 as that year, not as 19xx', () => {
    const read = readIsoDateTime('0050-01-01T00:00:00Z');
    expect('ms' in read && new Date(read.ms).toISOString()).toBe('0050-01-01T00:00:00.000Z');
  });

  it.each([
    ['the version source', { id: 'a', updated_at: '2026-01-02T03:04:05', text: 'x' }],
    ['only the payload\'s source_updated_at (the event has a version)', { id: 'a', version: 3, updated_at: '2026-01-02T03:04:05', text: 'x' }],
    ['a delete', { id: 'a', op: 'delete', updated_at: '2026-01-02T03:04:05.250' }],
  ])('refuses a time without a zone as %s, naming the field and the fix', (_name, body) => {
    const error = refusal(() => parseChangeEvent(message(body), mapping));
    expect(error.field).toBe('updated_at');
    expect(error.message).toMatch(/field "updated_at" has no time zone \("2026-01-02T03:04:05(\.250)?"\)/);
    expect(error.message).toMatch(/add Z for UTC \("2026-01-02T03:04:05(\.250)?Z"\) or the offset it was written in/);
  });

  it('refuses it in backfill rows too, and names the configured field', () => {
    const custom: EventMapping = { ...mapping, updatedAtField: 'after.modified_at' };
    const error = refusal(() => parseChangeRecord({ id: 'a', after: { modified_at: '2026-01-02 03:04:05' }, text: 'x' }, null, undefined, custom));
    expect(error.field).toBe('after.modified_at');
    expect(error.message).toMatch(/field "after\.modified_at" has no time zone/);
  });

  it.each([
    ['a date without a time', '2026-11-20'],
    ['30 February', '2026-02-30T10:00:00Z'],
    ['29 February of a common year', '2025-02-29T10:00:00Z'],
    ['hour 24', '2026-11-20T24:00:00Z'],
    ['an offset of 25 hours', '2026-11-20T10:00:00+25:00'],
    ['an RFC 2822 date', 'Fri, 20 Nov 2026 10:00:00 GMT'],
    ['epoch ms as a number', 1_795_168_800_000],
    ['a space before the offset', '2026-11-20T10:00:00 +02:00'],
  ])('refuses %s as not an ISO 8601 date-time with a zone', (_name, updatedAt) => {
    const error = refusal(() => parseChangeEvent(message({ id: 'a', updated_at: updatedAt, text: 'x' }), mapping));
    expect(error.field).toBe('updated_at');
    expect(error.message).toContain(`field "updated_at" must be an ISO 8601 date-time with a time zone, such as "2026-11-20T10:00:00Z" or "2026-11-20T12:00:00+02:00", got ${JSON.stringify(updatedAt)}`);
  });
});
