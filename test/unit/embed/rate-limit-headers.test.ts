import { describe, expect, it } from 'vitest';
import { parseRateLimitHeaders } from '../../../src/embed/rate-limit-headers.js';

describe('x-ratelimit headers', () => {
  it("reads OpenAI's limit and remaining headers", () => {
    expect(
      parseRateLimitHeaders({
        'x-ratelimit-limit-requests': '3000',
        'x-ratelimit-remaining-requests': '2999',
        'x-ratelimit-limit-tokens': '1000000',
        'x-ratelimit-remaining-tokens': '999984',
        'x-ratelimit-reset-requests': '20ms',
        'x-ratelimit-reset-tokens': '6m0s',
      }),
    ).toEqual({ limitRequests: 3000, remainingRequests: 2999, limitTokens: 1_000_000, remainingTokens: 999_984 });
  });

  it('is undefined when the provider sends none, and ignores values it cannot read', () => {
    expect(parseRateLimitHeaders({ 'content-type': 'application/json' })).toBeUndefined();
    expect(parseRateLimitHeaders({ 'x-ratelimit-limit-tokens': 'lots', 'x-ratelimit-remaining-tokens': '-3' })).toBeUndefined();
    expect(parseRateLimitHeaders({ 'x-ratelimit-limit-tokens': ['5000', '6000'] })).toEqual({ limitTokens: 5000 });
  });
});
