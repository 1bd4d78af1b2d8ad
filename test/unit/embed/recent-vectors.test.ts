import { describe, expect, it } from 'vitest';
import { RecentVectors } from '../../../src/embed/recent-vectors.js';

/** A vector of 3 floats (12 bytes), all `value`. */
const v = (value: number) => Float32Array.of(value, value, value);

describe('RecentVectors', () => {
  it('gives back what it remembers, and forgets the oldest purchases past its byte bound', () => {
    const recent = new RecentVectors(3 * 12);
    for (const [hash, value] of [['a', 1], ['b', 2], ['c', 3]] as const) recent.remember(hash, v(value));
    expect(recent.get('a')).toEqual(v(1));
    recent.remember('d', v(4));
    expect([recent.get('a'), recent.get('b'), recent.get('c'), recent.get('d')]).toEqual([undefined, v(2), v(3), v(4)]);
    expect(recent.size).toBe(3);
  });

  it('counts a hash remembered again once, as its latest vector, and keeps it as the newest', () => {
    const recent = new RecentVectors(2 * 12);
    recent.remember('a', v(1));
    recent.remember('b', v(2));
    recent.remember('a', v(9));
    recent.remember('c', v(3));
    expect([recent.get('a'), recent.get('b'), recent.get('c')]).toEqual([v(9), undefined, v(3)]);
  });

  it('keeps the newest purchases over thousands of them, a hash remembered again staying newest', () => {
    // 20 vectors of 3 floats fit; every other one is a new copy of 'kept!', so 10 purchases stay.
    const recent = new RecentVectors(20 * 12);
    for (let i = 0; i < 5_000; i++) {
      recent.remember(`h${String(i).padStart(4, '0')}`, v(i));
      // Remembered again after every purchase: never the oldest, so never evicted.
      recent.remember('kept!', v(-1));
    }
    expect(recent.size).toBe(11);
    expect(recent.get('kept!')).toEqual(v(-1));
    for (let i = 4_990; i < 5_000; i++) expect(recent.get(`h${i}`)).toEqual(v(i));
    expect(recent.get('h4989')).toBeUndefined();
  });

  it('holds no more slots than its ring has room for when the same few hashes are remembered again and again', () => {
    const recent = new RecentVectors(1_200);
    for (let i = 0; i < 100_000; i++) recent.remember(`h${i % 3}`, v(i));
    expect(recent.size).toBe(3);
    expect(recent.get('h0')).toEqual(v(99_999));
    // Private, read only here: the array must not keep one entry per remember.
    const { order, head } = recent as unknown as { order: unknown[]; head: number };
    expect(order.length - head).toBeLessThanOrEqual(100);
    expect(order.length).toBeLessThan(2_000);
  });

  it('gives back exactly the latest vector of a hash or nothing, vectors of every length wrapping around the ring', () => {
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const recent = new RecentVectors(4 * 100);
    const latest = new Map<string, Float32Array>();
    for (let i = 0; i < 6_000; i++) {
      const hash = `h${Math.floor(random() * 50)}`;
      const vector = Float32Array.from({ length: 1 + Math.floor(random() * 40) }, (_, k) => i + k / 100);
      recent.remember(hash, vector);
      latest.set(hash, vector);
      expect(recent.get(hash), `the vector just remembered (${i})`).toEqual(vector);
      if (i % 97 === 0) {
        for (const [h, expected] of latest) {
          const kept = recent.get(h);
          if (kept !== undefined) expect(kept, `${h} at ${i}`).toEqual(expected);
        }
      }
    }
  });

  it('gives a copy that newer vectors do not overwrite', () => {
    const recent = new RecentVectors(2 * 12);
    recent.remember('a', v(1));
    const kept = recent.get('a') as Float32Array;
    for (let i = 0; i < 10; i++) recent.remember(`b${i}`, v(2));
    expect(kept).toEqual(v(1));
    expect(recent.get('a')).toBeUndefined();
  });

  it('keeps a copy of a vector that is a view into a larger buffer (a write job blob), not the buffer', () => {
    const blob = new Float32Array(3 * 1000).fill(7);
    const recent = new RecentVectors(1_000);
    recent.remember('a', blob.subarray(3, 6));
    const kept = recent.get('a') as Float32Array;
    expect(kept).toEqual(v(7));
    expect(kept.buffer.byteLength).toBe(12);
  });

  it('keeps nothing larger than its bound, and forgets what it held under that hash', () => {
    const recent = new RecentVectors(5 * 4);
    recent.remember('a', v(1));
    recent.remember('a', Float32Array.from({ length: 6 }, () => 2));
    expect(recent.get('a')).toBeUndefined();
    expect(recent.size).toBe(0);
  });
});
