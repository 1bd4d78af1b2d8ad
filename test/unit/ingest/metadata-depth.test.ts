/**
 * Issue 10: metadata nested deeper than METADATA_MAX_DEPTH is refused at parse time, naming the
 * field and the fix, however deep it goes (JSON.parse reads any depth; JSON.stringify, which
 * queues the change, throws a RangeError past a few thousand levels).
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { InvalidEventError } from '../../../src/core/errors.js';
import { METADATA_MAX_DEPTH, parseChangeEvent } from '../../../src/ingest/change-event.js';

/** An event's bytes whose metadata nests `depth` levels (the metadata object itself is level 1), built as text. */
function eventNesting(depth: number, inner = '"leaf"'): Buffer {
  const nested = '{"a":'.repeat(depth - 1) + `{"a":${inner}}` + '}'.repeat(depth - 1);
  return Buffer.from(`{"id":"deep","version":1,"text":"t","metadata":${nested}}`);
}

const parse = (value: Buffer, env: Record<string, string> = {}) => parseChangeEvent({ key: null, value, timestampMs: 0 }, loadConfig({ EVENT_MAX_BYTES: '10000000', ...env }).events);

describe('metadata depth', () => {
  it('accepts metadata exactly at the bound, and refuses one level more, naming the field and the fix', () => {
    expect(() => parse(eventNesting(METADATA_MAX_DEPTH))).not.toThrow();
    const refused = (() => {
      try {
        parse(eventNesting(METADATA_MAX_DEPTH + 1));
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    expect(refused).toBeInstanceOf(InvalidEventError);
    expect((refused as InvalidEventError).details).toEqual({ field: 'metadata' });
    expect((refused as InvalidEventError).message).toMatch(/field "metadata" nests objects or arrays more than 64 levels deep: flatten it/);
  });

  it('counts arrays as levels too', () => {
    const arrays = '['.repeat(METADATA_MAX_DEPTH) + ']'.repeat(METADATA_MAX_DEPTH);
    expect(() => parse(Buffer.from(`{"id":"deep","version":1,"text":"t","metadata":{"a":${arrays}}}`))).toThrow(InvalidEventError);
  });

  it('refuses nesting deep enough to break JSON.stringify with an InvalidEventError, not a RangeError', () => {
    const value = eventNesting(200_000);
    const metadata = (JSON.parse(value.toString()) as { metadata: unknown }).metadata;
    expect(() => JSON.stringify(metadata)).toThrow(RangeError);
    expect(() => parse(value)).toThrow(InvalidEventError);
  });

  it('names the configured metadata field', () => {
    const value = Buffer.from(eventNesting(METADATA_MAX_DEPTH + 1).toString().replace('"metadata":', '"attributes":'));
    expect(() => parse(value, { EVENT_METADATA_FIELD: 'attributes' })).toThrow(/field "attributes" nests/);
  });
});
