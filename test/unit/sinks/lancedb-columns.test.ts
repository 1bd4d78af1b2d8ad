import { Bool, Float64, makeVector, Utf8, vectorFromArray, type DataType } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { columnData } from '../../../src/sinks/lancedb/lancedb-sink.js';

const cases: [string, unknown[], DataType][] = [
  ['strings, with multi-byte characters and empty ones', ['sku-1', '', 'Große Tasse ☕', '😀 emoji', 'a'.repeat(3000), '"quoted"\n'], new Utf8()],
  ['strings with nulls (a nullable column)', [null, '2026-11-20T08:00:01.000Z', null, null, '2026-11-21T09:00:00.000Z', null, null, null, 'x'], new Utf8()],
  ['floats', [1, 0, -2.5, 1_795_000_000_123, Number.MAX_SAFE_INTEGER, 0.1], new Float64()],
  ['booleans across more than a byte', [true, false, false, true, true, false, true, false, true, true, false], new Bool()],
];

describe('LanceDB columns built from their buffers', () => {
  it.each(cases)('hold what apache-arrow builds from the same values: %s', (_what, values, type) => {
    const built = makeVector(columnData(values, type));
    expect(built.length).toBe(values.length);
    expect(built.nullCount).toBe(values.filter((v) => v === null).length);
    expect(built.toArray()).toEqual(vectorFromArray(values, type).toArray());
    expect([...built]).toEqual(values);
  });

  it('holds an empty column', () => {
    expect(makeVector(columnData([], new Utf8())).length).toBe(0);
  });
});
