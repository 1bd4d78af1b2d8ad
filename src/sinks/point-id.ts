import { parse as parseUuid, v5 as uuidv5 } from 'uuid';

/**
 * Qdrant accepts only unsigned integers and UUIDs as point ids, so every sink derives a UUIDv5 from
 * the item id over this fixed namespace. Never change it: every stored point would move.
 */
export const POINT_ID_NAMESPACE = '6f1c3a4e-2b7d-5e8f-9a0b-1c2d3e4f5a6b';

/** Parsed once: given as a string, uuid parses the namespace on every call (a third of its cost). */
const NAMESPACE_BYTES = parseUuid(POINT_ID_NAMESPACE);

export function pointId(itemId: string): string {
  return uuidv5(itemId, NAMESPACE_BYTES);
}
