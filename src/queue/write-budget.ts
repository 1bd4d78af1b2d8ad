import type { Redis } from 'ioredis';
import { WRITE_QUEUE } from './jobs.js';

// KEYS[1]: the ledger (write job id -> bytes). ARGV[1]: the write jobs' key prefix. Sums the bytes
// of the write jobs that still exist and are unfinished; entries of jobs that are gone (written
// and removed) or finished are dropped on the way, so the ledger needs no upkeep on the writer's
// side and heals after a crash. O(jobs in the write queue), which the budget itself bounds.
const USED_BYTES = `
local entries = redis.call('HGETALL', KEYS[1])
local used, gone = 0, {}
for i = 1, #entries, 2 do
  local job = ARGV[1] .. entries[i]
  if redis.call('EXISTS', job) == 1 and redis.call('HEXISTS', job, 'finishedOn') == 0 then
    used = used + tonumber(entries[i + 1])
  else
    gone[#gone + 1] = entries[i]
  end
end
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone, 1, math.min(#gone, 5000))) end
return used`;

/** How long one reading of the write queue's size is trusted by a process. */
const READING_TTL_MS = 250;

/**
 * The bytes the write queue holds, against WRITE_QUEUE_MAX_BYTES. Write jobs hold vectors (a
 * 1536-dimension vector is 8 KiB in a job), so while the sink is down an embed stage turning its
 * backlog into write jobs would fill Redis until it refuses writes (OOM under noeviction). The
 * embed stage records each write job's size here and stops taking embed jobs while the budget is
 * spent: the backlog then waits in the embed queue (bounded by ingest's high-water mark) and in
 * Kafka, which has the room.
 */
export class WriteQueueBudget {
  readonly key: string;
  private reading: { at: number; bytes: number } | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    readonly maxBytes: number,
  ) {
    this.key = `${prefix}:${WRITE_QUEUE}:bytes`;
  }

  /**
   * After a write job is added: recorded before, the entry could be swept as a job that is gone.
   * A crash between the two leaves one job uncounted until it is written: a bounded overshoot.
   */
  async record(jobId: string, bytes: number): Promise<void> {
    await this.redis.hset(this.key, jobId, String(bytes));
    // This process's own jobs count at once, without waiting for the next reading.
    if (this.reading) this.reading.bytes += bytes;
  }

  async usedBytes(): Promise<number> {
    return (await this.redis.eval(USED_BYTES, 1, this.key, `${this.prefix}:${WRITE_QUEUE}:`)) as number;
  }

  /** Whether the write queue holds the budget or more (a reading at most READING_TTL_MS old). */
  async spent(): Promise<boolean> {
    const now = Date.now();
    if (this.reading === undefined || now - this.reading.at > READING_TTL_MS) this.reading = { at: now, bytes: await this.usedBytes() };
    return this.reading.bytes >= this.maxBytes;
  }
}
