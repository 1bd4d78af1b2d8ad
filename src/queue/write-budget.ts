import type { Redis } from 'ioredis';
import { WRITE_QUEUE } from './jobs.js';

// KEYS[1]: the ledger (write job id -> bytes), KEYS[2]: its total. ARGV[1]: job id, ARGV[2]: bytes.
const RECORD = `
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('INCRBY', KEYS[2], ARGV[2]) end
return 1`;

// KEYS[1]: the ledger, KEYS[2]: its total, KEYS[3]: the sweep's cursor. ARGV[1]: the write jobs'
// key prefix, ARGV[2]: entries swept per call. Drops the entries of write jobs that are gone
// (written and removed) or finished, a slice per call, and returns the total: so a reading costs
// the same however many jobs wait, the ledger needs no upkeep on the writer's side, and it heals
// after a crash. Entries not swept yet count: the total errs on the full side.
const USED_BYTES = `
local cursor = redis.call('GET', KEYS[3]) or '0'
local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', ARGV[2])
local entries, freed = page[2], 0
for i = 1, #entries, 2 do
  local job = ARGV[1] .. entries[i]
  if redis.call('EXISTS', job) == 0 or redis.call('HEXISTS', job, 'finishedOn') == 1 then
    redis.call('HDEL', KEYS[1], entries[i])
    freed = freed + tonumber(entries[i + 1])
  end
end
redis.call('SET', KEYS[3], page[1])
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
if freed > 0 then total = redis.call('DECRBY', KEYS[2], freed) end
if total < 0 or redis.call('HLEN', KEYS[1]) == 0 then
  total = 0
  redis.call('SET', KEYS[2], '0')
end
return total`;

/** Ledger entries looked at per reading. */
const SWEEP_PER_READING = 1000;

/**
 * What a write job costs Redis beside its data: the job hash's other fields (options, timestamps,
 * attempts), its place in the wait list and the events stream, its ledger entry. Measured about
 * 0.9 KiB per job on Redis 7.0; counted so that a queue of many small jobs (deletes, payload-only
 * changes) is bounded by the memory it takes, not by its data alone.
 */
export const WRITE_JOB_OVERHEAD_BYTES = 1024;

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
  private readonly totalKey: string;
  private readonly cursorKey: string;
  private reading: { at: number; bytes: number } | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    readonly maxBytes: number,
  ) {
    this.key = `${prefix}:${WRITE_QUEUE}:bytes`;
    this.totalKey = `${this.key}:total`;
    this.cursorKey = `${this.key}:cursor`;
  }

  /**
   * After a write job is added: recorded before, the entry could be swept as a job that is gone.
   * A crash between the two leaves one job uncounted until it is written: a bounded overshoot.
   */
  async record(jobId: string, bytes: number): Promise<void> {
    const cost = bytes + WRITE_JOB_OVERHEAD_BYTES;
    await this.redis.eval(RECORD, 2, this.key, this.totalKey, jobId, String(cost));
    // This process's own jobs count at once, without waiting for the next reading.
    if (this.reading) this.reading.bytes += cost;
  }

  async usedBytes(): Promise<number> {
    return (await this.redis.eval(USED_BYTES, 3, this.key, this.totalKey, this.cursorKey, `${this.prefix}:${WRITE_QUEUE}:`, String(SWEEP_PER_READING))) as number;
  }

  /** Whether the write queue holds the budget or more (a reading at most READING_TTL_MS old). */
  async spent(): Promise<boolean> {
    const now = Date.now();
    if (this.reading === undefined || now - this.reading.at > READING_TTL_MS) this.reading = { at: now, bytes: await this.usedBytes() };
    return this.reading.bytes >= this.maxBytes;
  }
}
