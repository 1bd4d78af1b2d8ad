import { describe, expect, it } from 'vitest';
import { isAfter } from '../../../src/core/change-order.js';

describe('the order of an item\'s changes', () => {
  it('orders by version first', () => {
    expect(isAfter({ version: 2, op: 'upsert' }, { version: 1, op: 'delete' })).toBe(true);
    expect(isAfter({ version: 1, op: 'delete' }, { version: 2, op: 'upsert' })).toBe(false);
  });

  it('puts a delete after an upsert at an equal version, whichever arrives first', () => {
    expect(isAfter({ version: 5, op: 'delete' }, { version: 5, op: 'upsert' })).toBe(true);
    expect(isAfter({ version: 5, op: 'upsert' }, { version: 5, op: 'delete' })).toBe(false);
    expect(isAfter({ version: 5, op: 'delete' }, { version: 5, op: 'payload' })).toBe(true);
  });

  it('is strict: the same change is not after itself', () => {
    expect(isAfter({ version: 5, op: 'upsert' }, { version: 5, op: 'upsert' })).toBe(false);
    expect(isAfter({ version: 5, op: 'delete' }, { version: 5, op: 'delete' })).toBe(false);
  });
});
