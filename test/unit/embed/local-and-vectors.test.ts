import { describe, expect, it } from 'vitest';
import { VectorError } from '../../../src/core/errors.js';
import { contentHash } from '../../../src/embed/content-hash.js';
import { LocalHashProvider } from '../../../src/embed/local-hash-provider.js';
import { checkVector } from '../../../src/embed/vectors.js';

const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * (b[i] as number), 0);

describe('LocalHashProvider', () => {
  const provider = new LocalHashProvider('local-hash-v1', 384);

  it('is deterministic and gives unit vectors of the configured size', async () => {
    const [a, b] = (await provider.embed(['Waterproof trail running shoe', 'Waterproof trail running shoe'])).vectors as [Float32Array, Float32Array];
    expect(a).toHaveLength(384);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(cosine(a, a)).toBeCloseTo(1, 5);
  });

  it('ranks texts sharing words above unrelated ones (lexical, not semantic)', async () => {
    const [query, shoe, tent] = (await provider.embed(['trail running shoe', 'Lightweight trail running shoe with a rock plate', 'Four-season tent with snow skirts'])).vectors as Float32Array[];
    expect(cosine(query as Float32Array, shoe as Float32Array)).toBeGreaterThan(cosine(query as Float32Array, tent as Float32Array) + 0.2);
  });

  it('gives text without words a usable vector', async () => {
    const [v] = (await provider.embed(['!!! ???'])).vectors as [Float32Array];
    expect(() => checkVector(v, 384)).not.toThrow();
  });
});

describe('checkVector', () => {
  it('refuses wrong sizes, NaN, Infinity and zero vectors, never fixing them', () => {
    expect(() => checkVector(new Float32Array([1, 0]), 3, 'sku-1')).toThrow(/item "sku-1" has 2 dimensions, the configured model has 3/);
    expect(() => checkVector(new Float32Array([1, Number.NaN, 0]), 3)).toThrow(VectorError);
    expect(() => checkVector(new Float32Array([1, Number.POSITIVE_INFINITY, 0]), 3)).toThrow(/Infinity at index 1/);
    expect(() => checkVector(new Float32Array(3), 3)).toThrow(/all zeros/);
    const ok = new Float32Array([0.6, 0.8, 0]);
    expect(checkVector(ok, 3)).toBe(ok);
  });
});

describe('contentHash', () => {
  it('changes with the text, the model and the dimensions', () => {
    const base = contentHash('text', 'm', 8);
    expect(contentHash('text', 'm', 8)).toBe(base);
    expect(new Set([base, contentHash('text.', 'm', 8), contentHash('text', 'm2', 8), contentHash('text', 'm', 16)]).size).toBe(4);
  });
});
