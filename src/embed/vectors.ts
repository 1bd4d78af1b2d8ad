import { VectorError } from '../core/errors.js';

/**
 * Invariant 4: a vector of the wrong size, with a NaN or an Infinity, or of zero length (cosine of
 * nothing) is refused, never padded, cut or "fixed".
 */
export function checkVector(vector: Float32Array, dimensions: number, itemId?: string): Float32Array {
  const who = itemId === undefined ? 'a vector' : `the vector of item ${JSON.stringify(itemId)}`;
  if (vector.length !== dimensions) {
    throw new VectorError(`${who} has ${vector.length} dimensions, the configured model has ${dimensions} (EMBEDDINGS_DIMENSIONS); refusing to write it`, { expected: dimensions, got: vector.length });
  }
  let squares = 0;
  for (let i = 0; i < vector.length; i++) {
    const value = vector[i] as number;
    if (!Number.isFinite(value)) {
      throw new VectorError(`${who} holds ${value} at index ${i}; refusing to write it`, { index: i });
    }
    squares += value * value;
  }
  if (squares === 0) throw new VectorError(`${who} is all zeros; refusing to write it`);
  return vector;
}
