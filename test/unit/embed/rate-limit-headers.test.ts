import { describe, expect, it } from 'vitest';
import { formatResetDuration, parseRateLimitHeaders, parseResetDuration } from '../../../src/embed/rate-limit-headers.js';

describe('x-ratelimit headers', () => {
  it("reads OpenAI's headers, durations included", () => {
    expect(
      parseRateLimitHeaders({
        'x-ratelimit-limit-requests': '3000',
        'x-ratelimit-remaining-requests': '2999',
        'x-ratelimit-limit-tokens': '1000000',
        'x-ratelimit-remaining-tokens': '999984',
        'x-ratelimit-reset-requests': '20ms',
        'x-ratelimit-reset-tokens': '6m0s',
      }),
    ).toEqual({ limitRequests: 3000, remainingRequests: 2999, limitTokens: 1_000_000, remainingTokens: 999_984, resetRequestsMs: 20, resetTokensMs: 360_000 });
  });

  it('is undefined when the provider sends none, and ignores values it cannot read', () => {
    expect(parseRateLimitHeaders({ 'content-type': 'application/json' })).toBeUndefined();
    expect(parseRateLimitHeaders({ 'x-ratelimit-limit-tokens': 'lots', 'x-ratelimit-remaining-tokens': '-3' })).toBeUndefined();
    expect(parseRateLimitHeaders({ 'x-ratelimit-limit-tokens': ['5000', '6000'] })).toEqual({ limitTokens: 5000 });
  });

  it.each([
    ['1s', 1000],
    ['6m0s', 360_000],
    ['1h2m3.5s', 3_723_500],
    ['0.25s', 250],
    ['120ms', 120],
    ['2', 2000],
    ['soon', undefined],
    ['', undefined],
  ])('parses the duration %j as %j ms', (raw, ms) => {
    expect(parseResetDuration(raw)).toBe(ms);
  });

  it('formats durations the way it parses them', () => {
    for (const ms of [0, 20, 999, 1000, 1500, 59_999, 60_000, 360_000, 3_723_500]) {
      expect(Math.abs((parseResetDuration(formatResetDuration(ms)) as number) - ms)).toBeLessThanOrEqual(1);
    }
  });
});
