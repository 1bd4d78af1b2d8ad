import type { Redis } from 'ioredis';

/** How long a backfill's bookkeeping outlives its last touch (a crashed, never-resumed job's keys go). */
const TTL_SECONDS = 7 * 24 * 3600;

// KEYS[1]: a backfill's set of job ids. ARGV[1]: key prefix. Removes the jobs that finished (gone:
// completed jobs are removed; or in their queue's failed set) and returns how many are left.
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
return left`;

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

  /** How many of a backfill's jobs have not finished (one round trip). */
  async jobsInFlight(backfillId: string): Promise<number> {
    return Number(await this.redis.eval(PENDING, 1, this.jobsKey(backfillId), this.prefix));
  }

  async requestCancel(backfillId: string): Promise<void> {
    await this.redis.set(this.cancelKey(backfillId), '1', 'EX', TTL_SECONDS);
  }

  async cancelRequested(backfillId: string): Promise<boolean> {
    return (await this.redis.exists(this.cancelKey(backfillId))) === 1;
  }

  async forget(backfillId: string): Promise<void> {
    await this.redis.del(this.jobsKey(backfillId), this.cancelKey(backfillId));
  }

  private jobsKey(id: string): string {
    return `${this.prefix}:backfill:${id}:jobs`;
  }

  private cancelKey(id: string): string {
    return `${this.prefix}:backfill:${id}:cancel`;
  }
}
