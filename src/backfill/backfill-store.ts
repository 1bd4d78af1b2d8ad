import type { Redis } from 'ioredis';

/** How long a backfill's bookkeeping outlives its last touch (a crashed, never-resumed job's keys go). */
const TTL_SECONDS = 7 * 24 * 3600;

// KEYS[1]: a backfill's set of job ids, KEYS[2]: its cancel flag. ARGV[1]: key prefix. Removes the
// jobs that finished (gone: completed jobs are removed; or in their queue's failed set) and returns
// how many are left, and whether a cancel was asked for (one round trip for a waiting backfill).
const PENDING = `
local left = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local queue = string.sub(id, 1, 1) == 'w' and 'write' or 'embed'
  local key = ARGV[1] .. ':' .. queue .. ':' .. id
  if redis.call('EXISTS', key) == 0 or redis.call('ZSCORE', ARGV[1] .. ':' .. queue .. ':failed', id) then
    redis.call('SREM', KEYS[1], id)
  else
    left = left + 1
  end
end
return {left, redis.call('EXISTS', KEYS[2])}`;

/**
 * What a running backfill keeps in Redis beside its job: the embed and write jobs it put in the
 * queues and that have not finished (its bound on work in flight, and how it knows its rows are
 * written), and the flag an operator sets to cancel it.
 */
export class BackfillStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** Records jobs carrying a backfill's changes; called before the jobs are added, so none is missed. */
  async addJobs(backfillIds: Iterable<string>, jobIds: string[]): Promise<void> {
    if (jobIds.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const id of new Set(backfillIds)) pipeline.sadd(this.jobsKey(id), ...jobIds).expire(this.jobsKey(id), TTL_SECONDS);
    for (const [error] of (await pipeline.exec()) ?? []) if (error) throw error;
  }

  /** How many of a backfill's jobs have not finished, and whether it was cancelled (one round trip). */
  async jobsInFlight(backfillId: string): Promise<{ left: number; cancelled: boolean }> {
    const [left, cancelled] = (await this.redis.eval(PENDING, 2, this.jobsKey(backfillId), this.cancelKey(backfillId), this.prefix)) as [number, number];
    return { left, cancelled: cancelled === 1 };
  }

  /**
   * A pruning pass records the items its source has, in a set of its own (about 60 bytes per
   * item while the pass runs): two backfills reading one item never take each other's marks.
   */
  async markSeen(backfillId: string, itemIds: string[]): Promise<void> {
    if (itemIds.length === 0) return;
    await this.redis.pipeline().sadd(this.seenKey(backfillId), ...itemIds).expire(this.seenKey(backfillId), TTL_SECONDS).exec();
  }

  /** For each item, whether the pass's source had it. */
  async seenBy(backfillId: string, itemIds: string[]): Promise<boolean[]> {
    if (itemIds.length === 0) return [];
    return (await this.redis.smismember(this.seenKey(backfillId), ...itemIds)).map((m) => m === 1);
  }

  /** Now on Redis's clock, in ms: what item states record, so every host compares one time. */
  async now(): Promise<number> {
    const [seconds, micros] = await this.redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  async requestCancel(backfillId: string): Promise<void> {
    await this.redis.set(this.cancelKey(backfillId), '1', 'EX', TTL_SECONDS);
  }

  async cancelRequested(backfillId: string): Promise<boolean> {
    return (await this.redis.exists(this.cancelKey(backfillId))) === 1;
  }

  async forget(backfillId: string): Promise<void> {
    await this.redis.del(this.jobsKey(backfillId), this.cancelKey(backfillId), this.seenKey(backfillId));
  }

  private seenKey(id: string): string {
    return `${this.prefix}:backfill:${id}:seen`;
  }

  private jobsKey(id: string): string {
    return `${this.prefix}:backfill:${id}:jobs`;
  }

  private cancelKey(id: string): string {
    return `${this.prefix}:backfill:${id}:cancel`;
  }
}
