import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import { redactUrl } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { LocalHashProvider } from './local-hash-provider.js';
import { OpenAIProvider } from './openai-provider.js';
import type { EmbeddingProvider } from './provider.js';
import { observedBreaker, ResilientProvider, type Endpoint } from './resilient-provider.js';
import { SharedRateLimiter } from './shared-rate-limiter.js';

export interface ProviderDependencies {
  /** Where replicas share rate-limit budgets; without it each endpoint is limited only by 429s. */
  redis?: Redis;
  prefix?: string;
  logger?: Logger;
  metrics?: Metrics;
}

export function createProvider(config: Config['embeddings'], deps: ProviderDependencies = {}): EmbeddingProvider {
  if (config.provider === 'local') return new LocalHashProvider(config.model, config.dimensions);
  const targets = [{ baseUrl: config.baseUrl, apiKey: config.apiKey }, ...config.fallbacks];
  const endpoints = targets.map((target, i): Endpoint => {
    const name = i === 0 ? 'primary' : `fallback-${i}`;
    const provider = openAIEndpoint(config, target.baseUrl, target.apiKey);
    return {
      name,
      url: redactUrl(target.baseUrl),
      provider,
      breaker: observedBreaker(name, config.breaker, deps.logger, deps.metrics),
      limiter: deps.redis
        ? new SharedRateLimiter({
            redis: deps.redis,
            key: `${deps.prefix ?? 'indexer'}:ratelimit:${config.model}:${fingerprint(target.baseUrl, target.apiKey)}`,
            limits: config.rateLimits,
            adaptToHeaders: config.rateLimits.adaptToHeaders,
            reservationTtlMs: config.timeoutMs + 60_000,
          })
        : undefined,
    };
  });
  return new ResilientProvider({ endpoints, logger: deps.logger, metrics: deps.metrics });
}

function openAIEndpoint(config: Config['embeddings'], baseUrl: string, apiKey: string | undefined): OpenAIProvider {
  const azure = config.preset === 'azure' && config.azure ? config.azure : undefined;
  return new OpenAIProvider({
    baseUrl,
    url: azure ? `${baseUrl}/openai/deployments/${encodeURIComponent(azure.deployment)}/embeddings?api-version=${encodeURIComponent(azure.apiVersion)}` : undefined,
    auth: azure ? 'api-key' : 'bearer',
    apiKey,
    model: config.model,
    dimensions: config.dimensions,
    sendDimensions: config.sendDimensions,
    encoding: config.encoding,
    timeoutMs: config.timeoutMs,
  });
}

/**
 * Limits belong to an account (the key) at a server (the URL): replicas using the same pair share
 * one bucket. Hashed so that the key never appears in Redis.
 */
function fingerprint(baseUrl: string, apiKey: string | undefined): string {
  return createHash('sha256').update(`${baseUrl}\n${apiKey ?? ''}`).digest('hex').slice(0, 16);
}
