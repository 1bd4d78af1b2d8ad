import { describe, expect, it } from 'vitest';
import { RecentVectors } from '../../../src/embed/recent-vectors.js';

describe('RecentVectors', () => {
  it('gives back what it remembers, and forgets the oldest purchases past its byte bound', () => {
    const recent = new RecentVectors(3 * (1 + 10));
    for (const hash of ['a', 'b', 'c']) recent.remember(hash, hash.repeat(10));
    expect(recent.get('a')).toBe('aaaaaaaaaa');
    recent.remember('d', 'd'.repeat(10));
    expect([recent.get('a'), recent.get('b'), recent.get('c'), recent.get('d')]).toEqual([undefined, 'bbbbbbbbbb', 'cccccccccc', 'dddddddddd']);
    expect(recent.size).toBe(3);
  });

  it('counts a hash remembered again once, as its latest vector, and keeps it as the newest', () => {
    const recent = new RecentVectors(2 * (1 + 10));
    recent.remember('a', 'x'.repeat(10));
    recent.remember('b', 'b'.repeat(10));
    recent.remember('a', 'y'.repeat(10));
    recent.remember('c', 'c'.repeat(10));
    expect([recent.get('a'), recent.get('b'), recent.get('c')]).toEqual(['yyyyyyyyyy', undefined, 'cccccccccc']);
  });

  it('keeps the newest purchases over thousands of them, a hash remembered again staying newest', () => {
    const recent = new RecentVectors(10 * (5 + 10));
    for (let i = 0; i < 5_000; i++) {
      recent.remember(`h${String(i).padStart(4, '0')}`, 'v'.repeat(10));
      // Remembered again after every purchase: never the oldest, so never evicted.
      recent.remember('kept!', 'k'.repeat(10));
    }
    expect(recent.size).toBe(10);
    expect(recent.get('kept!')).toBe('kkkkkkkkkk');
    for (let i = 4_991; i < 5_000; i++) expect(recent.get(`h${i}`)).toBe('vvvvvvvvvv');
    expect(recent.get('h4990')).toBeUndefined();
  });

  it('keeps its eviction order as long as its entries when the same few hashes are remembered again and again under the bound', () => {
    const recent = new RecentVectors(1_000_000);
    for (let i = 0; i < 100_000; i++) recent.remember(`h${i % 3}`, String(i).padStart(10, '0'));
    expect(recent.size).toBe(3);
    expect(recent.get('h0')).toBe('0000099999');
    // Private, read only here: the array must not keep one entry per remember.
    expect((recent as unknown as { order: unknown[] }).order.length).toBeLessThan(2_000);
  });

  it('keeps nothing larger than its bound', () => {
    const recent = new RecentVectors(5);
    recent.remember('a', 'too long for the bound');
    expect(recent.get('a')).toBeUndefined();
    expect(recent.size).toBe(0);
  });
});
