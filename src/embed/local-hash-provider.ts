import type { EmbeddingProvider, EmbeddingResult } from './provider.js';

/**
 * An offline, deterministic embedder for demos and local runs: signed feature hashing of words,
 * word pairs and character trigrams, sub-linear term frequency, L2-normalised.
 *
 * It measures LEXICAL overlap (shared words and word pieces), not meaning: "sneaker" and
 * "running shoe" are unrelated to it. Use a real model for semantic search.
 */
export class LocalHashProvider implements EmbeddingProvider {
  readonly kind = 'local' as const;

  constructor(
    readonly model: string,
    readonly dimensions: number,
  ) {}

  async embed(texts: string[]): Promise<EmbeddingResult> {
    let tokens = 0;
    const vectors = texts.map((text) => {
      const { vector, tokenCount } = this.embedOne(text);
      tokens += tokenCount;
      return vector;
    });
    return { vectors, usage: { promptTokens: tokens, totalTokens: tokens } };
  }

  async close(): Promise<void> {}

  private embedOne(text: string): { vector: Float32Array; tokenCount: number } {
    const words = tokenize(text);
    const counts = new Map<string, number>();
    const add = (feature: string, weight: number) => counts.set(feature, (counts.get(feature) ?? 0) + weight);
    words.forEach((word, i) => {
      add(`w:${word}`, 1);
      if (i > 0) add(`b:${words[i - 1]} ${word}`, 0.5);
      const padded = `^${word}$`;
      for (let j = 0; j + 3 <= padded.length; j++) add(`c:${padded.slice(j, j + 3)}`, 0.25);
    });
    // Text without any word (punctuation, emoji) still gets a stable, non-zero vector.
    if (counts.size === 0) add(`raw:${text}`, 1);

    const vector = new Float32Array(this.dimensions);
    for (const [feature, count] of counts) {
      const h = fnv1a(feature);
      const index = h % this.dimensions;
      const sign = fnv1a(feature, 0x9e3779b9) & 1 ? 1 : -1;
      vector[index] = (vector[index] as number) + sign * (1 + Math.log(count));
    }
    let norm = 0;
    for (const v of vector) norm += v * v;
    norm = Math.sqrt(norm);
    if (norm === 0) vector[0] = 1; // every feature cancelled out: keep the vector usable
    else for (let i = 0; i < vector.length; i++) vector[i] = (vector[i] as number) / norm;
    return { vector, tokenCount: Math.max(1, words.length) };
  }
}

function tokenize(text: string): string[] {
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length > 0);
}

function fnv1a(input: string, seed = 0x811c9dc5): number {
  let hash = seed >>> 0;
  for (let i = 0; i < input.length; i++) {
    hash ^= input.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}
