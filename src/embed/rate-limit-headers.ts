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
  /** Until the token budget is whole again, in ms (x-ratelimit-reset-tokens, e.g. "6m0s"). */
  resetTokensMs?: number;
  /** Until the request budget is whole again, in ms (x-ratelimit-reset-requests, e.g. "1s"). */
  resetRequestsMs?: number;
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
 * Parses OpenAI's reset durations: Go-style "6m0s", "1s", "20ms", "1h2m3.5s", or a bare number of
 * seconds. Anything else is ignored rather than guessed at.
 */
export function parseResetDuration(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const text = raw.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.ceil(Number(text) * 1000);
  const match = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$/.exec(text);
  if (!match || text === '') return undefined;
  const [, h, m, s, ms] = match;
  return Math.ceil(Number(h ?? 0) * 3_600_000 + Number(m ?? 0) * 60_000 + Number(s ?? 0) * 1000 + Number(ms ?? 0));
}

/** The inverse, for the stub: what OpenAI would print for this many ms. */
export function formatResetDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Number(((ms % 60_000) / 1000).toFixed(3));
  return minutes > 0 ? `${minutes}m${seconds}s` : `${seconds}s`;
}

export function parseRateLimitHeaders(headers: Headers): ProviderLimits | undefined {
  const limits: ProviderLimits = {
    limitRequests: count(headers, 'x-ratelimit-limit-requests'),
    remainingRequests: count(headers, 'x-ratelimit-remaining-requests'),
    limitTokens: count(headers, 'x-ratelimit-limit-tokens'),
    remainingTokens: count(headers, 'x-ratelimit-remaining-tokens'),
    resetRequestsMs: parseResetDuration(header(headers, 'x-ratelimit-reset-requests')),
    resetTokensMs: parseResetDuration(header(headers, 'x-ratelimit-reset-tokens')),
  };
  return Object.values(limits).some((v) => v !== undefined) ? limits : undefined;
}
