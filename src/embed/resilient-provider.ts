import { CircuitBreaker, type CircuitState } from '../core/circuit-breaker.js';
import { DeferredError, errorMessage, IndexerError } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { EmbeddingProvider, EmbeddingResult, EmbedOptions, EndpointHealth } from './provider.js';
import type { ProviderLimits } from './rate-limit-headers.js';
import { waitForTurn, type Reservation, type SharedRateLimiter } from './shared-rate-limiter.js';

/** One base URL and key serving the configured model. */
export interface Endpoint {
  /** "primary", "fallback-1", ...: what logs, metrics and readiness call it. */
  name: string;
  /** Where it is, for people (never carries the key). */
  url: string;
  provider: EmbeddingProvider;
  breaker: CircuitBreaker;
  /** Absent when there is no Redis to share budgets through (CLI search, unit tests). */
  limiter?: SharedRateLimiter;
}

export interface ResilientProviderOptions {
  endpoints: Endpoint[];
  logger?: Logger;
  metrics?: Metrics;
}

/** Errors that say something is wrong with the endpoint, not with the input: they trip its circuit. */
const ENDPOINT_FAULTS = new Set(['EMBEDDINGS_UNAVAILABLE', 'EMBEDDINGS_BAD_RESPONSE', 'EMBEDDINGS_UNAUTHORIZED', 'EMBEDDINGS_QUOTA_EXHAUSTED']);
/** Errors another endpoint (another server, another key) may not have: try the next one at once. */
const FAIL_OVER = new Set([...ENDPOINT_FAULTS, 'EMBEDDINGS_RATE_LIMITED']);

const codeOf = (error: unknown) => (error instanceof IndexerError ? error.code : undefined);

/**
 * The embeddings endpoints as one provider. Each call goes to the first endpoint whose circuit
 * admits it, after reserving its requests and tokens in that endpoint's shared rate limiter; when
 * an endpoint fails in a way another might not (down, refusing the key, out of quota, rate
 * limiting), the same request goes to the next one. Fallbacks serve the same model, so their
 * vectors live in the same space (see docs/ARCHITECTURE.md); they are for failures, not for
 * extra throughput: the primary is always tried first.
 *
 * When every circuit is open nothing is called and a DeferredError says when to come back.
 */
function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const present = signals.filter((s): s is AbortSignal => s !== undefined);
  return present.length <= 1 ? present[0] : AbortSignal.any(present);
}

export class ResilientProvider implements EmbeddingProvider {
  readonly kind = 'openai' as const;
  readonly model: string;
  readonly dimensions: number;

  constructor(private readonly options: ResilientProviderOptions) {
    const primary = options.endpoints[0];
    if (!primary) throw new Error('ResilientProvider needs at least one endpoint');
    this.model = primary.provider.model;
    this.dimensions = primary.provider.dimensions;
    for (const endpoint of options.endpoints) this.options.metrics?.embeddingCircuitState.set({ endpoint: endpoint.name }, 0);
  }

  async embed(texts: string[], options: EmbedOptions = {}): Promise<EmbeddingResult> {
    let lastError: unknown;
    let soonestMs = Number.POSITIVE_INFINITY;
    for (const [position, endpoint] of this.options.endpoints.entries()) {
      options.stopping?.throwIfAborted();
      const admission = endpoint.breaker.admit();
      if (!admission.admitted) {
        soonestMs = Math.min(soonestMs, admission.retryInMs);
        continue;
      }
      try {
        return await this.call(endpoint, texts, options);
      } catch (error) {
        lastError = error;
        const next = this.options.endpoints[position + 1];
        if (!FAIL_OVER.has(codeOf(error) ?? '') || !next) throw error;
        this.options.logger?.warn({ from: endpoint.name, to: next.name, err: errorMessage(error) }, 'embeddings endpoint failed; trying the next one');
      }
    }
    if (lastError !== undefined) throw lastError;
    const waitMs = Math.ceil(soonestMs);
    throw new DeferredError('EMBEDDINGS_CIRCUIT_OPEN', `every embeddings endpoint's circuit is open after repeated failures; the next call goes out in ${waitMs} ms`, {
      retryAfterMs: waitMs,
      details: { endpoints: this.options.endpoints.map((e) => ({ name: e.name, circuit: e.breaker.state })) },
    });
  }

  health(): EndpointHealth[] {
    return this.options.endpoints.map((e) => ({ name: e.name, url: e.url, circuit: e.breaker.state, rpm: e.limiter?.limits.rpm ?? 0, tpm: e.limiter?.limits.tpm ?? 0 }));
  }

  async close(): Promise<void> {
    await Promise.all(this.options.endpoints.map((e) => e.provider.close()));
  }

  private async call(endpoint: Endpoint, texts: string[], options: EmbedOptions): Promise<EmbeddingResult> {
    const { metrics } = this.options;
    const labels = { endpoint: endpoint.name };
    let reservation: Reservation | undefined;
    try {
      reservation = await endpoint.limiter?.reserve(options.estimatedTokens ?? 0);
      if (reservation) {
        metrics?.rateLimitWaitSeconds.observe(labels, reservation.waitMs / 1000);
        await waitForTurn(reservation, anySignal(options.signal, options.stopping));
      }
    } catch (error) {
      endpoint.breaker.release(); // a Redis failure or a cancelled wait says nothing about the endpoint
      throw error;
    }

    let result: EmbeddingResult;
    try {
      result = await endpoint.provider.embed(texts, options);
    } catch (error) {
      const code = codeOf(error);
      metrics?.endpointRequests.inc({ ...labels, outcome: code ?? 'error' });
      if (code && ENDPOINT_FAULTS.has(code)) endpoint.breaker.failure();
      else if (code) endpoint.breaker.success(); // it answered: a 429 or a bad input is not an outage
      else endpoint.breaker.release();
      await this.settle(endpoint, reservation, code === 'EMBEDDINGS_RATE_LIMITED' ? 0 : undefined, limitsOf(error));
      if (code === 'EMBEDDINGS_RATE_LIMITED') await this.block(endpoint, (error as IndexerError).retryAfterMs);
      throw error;
    }
    endpoint.breaker.success();
    metrics?.endpointRequests.inc({ ...labels, outcome: 'ok' });
    await this.settle(endpoint, reservation, result.usage.totalTokens || undefined, result.limits);
    return result;
  }

  /**
   * Corrects the endpoint's budget after an answer. Never fails the call: the vectors are paid
   * for, and a bucket that missed one correction is corrected by the next answer's headers.
   */
  private async settle(endpoint: Endpoint, reservation: Reservation | undefined, countedTokens: number | undefined, limits: ProviderLimits | undefined): Promise<void> {
    if (!endpoint.limiter || !reservation) return;
    try {
      await endpoint.limiter.settle(reservation, countedTokens ?? reservation.tokens, limits);
      this.options.metrics?.rateLimit.set({ endpoint: endpoint.name, kind: 'requests' }, endpoint.limiter.limits.rpm);
      this.options.metrics?.rateLimit.set({ endpoint: endpoint.name, kind: 'tokens' }, endpoint.limiter.limits.tpm);
    } catch (error) {
      this.options.logger?.warn({ endpoint: endpoint.name, err: errorMessage(error) }, 'could not settle a rate-limit reservation');
    }
  }

  private async block(endpoint: Endpoint, retryAfterMs: number | undefined): Promise<void> {
    if (!endpoint.limiter || retryAfterMs === undefined) return;
    try {
      await endpoint.limiter.block(retryAfterMs);
    } catch (error) {
      this.options.logger?.warn({ endpoint: endpoint.name, err: errorMessage(error) }, 'could not share a Retry-After through Redis');
    }
  }
}

function limitsOf(error: unknown): ProviderLimits | undefined {
  return error instanceof IndexerError ? (error.details?.limits as ProviderLimits | undefined) : undefined;
}

/** A breaker whose transitions are logged loudly and exported as a metric. */
export function observedBreaker(name: string, settings: { failures: number; cooldownMs: number }, logger?: Logger, metrics?: Metrics): CircuitBreaker {
  const level: Record<CircuitState, number> = { closed: 0, half_open: 1, open: 2 };
  return new CircuitBreaker({
    failureThreshold: settings.failures,
    cooldownMs: settings.cooldownMs,
    onStateChange: (state, previous) => {
      metrics?.embeddingCircuitState.set({ endpoint: name }, level[state]);
      if (state === 'open') {
        metrics?.embeddingCircuitOpened.inc({ endpoint: name });
        logger?.error(
          { endpoint: name, previous, cooldownMs: settings.cooldownMs },
          `EMBEDDINGS CIRCUIT OPEN for ${name}: it kept failing, so nothing is sent to it for ${settings.cooldownMs} ms; then one probe request decides. Jobs wait in the queue meanwhile; check the endpoint (EMBEDDINGS_BASE_URL) and its status page`,
        );
      } else if (state === 'closed') {
        logger?.info({ endpoint: name, previous }, `embeddings circuit closed for ${name}: it answers again`);
      }
    },
  });
}
