/**
 * The one order of an item's changes, used by ingest, the state scripts (which repeat it in Lua)
 * and the writer, so that the outcome never depends on which of them compares two changes: by
 * version, and at an equal version a delete comes after an upsert. A delete and an upsert that
 * carry the same version therefore always end deleted, whether they arrive in one Kafka batch or
 * in two, and a prune (a delete at the item's current version) wins over the upsert it removes.
 */
export interface Ordered {
  version: number;
  op: 'upsert' | 'delete' | 'payload';
}

/** Whether change `a` comes after change `b` (strictly). */
export function isAfter(a: Ordered, b: Ordered): boolean {
  if (a.version !== b.version) return a.version > b.version;
  return a.op === 'delete' && b.op !== 'delete';
}
