import type { Redis } from 'ioredis';

/**
 * Per-item state in Redis, one hash per item (`<prefix>:item:<id>`), every change made by a Lua
 * script so that ingest replicas and workers never race:
 *   seen  the newest version ingest accepted (coalescing: older jobs are dropped unembedded)
 *   wv    the version the sink holds (or deleted at: the tombstone)
 *   del   1 when that write was a delete
 *   h, m  content hash and model of the vector the sink holds
 * `wv`, `del`, `h` and `m` change only after the sink acknowledged a write, so the state never
 * claims more than the sink holds: a lost write is retried, never skipped. Tombstones expire
 * after the retention; an item's state otherwise lives as long as the item.
 */
export interface ItemState {
  seen: number | undefined;
  writtenVersion: number | undefined;
  deleted: boolean;
  contentHash: string | undefined;
  model: string | undefined;
}

// KEYS: state hashes. ARGV: the event version per key. Raises `seen`; returns per key 1 when the
// event is the newest seen or equal to it (equal: a redelivery, re-enqueued idempotently by its
// deterministic job id), 0 when an older version was already seen (a late event: dropped).
const OBSERVE = `
local result = {}
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[i])
  local seen = tonumber(redis.call('HGET', key, 'seen'))
  if seen == nil or version >= seen then
    if seen == nil or version > seen then redis.call('HSET', key, 'seen', ARGV[i]) end
    result[i] = 1
  else
    result[i] = 0
  end
end
return result`;

// KEYS: state hashes. ARGV: the incoming version per key. 1 where the change is newer than what
// the sink holds (write it), 0 where it is not (a duplicate, or a late change that would overwrite
// a newer vector or resurrect a delete).
const FILTER_NEWER = `
local result = {}
for i, key in ipairs(KEYS) do
  local written = tonumber(redis.call('HGET', key, 'wv'))
  result[i] = (written == nil or tonumber(ARGV[i]) > written) and 1 or 0
end
return result`;

// KEYS: state hashes. ARGV[1]: tombstone retention in seconds; then 4 per key: version, deleted
// (0|1), content hash, model. Keeps the highest version, so a writer that finishes late cannot
// move the state backwards. A delete leaves a tombstone that expires; a later upsert keeps it.
const RECORD_WRITTEN = `
local retention = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 4
  local version = tonumber(ARGV[base + 1])
  local written = tonumber(redis.call('HGET', key, 'wv'))
  if written == nil or version >= written then
    redis.call('HSET', key, 'wv', ARGV[base + 1], 'del', ARGV[base + 2], 'h', ARGV[base + 3], 'm', ARGV[base + 4])
    if ARGV[base + 2] == '1' then redis.call('EXPIRE', key, retention) else redis.call('PERSIST', key) end
  end
end
return #KEYS`;

// KEYS: state hashes. Forgets what the sink holds (the sink lost it): the next change is written.
const FORGET_WRITTEN = `
for i, key in ipairs(KEYS) do redis.call('HDEL', key, 'wv', 'del', 'h', 'm') end
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

  /** Ingest: records each event's version; true where the event is not older than one already seen. */
  async observe(events: { itemId: string; version: number }[]): Promise<boolean[]> {
    if (events.length === 0) return [];
    const result = (await this.redis.eval(OBSERVE, events.length, ...events.map((e) => this.key(e.itemId)), ...events.map((e) => String(e.version)))) as number[];
    return result.map((r) => r === 1);
  }

  /** Writer: for each change, whether it is newer than what the sink holds for its item. */
  async newerThanWritten(changes: { itemId: string; version: number }[]): Promise<boolean[]> {
    if (changes.length === 0) return [];
    const result = (await this.redis.eval(FILTER_NEWER, changes.length, ...changes.map((c) => this.key(c.itemId)), ...changes.map((c) => String(c.version)))) as number[];
    return result.map((r) => r === 1);
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
