import { createHash } from 'node:crypto';

/**
 * What the embedding of a text depends on: the final text, the model and the vector size. Equal
 * hashes mean the stored vector is still right and no embeddings call is needed.
 */
export function contentHash(text: string, model: string, dimensions: number): string {
  return createHash('sha256').update(model).update('\u0000').update(String(dimensions)).update('\u0000').update(text).digest('hex');
}
