/**
 * The shared rate limiter on real Redis: two instances on one key stand for two replicas.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SharedRateLimiter, type RateLimits } from '../../../src/embed/shared-rate-limiter.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

describe('SharedRateLimiter', () => {
  let redis: Redis;
  const prefix = uniqueName('limiter');

  beforeAll(() => {
    redis = new Redis(services().redisUrl);
  });

  afterAll(async () => {
    await deletePrefix(services().redisUrl, prefix);
    redis.disconnect();
  });

  /** Two replicas sharing one bucket. */
  const replicas = (limits: RateLimits) => {
    const key = `${prefix}:${uniqueName('bucket')}`;
    const make = () => new SharedRateLimiter({ redis, key, limits, reservationTtlMs: 60_000 });
    return [make(), make()] as const;
  };

  it('does nothing and costs nothing to settle when there are no limits', async () => {
    const [a] = replicas({});
    const reservation = await a.reserve(1_000_000);
    expect(reservation).toMatchObject({ waitedMs: 0, member: undefined });
    expect(a.limits).toEqual({ rpm: 0, tpm: 0 });
  });

  it('serves reservations from both replicas in turn once the minute budget is spent', async () => {
    // 60,000 tokens a minute is 1,000 a second: after the full bucket, each 100 tokens waits 100 ms more.
    const [a, b] = replicas({ tpm: 60_000 });
    expect((await a.reserve(60_000)).waitedMs).toBe(0);
    const first = b.reserve(100);
    const second = a.reserve(100);
    const third = b.reserve(100);
    const waits = (await Promise.all([first, second, third])).map((r) => r.waitedMs);
    expect(waits[0]).toBeGreaterThan(0);
    expect(waits[1]).toBeGreaterThan(waits[0] as number);
    expect(waits[2]).toBeGreaterThan(waits[1] as number);
  });

  it('counts requests per minute as well as tokens', async () => {
    const [a, b] = replicas({ rpm: 120 }); // two a second once the first 120 are spent
    const reservations = await Promise.all(Array.from({ length: 126 }, (_, i) => (i % 2 ? a : b).reserve(0)));
    const waited = reservations.filter((r) => r.waitedMs > 0).length;
    expect(waited).toBeGreaterThanOrEqual(3); // 6 over the budget; the test cannot take 1.5 s to send them
    expect(waited).toBeLessThanOrEqual(6);
  });

  it('refunds what the provider did not count, and charges what it counted beyond the estimate', async () => {
    const [a, b] = replicas({ tpm: 60_000 });
    const big = await a.reserve(60_000);
    await a.settle(big, 30_000, undefined); // the provider counted half: half comes back
    expect((await b.reserve(29_000)).waitedMs).toBe(0);
    const small = await b.reserve(0);
    await b.settle(small, 1_500, undefined); // counted more than reserved: the next caller pays for it
    expect((await a.reserve(1)).waitedMs).toBeGreaterThan(0);
  });

  it('learns a lower limit from x-ratelimit headers, for every replica', async () => {
    const [a, b] = replicas({ tpm: 1_000_000 });
    const reservation = await a.reserve(10);
    await a.settle(reservation, 10, { limitTokens: 6_000, remainingTokens: 5_990, limitRequests: 500, remainingRequests: 499 });
    expect(a.limits).toEqual({ rpm: 500, tpm: 6_000 });
    await b.reserve(1);
    expect(b.limits).toEqual({ rpm: 500, tpm: 6_000 });
  });

  it("takes the provider's remaining budget when it is lower than ours (another client on the key)", async () => {
    const [a, b] = replicas({ tpm: 60_000 });
    const reservation = await a.reserve(100);
    await a.settle(reservation, 100, { limitTokens: 60_000, remainingTokens: 0 });
    expect((await b.reserve(100)).waitedMs).toBeGreaterThan(0);
  });

  it('subtracts reservations the provider has not seen yet from its remaining budget', async () => {
    const [a, b] = replicas({ tpm: 60_000 });
    const inFlight = await b.reserve(30_000); // sent, not answered yet
    const answered = await a.reserve(100);
    // Someone else on the key spent 20,000: the provider has 39,900 left in its view, which is
    // 9,900 once `inFlight` lands. Our own bucket alone would still believe 29,900.
    await a.settle(answered, 100, { limitTokens: 60_000, remainingTokens: 39_900 });
    expect((await a.reserve(9_000)).waitedMs).toBe(0);
    expect((await b.reserve(2_000)).waitedMs).toBeGreaterThan(0);
    await b.settle(inFlight, 30_000, undefined);
  });

  it("shares a 429's Retry-After with every replica", async () => {
    const [a, b] = replicas({ rpm: 1_000 });
    await a.block(300);
    expect((await b.reserve(0)).waitedMs).toBeGreaterThan(200);
  });
});
