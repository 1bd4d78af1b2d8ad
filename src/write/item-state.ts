import type { Redis } from 'ioredis';

/**
 * What the sink holds for each item, kept in Redis beside the queues: the version last written
 * (`wv`), whether that write was a delete (`del`, the tombstone), and the content hash and model
 * of the vector written. It is updated only after the sink acknowledged the write, so it never
 * claims more than the sink holds; a lost write is retried, never skipped.
 */
export interface WrittenState {
  version: number;
  deleted: boolean;
  contentHash: string | undefined;
  model: string | undefined;
}

// KEYS: one state hash per item. ARGV: the incoming version per key. Returns 1 where the incoming
// change is newer than what was written (write it), 0 where it is not (a duplicate or a late,
// out-of-order change: skip it, or it would overwrite a newer vector or resurrect a delete).
const FILTER_NEWER = `
local result = {}
for i, key in ipairs(KEYS) do
  local written = tonumber(redis.call('HGET', key, 'wv'))
  result[i] = (written == nil or tonumber(ARGV[i]) > written) and 1 or 0
end
return result`;

// KEYS: state hashes. ARGV: groups of 4 per key: version, deleted (0|1), content hash, model.
// Keeps the highest version: a slow writer that finishes late cannot move the state backwards.
const RECORD_WRITTEN = `
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  local version = tonumber(ARGV[base + 1])
  local written = tonumber(redis.call('HGET', key, 'wv'))
  if written == nil or version >= written then
    redis.call('HSET', key, 'wv', ARGV[base + 1], 'del', ARGV[base + 2], 'h', ARGV[base + 3], 'm', ARGV[base + 4])
  end
end
return #KEYS`;

export class ItemStateStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  key(itemId: string): string {
    return `${this.prefix}:item:${itemId}`;
  }

  /** For each change, whether it is newer than what the sink holds for its item. */
  async newerThanWritten(changes: { itemId: string; version: number }[]): Promise<boolean[]> {
    if (changes.length === 0) return [];
    const result = (await this.redis.eval(FILTER_NEWER, changes.length, ...changes.map((c) => this.key(c.itemId)), ...changes.map((c) => String(c.version)))) as number[];
    return result.map((r) => r === 1);
  }

  async recordWritten(writes: { itemId: string; version: number; deleted: boolean; contentHash?: string; model?: string }[]): Promise<void> {
    if (writes.length === 0) return;
    await this.redis.eval(
      RECORD_WRITTEN,
      writes.length,
      ...writes.map((w) => this.key(w.itemId)),
      ...writes.flatMap((w) => [String(w.version), w.deleted ? '1' : '0', w.contentHash ?? '', w.model ?? '']),
    );
  }

  async get(itemId: string): Promise<WrittenState | undefined> {
    const h = await this.redis.hgetall(this.key(itemId));
    if (h.wv === undefined) return undefined;
    return { version: Number(h.wv), deleted: h.del === '1', contentHash: h.h || undefined, model: h.m || undefined };
  }
}
