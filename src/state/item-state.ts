import type { Redis } from 'ioredis';

/**
 * Per-item state in Redis, one hash per item (`<prefix>:item:<id>`), every change made by a Lua
 * script so that ingest replicas and workers never race:
 *   seen  the newest version ingest accepted (coalescing: older jobs are dropped unembedded)
 *   qj    the embed job holding that change: a redelivery of it while that job is still queued
 *         is not queued again, and a replay after the job failed (or finished) is
 *   wv    the version the sink holds (or deleted at: the tombstone)
 *   del   1 when that write was a delete
 *   h, m  content hash and model of the vector the sink holds
 * `wv`, `del`, `h` and `m` change only after the sink acknowledged a write, so the state never
 * claims more than the sink holds: a lost write is retried, never skipped. Tombstones expire
 * after the retention; an item's state otherwise lives as long as the item.
 *
 * Every script reads a hash once (HMGET) and writes it at most once (HSET): the Redis commands
 * per event are the indexer's main cost at high rates, so each one is counted.
 */
export interface ItemState {
  seen: number | undefined;
  writtenVersion: number | undefined;
  deleted: boolean;
  contentHash: string | undefined;
  model: string | undefined;
}

/** Where ingest finds whether an embed job is still queued: its key prefix and its failed set. */
export interface QueuedJobKeys {
  /** `<prefix>:embed:`; a job's hash is this plus its id. */
  jobPrefix: string;
  failedKey: string;
}

// KEYS: state hashes. ARGV[1]: embed job key prefix, ARGV[2]: the embed queue's failed set; then
// per key the event version and the id of the job that will carry it. Returns per key 1 when the
// event is to be queued: newer than any seen, or equal to it (a redelivery or a replay) while the
// job that carried it is gone or failed. 0 for an older event (dropped), or an equal one whose job
// still waits or runs (a redelivery of a batch still queued: it is not processed twice).
const OBSERVE = `
local result = {}
for i, key in ipairs(KEYS) do
  local version, job = tonumber(ARGV[1 + i * 2]), ARGV[2 + i * 2]
  local state = redis.call('HMGET', key, 'seen', 'qj')
  local seen, queued = tonumber(state[1]), state[2]
  result[i] = 0
  if seen == nil or version > seen then
    redis.call('HSET', key, 'seen', ARGV[1 + i * 2], 'qj', job)
    result[i] = 1
  elseif version == seen then
    local live = queued and redis.call('EXISTS', ARGV[1] .. queued) == 1 and not redis.call('ZSCORE', ARGV[2], queued)
    if not live then
      redis.call('HSET', key, 'qj', job)
      result[i] = 1
    end
  end
end
return result`;

// KEYS: state hashes. ARGV[1]: tombstone retention in seconds; then 4 per key: version, deleted
// (0|1), content hash, model. Keeps the highest version, so a writer that finishes late cannot
// move the state backwards. A delete leaves a tombstone that expires; a later upsert keeps the
// item for good again.
const RECORD_WRITTEN = `
local retention = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 4
  local version = tonumber(ARGV[base + 1])
  local state = redis.call('HMGET', key, 'wv', 'del')
  local written = tonumber(state[1])
  if written == nil or version >= written then
    redis.call('HSET', key, 'wv', ARGV[base + 1], 'del', ARGV[base + 2], 'h', ARGV[base + 3], 'm', ARGV[base + 4])
    if ARGV[base + 2] == '1' then redis.call('EXPIRE', key, retention)
    elseif state[2] == '1' then redis.call('PERSIST', key) end
  end
end
return #KEYS`;

// KEYS: state hashes. ARGV[1]: an embed job id. Forgets `qj` where it still names that job: its
// change left the job (dead-lettered alone) while the job goes on for its batch-mates, and a
// replay of it must be queued, not taken for a redelivery of a change still waiting.
const RELEASE_QUEUED = `
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 'qj') == ARGV[1] then redis.call('HDEL', key, 'qj') end
end
return #KEYS`;

// KEYS: state hashes. Forgets what the sink holds (the sink lost it): the next change is written.
// A forgotten tombstone no longer expires: the key now holds an item that is not deleted.
const FORGET_WRITTEN = `
for i, key in ipairs(KEYS) do
  redis.call('HDEL', key, 'wv', 'del', 'h', 'm')
  redis.call('PERSIST', key)
end
return #KEYS`;

export class ItemStateStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly tombstoneRetentionSeconds = 7 * 24 * 3600,
  ) {}

  key(itemId: string): string {
    return `${this.prefix}:item:${itemId}`;
  }

  get keyPattern(): string {
    return `${this.prefix}:item:*`;
  }

  /**
   * Ingest: records each event's version and the job that will carry it; true where the event is
   * to be queued (see OBSERVE). One HMGET and at most one HSET per event.
   */
  async observe(events: { itemId: string; version: number; jobId: string }[], queued: QueuedJobKeys): Promise<boolean[]> {
    if (events.length === 0) return [];
    const result = (await this.redis.eval(
      OBSERVE,
      events.length,
      ...events.map((e) => this.key(e.itemId)),
      queued.jobPrefix,
      queued.failedKey,
      ...events.flatMap((e) => [String(e.version), e.jobId]),
    )) as number[];
    return result.map((r) => r === 1);
  }

  /**
   * Writer: for each change, whether it is newer than what the sink holds for its item (one
   * HMGET each, pipelined: a read needs no script).
   */
  async newerThanWritten(changes: { itemId: string; version: number }[]): Promise<boolean[]> {
    if (changes.length === 0) return [];
    const states = await this.getMany(changes.map((c) => c.itemId));
    return changes.map((c, i) => {
      const written = (states[i] as ItemState).writtenVersion;
      return written === undefined || c.version > written;
    });
  }

  /** Writer, after the sink acknowledged: what it now holds. */
  async recordWritten(writes: { itemId: string; version: number; deleted: boolean; contentHash?: string; model?: string }[]): Promise<void> {
    if (writes.length === 0) return;
    await this.redis.eval(
      RECORD_WRITTEN,
      writes.length,
      ...writes.map((w) => this.key(w.itemId)),
      String(this.tombstoneRetentionSeconds),
      ...writes.flatMap((w) => [String(w.version), w.deleted ? '1' : '0', w.contentHash ?? '', w.model ?? '']),
    );
  }

  /** The job no longer carries these items' changes (see RELEASE_QUEUED). */
  async releaseQueued(itemIds: string[], jobId: string): Promise<void> {
    if (itemIds.length === 0) return;
    await this.redis.eval(RELEASE_QUEUED, itemIds.length, ...itemIds.map((id) => this.key(id)), jobId);
  }

  async forgetWritten(itemIds: string[]): Promise<void> {
    if (itemIds.length === 0) return;
    await this.redis.eval(FORGET_WRITTEN, itemIds.length, ...itemIds.map((id) => this.key(id)));
  }

  async getMany(itemIds: string[]): Promise<ItemState[]> {
    if (itemIds.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of itemIds) pipeline.hmget(this.key(id), 'seen', 'wv', 'del', 'h', 'm');
    const results = (await pipeline.exec()) ?? [];
    return results.map(([error, value]) => {
      if (error) throw error;
      const [seen, wv, del, h, m] = value as (string | null)[];
      return {
        seen: seen === null || seen === undefined ? undefined : Number(seen),
        writtenVersion: wv === null || wv === undefined ? undefined : Number(wv),
        deleted: del === '1',
        contentHash: h || undefined,
        model: m || undefined,
      };
    });
  }

  async get(itemId: string): Promise<ItemState> {
    return (await this.getMany([itemId]))[0] as ItemState;
  }

  /** Every item id with state (for verify), in pages. */
  async *itemIds(): AsyncIterable<string[]> {
    let cursor = '0';
    const strip = `${this.prefix}:item:`.length;
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', this.keyPattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) yield keys.map((k) => k.slice(strip));
    } while (cursor !== '0');
  }
}
