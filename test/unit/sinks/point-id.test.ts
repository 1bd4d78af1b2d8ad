import { describe, expect, it } from 'vitest';
import { pointId } from '../../../src/sinks/point-id.js';

describe('pointId', () => {
  it('is a stable UUIDv5 of the item id', () => {
    const id = pointId('sku-123');
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // Pinned: changing the namespace would move every stored point.
    expect(id).toBe(pointId('sku-123'));
    expect(pointId('sku-124')).not.toBe(id);
    expect(pointId('sku-123')).toMatchInlineSnapshot(`"fd8f1e08-4b8d-5c45-8c79-c6f13abd41cb"`);
  });
});
