import type { CircuitState } from '../core/circuit-breaker.js';
import type { ProviderLimits } from './rate-limit-headers.js';

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
  /** What the provider's x-ratelimit-* headers said, when it sent them. */
  limits?: ProviderLimits;
}

export interface EmbedOptions {
  /** Aborts the request itself (its answer is lost: the texts may be paid for and not kept). */
  signal?: AbortSignal;
  /**
   * The process is stopping: no request that has not been sent yet starts (no fallback endpoint,
   * no wait for the rate limiter), while one in flight finishes and its answer is kept.
   */
  stopping?: AbortSignal;
  /** Tokens the caller counted for these texts: what a rate limiter reserves before sending. */
  estimatedTokens?: number;
}

/** How each endpoint behind a provider is doing, for readiness (/readyz). */
export interface EndpointHealth {
  name: string;
  url: string;
  circuit: CircuitState;
  /** Effective limits in force (0: none known). */
  rpm: number;
  tpm: number;
}

export interface EmbeddingProvider {
  /** "openai" for the OpenAI-compatible HTTP adapter, "local" for the offline hashing embedder. */
  readonly kind: 'openai' | 'local';
  readonly model: string;
  readonly dimensions: number;
  /** Throws EmbeddingsError (retryable or not) for a failed request; never returns partial results. */
  embed(texts: string[], options?: EmbedOptions): Promise<EmbeddingResult>;
  /** Endpoint states, for providers that call remote endpoints. */
  health?(): EndpointHealth[];
  close(): Promise<void>;
}
