import { describe, expect, it } from 'vitest';
import { RecentPurchases } from '../../../src/embed/recent-purchases.js';

describe('recent purchases', () => {
  it('shows a text being bought to every batch', () => {
    const p = new RecentPurchases<number>();
    const bought = Promise.resolve(1);
    p.register('text A', bought);
    expect(p.get('text A')).toBe(bought);
  });

  it('keeps a retired purchase for batches that began reading before it was announced, and only for them', () => {
    const p = new RecentPurchases<number>();
    const early = p.beginRead();
    p.register('text A', Promise.resolve(1));
    p.retire(['text A']);
    const late = p.beginRead();
    // The early batch read Redis before the announcement: it must still find the purchase here.
    expect(p.get('text A')).toBeDefined();
    p.endRead(late);
    expect(p.get('text A')).toBeDefined();
    p.endRead(early);
    expect(p.get('text A')).toBeUndefined();
  });

  it('forgets a purchase retired while no batch is reading', () => {
    const p = new RecentPurchases<number>();
    p.register('text A', Promise.resolve(1));
    p.retire(['text A']);
    expect(p.get('text A')).toBeUndefined();
  });
});
