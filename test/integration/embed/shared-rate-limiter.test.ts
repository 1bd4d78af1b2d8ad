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
    expect(await a.reserve(1_000_000)).toMatchObject({ waitMs: 0, member: undefined });
    expect(a.limits).toEqual({ rpm: 0, tpm: 0 });
  });

  it('gives reservations from both replicas their turns in order once the minute budget is spent', async () => {
    // 60,000 tokens a minute is 1,000 a second: after the full bucket, each 100 tokens waits 100 ms more.
    const [a, b] = replicas({ tpm: 60_000 });
    expect((await a.reserve(60_000)).waitMs).toBe(0);
    const waits = [(await b.reserve(100)).waitMs, (await a.reserve(100)).waitMs, (await b.reserve(100)).waitMs];
    expect(waits[0]).toBeGreaterThan(0);
    expect(waits[1]).toBeGreaterThan(waits[0] as number);
    expect(waits[2]).toBeGreaterThan(waits[1] as number);
  });

  it('counts requests per minute as well as tokens', async () => {
    const [a, b] = replicas({ rpm: 6 }); // one every 10 s once the first 6 are spent
    for (let i = 0; i < 6; i++) expect((await (i % 2 ? a : b).reserve(0)).waitMs).toBe(0);
    expect((await a.reserve(0)).waitMs).toBeGreaterThan(5_000);
  });

  it('refunds what the provider did not count, and charges what it counted beyond the estimate', async () => {
    const [a, b] = replicas({ tpm: 60_000 });
    const big = await a.reserve(60_000);
    await a.settle(big, 30_000, undefined); // the provider counted half: half comes back
    expect((await b.reserve(29_000)).waitMs).toBe(0);
    const small = await b.reserve(0);
    await b.settle(small, 5_000, undefined); // counted more than reserved: the next caller pays for it
    expect((await a.reserve(1)).waitMs).toBeGreaterThan(2_000);
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
    expect((await b.reserve(100)).waitMs).toBeGreaterThan(0);
  });

  it('subtracts the reservations still waiting for their turn from the provider\'s remaining budget', async () => {
    const [a, b] = replicas({ tpm: 60_000 });
    const answered = await a.reserve(100);
    const queued = await b.reserve(60_000); // must wait for its turn: the provider cannot have seen it
    expect(queued.waitMs).toBeGreaterThan(0);
    // Someone else on the key spent 20,000: the provider has 39,900 left, which is -20,100 once
    // `queued` is sent. Our own bucket alone would believe -100.
    await a.settle(answered, 100, { limitTokens: 60_000, remainingTokens: 39_900 });
    expect((await a.reserve(100)).waitMs).toBeGreaterThan(15_000);
  });

  it('does not subtract twice a request already sent: the provider counted it when it answered another', async () => {
    const [a, b] = replicas({ tpm: 60_000 });
    await a.reserve(20_000); // sent, answer still on its way
    const second = await b.reserve(20_000);
    // The provider answers `second` having counted both: 20,000 left.
    await b.settle(second, 20_000, { limitTokens: 60_000, remainingTokens: 20_000 });
    expect((await a.reserve(15_000)).waitMs).toBe(0);
  });

  it("shares a 429's Retry-After with every replica", async () => {
    const [a, b] = replicas({ rpm: 1_000 });
    await a.block(300);
    expect((await b.reserve(0)).waitMs).toBeGreaterThan(200);
  });
});
