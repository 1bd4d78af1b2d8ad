import type { Redis } from 'ioredis';
import type { Ordered } from '../core/change-order.js';
import type { VersionSource } from '../ingest/change-event.js';

/**
 * Per-item state in Redis, one hash per item (`<prefix>:item:<id>`), every change made by a Lua
 * script so that ingest replicas, backfills and workers never race:
 *   seen  the newest version accepted (coalescing: older jobs are dropped unembedded)
 *   sd    1 when that change is a delete (changes are ordered by version, then delete after
 *         upsert: see core/change-order.ts, which the scripts repeat)
 *   qj    the embed job holding that change: a redelivery of it while that job is still queued
 *         is not queued again, and a replay after the job failed (or finished) is
 *   t     when that change was accepted (ms, Redis's clock): a prune never deletes an item
 *         changed after its backfill started
 *   vs    where the item's versions come from, recorded with the changes accepted: v (the
 *         version field), u (updated_at), k (the Kafka timestamp). Versions of two sources never
 *         compare (a counter against epoch ms), so a change of another source is refused, not
 *         ordered; an item whose state predates the field takes the source of its next change
 *   wv    the version the sink holds (or deleted at: the tombstone)
 *   del   1 when that write was a delete
 *   h, m  content hash and model of the vector the sink holds
 * The write leases (the one writer that may write an item now) live beside, in `<prefix>:write-leases`.
 * `wv`, `del`, `h` and `m` change only after the sink acknowledged a write, so the state never
 * claims more than the sink holds: a lost write is retried, never skipped. Tombstones expire
 * after the retention; an item's state otherwise lives as long as the item.
 *
 * Every script reads an item's hash at most once (HMGET) and writes it at most once (HSET), and the
 * lease hash once or twice per batch: the Redis commands per event are the indexer's main cost at
 * high rates, so each one is counted.
 */
export interface ItemState {
  seen: number | undefined;
  seenDeleted: boolean;
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

/** A change offered to the queue, with the embed job that will carry it. */
export interface ObservedChange {
  itemId: string;
  version: number;
  op: 'upsert' | 'delete';
  jobId: string;
  /**
   * Where its version comes from; undefined when it was taken from the item's own state (a
   * prune's delete at the item's current version), which fits whatever source the item records.
   */
  versionSource: VersionSource | undefined;
}

/**
 * What to do with an offered change: `queue` it; drop it as `older_or_queued` (a newer change was
 * accepted, or this one is still queued: a redelivery); drop it as `in_sink` (the sink holds this
 * change already, or a newer one: a replay after it was written, a re-run backfill); or refuse it
 * (dead-letter it) as `other_version_source`: the item's versions come from another source, and
 * ordering this one against them would drop every later change, silently.
 */
export type Verdict = 'queue' | 'older_or_queued' | 'in_sink' | { refused: 'other_version_source'; itemVersionSource: VersionSource };
const VERDICTS = ['older_or_queued', 'queue', 'in_sink'] as const;
/** `vs` in the item hash: one letter, since every item carries it. */
const SOURCE_CODES: Record<VersionSource, string> = { version: 'v', updated_at: 'u', kafka_timestamp: 'k' };
const SOURCES_BY_CODE = new Map(Object.entries(SOURCE_CODES).map(([source, code]) => [code, source as VersionSource]));

// KEYS: state hashes. ARGV[1]: embed job key prefix, ARGV[2]: the embed queue's failed set; then
// per key the version, 1 for a delete, the id of the job that will carry it, and its version
// source (v, u or k; empty: the item's own). Returns per key 1 to queue (after any change seen, or
// the same change again while the job that carried it is gone or failed), 0 for an older change or
// one still queued, 2 for a change the sink already holds (or a newer one), or the item's recorded
// version source when the change's differs (checked first: such a change is never merely "older").
// `t` is Redis's clock, so that every host compares the same time.
const OBSERVE = `
local function after(v, d, v2, d2)
  return v2 == nil or v > v2 or (v == v2 and d and not d2)
end
local clock = redis.call('TIME')
local now = tostring(clock[1] * 1000 + math.floor(clock[2] / 1000))
local result = {}
for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 4
  local version, del, job, source = tonumber(ARGV[base + 1]), ARGV[base + 2] == '1', ARGV[base + 3], ARGV[base + 4]
  local s = redis.call('HMGET', key, 'seen', 'sd', 'qj', 'wv', 'del', 'vs')
  local seen, seenDel, queued, written, recorded = tonumber(s[1]), s[2] == '1', s[3], tonumber(s[4]), s[6]
  local verdict = 0
  if source ~= '' and recorded and recorded ~= source then
    verdict = recorded
  elseif after(version, del, seen, seenDel) then
    verdict = 1
  elseif version == seen and del == seenDel then
    local live = queued and redis.call('EXISTS', ARGV[1] .. queued) == 1 and not redis.call('ZSCORE', ARGV[2], queued)
    if not live then verdict = 1 end
  end
  if verdict == 1 and written ~= nil and not after(version, del, written, s[5] == '1') then verdict = 2 end
  if verdict == 1 and source == '' then
    redis.call('HSET', key, 'seen', ARGV[base + 1], 'sd', ARGV[base + 2], 'qj', job, 't', now)
  elseif verdict == 1 then
    redis.call('HSET', key, 'seen', ARGV[base + 1], 'sd', ARGV[base + 2], 'qj', job, 't', now, 'vs', source)
  end
  result[i] = verdict
end
return result`;

// The write leases live in one hash per prefix (`<prefix>:write-leases`, field: the item's state
// key, value: `<writer>|<expiry ms>`, on Redis's clock), not in each item's hash: a batch's leases
// are taken, renewed and given back with one HMGET and one HSET or HDEL for the whole batch, where a
// field in every item's hash cost an HSET per item at the claim and a read per item at the record.
// A writer that still holds an item's lease when it records, unmarked, knows that no one recorded a
// write of it since its claim, so it records without reading the item's hash again: any other
// writer that records a write of the item meanwhile (a late one, whose lease lapsed) marks the
// lease. Lua's unpack is bounded, so the batch commands go in chunks.
const LEASE_HELPERS = `
local CHUNK = 1000
local function hmget_all(key, fields)
  local out = {}
  for i = 1, #fields, CHUNK do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
local function hset_all(key, flat)
  for i = 1, #flat, CHUNK do redis.call('HSET', key, unpack(flat, i, math.min(i + CHUNK - 1, #flat))) end
end
local function hdel_all(key, fields)
  for i = 1, #fields, CHUNK do redis.call('HDEL', key, unpack(fields, i, math.min(i + CHUNK - 1, #fields))) end
end
-- A lease's holder, expiry, and whether another writer recorded a write of the item since the
-- holder's claim (a third part, \`|c\`: the holder's claim no longer tells what the state holds, so
-- it compares when it records). An empty or absent lease has no holder.
local function lease_of(value)
  if not value or value == '' then return nil, 0, false end
  local bar = string.find(value, '|', 1, true)
  local rest = string.sub(value, bar + 1)
  local mark = string.find(rest, '|', 1, true)
  if mark then return string.sub(value, 1, bar - 1), tonumber(string.sub(rest, 1, mark - 1)), true end
  return string.sub(value, 1, bar - 1), tonumber(rest), false
end
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local items = {}
for i = 2, #KEYS do items[#items + 1] = KEYS[i] end
`;

// KEYS[1]: the write-lease hash, then the items' state hashes. ARGV[1]: tombstone retention in
// seconds, ARGV[2]: the writer's id, ARGV[3]: the lease in ms; then 6 per item: what happened (w:
// written, r: not written, its lease released, u: unknown: the sink may still apply it, so the
// lease passes to no one, this writer included, until it expires), version, deleted (0|1), content
// hash, model, and whether the sink held a delete when the writer claimed the item (0|1; empty:
// unknown). A written change is kept when it is the latest (by version, then delete after upsert),
// so a writer that finishes late cannot move the state backwards: a writer still holding the lease,
// unmarked, records at once (no one recorded since its claim, which found the change newer); any
// other compares with the item's hash first and, when it records, marks the lease of the writer
// the lease names, which then compares too. A delete leaves a tombstone that expires, a later
// upsert keeps the item for good again.
const RECORD_WRITTEN = `${LEASE_HELPERS}
local retention, writer, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local snapshot = hmget_all(KEYS[1], items)
-- Each item's lease as this call leaves it ('' once given back), and the ones it changed.
local leases, changed = {}, {}
for i, key in ipairs(items) do
  if leases[key] == nil then leases[key] = snapshot[i] or '' end
end
for i, key in ipairs(items) do
  local base = 3 + (i - 1) * 6
  local what, del = ARGV[base + 1], ARGV[base + 3]
  local holder, expiry, marked = lease_of(leases[key])
  local held = holder == writer
  if what == 'w' then
    local was = ARGV[base + 6]
    -- An unmarked holder's claim still tells what the state holds: no read, no comparison.
    local recorded, heldDelete = held and was ~= '' and not marked, was == '1'
    if not recorded then
      local state = redis.call('HMGET', key, 'wv', 'del')
      local version, current = tonumber(ARGV[base + 2]), tonumber(state[1])
      recorded = current == nil or version > current or (version == current and (del == '1' or state[2] ~= '1'))
      heldDelete = state[2] == '1'
      -- The lease names another writer (live or lapsed): its claim no longer tells what the state
      -- holds, so it must compare when it records.
      if recorded and not held and holder ~= nil and holder ~= '~' and not marked then
        leases[key] = holder .. '|' .. tostring(expiry) .. '|c'
        changed[key] = true
      end
    end
    if recorded then
      redis.call('HSET', key, 'wv', ARGV[base + 2], 'del', del, 'h', ARGV[base + 4], 'm', ARGV[base + 5])
      if del == '1' then redis.call('EXPIRE', key, retention)
      elseif heldDelete then redis.call('PERSIST', key) end
    end
  end
  if held then
    leases[key] = what == 'u' and '~|' .. tostring(now + lease) or ''
    changed[key] = true
  end
end
local freed, handed = {}, {}
for key in pairs(changed) do
  if leases[key] == '' then freed[#freed + 1] = key
  else handed[#handed + 1] = key; handed[#handed + 1] = leases[key] end
end
hdel_all(KEYS[1], freed)
hset_all(KEYS[1], handed)
return #items`;

// KEYS[1]: the write-lease hash, then the items' state hashes. ARGV[1]: the writer's id, ARGV[2]:
// the lease in ms. Takes (or renews) each item's write lease unless another writer holds an
// unexpired one, and returns per item the lease taken (1 or 0), what the sink holds (wv, del) and
// the newest change accepted (seen, sd), '' for none. A lease still in the item's own hash (`wl`,
// where versions before the lease hash kept it) is honoured until it expires.
const CLAIM_FOR_WRITE = `${LEASE_HELPERS}
local writer, lease = ARGV[1], tonumber(ARGV[2])
local function free(value)
  local holder, expiry = lease_of(value)
  return holder == nil or holder == writer or expiry <= now
end
local leases = hmget_all(KEYS[1], items)
local taken = {}
local value = writer .. '|' .. tostring(now + lease)
local result = {}
for i, key in ipairs(items) do
  local s = redis.call('HMGET', key, 'wv', 'del', 'seen', 'sd', 'wl')
  local claimed = free(leases[i]) and free(s[5])
  if claimed then taken[#taken + 1] = key; taken[#taken + 1] = value end
  result[#result + 1] = claimed and 1 or 0
  result[#result + 1] = s[1] or ''
  result[#result + 1] = s[2] or ''
  result[#result + 1] = s[3] or ''
  result[#result + 1] = s[4] or ''
end
hset_all(KEYS[1], taken)
return result`;

// KEYS[1]: the write-lease hash, then the items' state hashes. ARGV[1]: the writer's id, ARGV[2]:
// the lease in ms. Extends the leases this writer still holds; returns how many it no longer holds
// (expired and taken, or released).
const RENEW_LEASES = `${LEASE_HELPERS}
local writer, lease = ARGV[1], tonumber(ARGV[2])
local leases = hmget_all(KEYS[1], items)
local renewed, lost = {}, 0
for i, key in ipairs(items) do
  local holder, _, marked = lease_of(leases[i])
  if holder == writer then
    renewed[#renewed + 1] = key; renewed[#renewed + 1] = writer .. '|' .. tostring(now + lease) .. (marked and '|c' or '')
  else
    lost = lost + 1
  end
end
hset_all(KEYS[1], renewed)
return lost`;

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

  /** The write leases of every item (see LEASE_HELPERS). */
  get leasesKey(): string {
    return `${this.prefix}:write-leases`;
  }

  get keyPattern(): string {
    return `${this.prefix}:item:*`;
  }

  /**
   * Ingest and backfills: records each change offered and the job that will carry it, and says
   * what to do with it (see OBSERVE). One HMGET and at most one HSET per change.
   */
  async observe(changes: ObservedChange[], queued: QueuedJobKeys): Promise<Verdict[]> {
    if (changes.length === 0) return [];
    const result = (await this.redis.eval(
      OBSERVE,
      changes.length,
      ...changes.map((c) => this.key(c.itemId)),
      queued.jobPrefix,
      queued.failedKey,
      ...changes.flatMap((c) => [String(c.version), c.op === 'delete' ? '1' : '0', c.jobId, c.versionSource === undefined ? '' : SOURCE_CODES[c.versionSource]]),
    )) as (number | string)[];
    return result.map((r) => (typeof r === 'string' ? { refused: 'other_version_source', itemVersionSource: SOURCES_BY_CODE.get(r) as VersionSource } : (VERDICTS[r] as Verdict)));
  }

  /**
   * Writer, before writing: takes each item's write lease (one writer per item at a time, so a
   * delete and an older upsert of one item can never cross in the sink) and reads what the sink
   * holds. Items another writer holds come back unclaimed; the rest come back with their state.
   */
  async claimForWrite(itemIds: string[], writerId: string, leaseMs: number): Promise<{ claimed: boolean; written: Ordered | undefined; seen: Ordered | undefined }[]> {
    if (itemIds.length === 0) return [];
    const flat = (await this.redis.eval(CLAIM_FOR_WRITE, itemIds.length + 1, this.leasesKey, ...itemIds.map((id) => this.key(id)), writerId, String(leaseMs))) as (number | string)[];
    const ordered = (version: number | string | undefined, deleted: number | string | undefined): Ordered | undefined =>
      version === '' || version === undefined ? undefined : { version: Number(version), op: deleted === '1' ? 'delete' : 'upsert' };
    return itemIds.map((_, i) => {
      const [claimed, wv, del, seen, sd] = flat.slice(i * 5, i * 5 + 5);
      return { claimed: claimed === 1, written: ordered(wv, del), seen: ordered(seen, sd) };
    });
  }

  /** Extends this writer's leases before another sink attempt; how many it lost meanwhile. */
  async renewLeases(itemIds: string[], writerId: string, leaseMs: number): Promise<number> {
    if (itemIds.length === 0) return 0;
    return (await this.redis.eval(RENEW_LEASES, itemIds.length + 1, this.leasesKey, ...itemIds.map((id) => this.key(id)), writerId, String(leaseMs))) as number;
  }

  /**
   * Writer, after the sink acknowledged: what it now holds (`writes`); the leases of the items
   * claimed and not written go back (`released`), or, where the sink may still apply their write
   * (`uncertain`), to no one until they expire; in one call. A write whose claim found what the
   * sink held (`sinkHeldDelete`: whether that was a delete) is recorded without reading the
   * item's hash again while this writer still holds its lease.
   */
  async recordWritten(
    writes: { itemId: string; version: number; deleted: boolean; contentHash?: string; model?: string; sinkHeldDelete?: boolean }[],
    lease: { writerId: string; leaseMs?: number; released: string[]; uncertain?: string[] } = { writerId: '', released: [] },
  ): Promise<void> {
    const uncertain = lease.uncertain ?? [];
    if (writes.length === 0 && lease.released.length === 0 && uncertain.length === 0) return;
    await this.redis.eval(
      RECORD_WRITTEN,
      writes.length + lease.released.length + uncertain.length + 1,
      this.leasesKey,
      ...[...writes.map((w) => w.itemId), ...lease.released, ...uncertain].map((id) => this.key(id)),
      String(this.tombstoneRetentionSeconds),
      lease.writerId,
      String(lease.leaseMs ?? 0),
      ...writes.flatMap((w) => ['w', String(w.version), w.deleted ? '1' : '0', w.contentHash ?? '', w.model ?? '', w.sinkHeldDelete === undefined ? '' : w.sinkHeldDelete ? '1' : '0']),
      ...lease.released.flatMap(() => ['r', '', '0', '', '', '']),
      ...uncertain.flatMap(() => ['u', '', '0', '', '', '']),
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
    for (const id of itemIds) pipeline.hmget(this.key(id), 'seen', 'sd', 'wv', 'del', 'h', 'm');
    const results = (await pipeline.exec()) ?? [];
    return results.map(([error, value]) => {
      if (error) throw error;
      const [seen, sd, wv, del, h, m] = value as (string | null)[];
      return {
        seen: seen === null || seen === undefined ? undefined : Number(seen),
        seenDeleted: sd === '1',
        writtenVersion: wv === null || wv === undefined ? undefined : Number(wv),
        deleted: del === '1',
        contentHash: h || undefined,
        model: m || undefined,
      };
    });
  }

  /** Prune: per item, when its newest change was accepted (Redis's clock), and that change (pipelined). */
  async acceptedChanges(itemIds: string[]): Promise<{ acceptedAt: number | undefined; seen: number | undefined; seenDeleted: boolean }[]> {
    if (itemIds.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of itemIds) pipeline.hmget(this.key(id), 't', 'seen', 'sd');
    return ((await pipeline.exec()) ?? []).map(([error, value]) => {
      if (error) throw error;
      const [t, seen, sd] = value as (string | null)[];
      return { acceptedAt: t ? Number(t) : undefined, seen: seen ? Number(seen) : undefined, seenDeleted: sd === '1' };
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
