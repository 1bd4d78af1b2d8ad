/**
 * What a provider says about its own limits, read from OpenAI's x-ratelimit-* response headers
 * (also sent by Azure OpenAI and several compatible gateways). Every field is optional: a provider
 * that sends none of them leaves the limiter on its configured limits.
 */
export interface ProviderLimits {
  /** Requests per minute allowed (x-ratelimit-limit-requests). */
  limitRequests?: number;
  /** Requests left before the limit is hit (x-ratelimit-remaining-requests). */
  remainingRequests?: number;
  /** Tokens per minute allowed (x-ratelimit-limit-tokens). */
  limitTokens?: number;
  /** Tokens left before the limit is hit (x-ratelimit-remaining-tokens). */
  remainingTokens?: number;
}

type Headers = Record<string, string | string[] | undefined>;

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function count(headers: Headers, name: string): number | undefined {
  const raw = header(headers, name);
  if (raw === undefined || raw.trim() === '') return undefined;
  const value = Number(raw);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}

/**
 * The x-ratelimit-reset-* headers are not read: the limit gives the refill rate (limit per
 * minute), and the remaining budget gives the level, which is all a token bucket needs.
 */
export function parseRateLimitHeaders(headers: Headers): ProviderLimits | undefined {
  const limits: ProviderLimits = {
    limitRequests: count(headers, 'x-ratelimit-limit-requests'),
    remainingRequests: count(headers, 'x-ratelimit-remaining-requests'),
    limitTokens: count(headers, 'x-ratelimit-limit-tokens'),
    remainingTokens: count(headers, 'x-ratelimit-remaining-tokens'),
  };
  return Object.values(limits).some((v) => v !== undefined) ? limits : undefined;
}
