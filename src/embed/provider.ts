/**
 * The port every embeddings backend implements. The pipeline knows nothing else about providers:
 * batching, retries, deduplication and vector checks live on this side of it.
 */
export interface EmbeddingUsage {
  promptTokens: number;
  totalTokens: number;
}

export interface EmbeddingResult {
  /** One vector per input, in input order. */
  vectors: Float32Array[];
  usage: EmbeddingUsage;
}

export interface EmbeddingProvider {
  /** "openai" for the OpenAI-compatible HTTP adapter, "local" for the offline hashing embedder. */
  readonly kind: 'openai' | 'local';
  readonly model: string;
  readonly dimensions: number;
  /** Throws EmbeddingsError (retryable or not) for a failed request; never returns partial results. */
  embed(texts: string[], signal?: AbortSignal): Promise<EmbeddingResult>;
  close(): Promise<void>;
}
