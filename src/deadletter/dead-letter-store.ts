import type { Redis } from 'ioredis';

export type DeadLetterStage = 'ingest' | 'backfill' | 'embed' | 'write';

export interface DeadLetter {
  stage: DeadLetterStage;
  /** Error code (EVENT_INVALID, EMBEDDINGS_REJECTED, ...) and the human-readable reason. */
  code: string;
  reason: string;
  itemId: string | undefined;
  /** The original Kafka message value (or job data), byte for byte, base64. */
  original: Buffer;
  key: Buffer | null;
  source: string | undefined;
}

export interface StoredDeadLetter extends Omit<DeadLetter, 'original' | 'key'> {
  id: string;
  at: string;
  /** The original, or its first MAX_ORIGINAL_BYTES when `truncated`. */
  original: Buffer;
  key: Buffer | null;
  /** The original was larger than MAX_ORIGINAL_BYTES and only its start is kept: it cannot be replayed. */
  truncated: boolean;
  /** The original's full size in bytes, kept or not. */
  originalBytes: number;
}

/** Which dead letters a listing, a retry or a purge is about; every given field must match. */
export interface DeadLetterFilter {
  stage?: DeadLetterStage;
  code?: string;
}

/**
 * The most bytes of an original an entry keeps. The stream holds up to a million entries, so what
 * one entry may cost matters more than any one entry: a flood of oversized events (up to the
 * broker's message limit, beyond EVENT_MAX_BYTES) must not cost their full size each in Redis
 * memory. 256 KiB keeps whole everything the pipeline itself makes within its defaults (an embed
 * or write letter is a change or a write: text, metadata and a base64 vector of at most 3072
 * dimensions, 16 KiB), so those stay replayable; what is cut is an input already too large to index,
 * and its start still shows a person what it was.
 */
export const MAX_ORIGINAL_BYTES = 256 * 1024;

/** Entries read per XRANGE when a whole stream is walked (a retry or a purge by filter). */
const PAGE = 500;

/** One letter's field in the counts hash: `stage NUL code`. */
const countField = (stage: string, code: string) => `${stage}\u0000${code}`;

// KEYS[1]: the stream, KEYS[2]: the counts hash. ARGV: entry ids. Deletes the entries and takes
// each one off its stage and code's count, in one step: the counts never drift by a removal.
const REMOVE = `
local removed = 0
for _, id in ipairs(ARGV) do
  local rows = redis.call('XRANGE', KEYS[1], id, id)
  if rows[1] then
    local f = rows[1][2]
    local stage, code = '', ''
    for i = 1, #f, 2 do
      if f[i] == 'stage' then stage = f[i + 1] elseif f[i] == 'code' then code = f[i + 1] end
    end
    removed = removed + redis.call('XDEL', KEYS[1], id)
    local field = stage .. '\\0' .. code
    if redis.call('HINCRBY', KEYS[2], field, -1) <= 0 then redis.call('HDEL', KEYS[2], field) end
  end
end
return removed`;

/** How many dead letters one stage holds with one code. */
export interface DeadLetterCount {
  stage: DeadLetterStage;
  code: string;
  count: number;
}

/**
 * Dead letters live in one Redis stream per deployment, capped (approximately) at maxEntries so
 * a flood of bad input cannot exhaust Redis. Entries keep the original bytes for replay, up to
 * MAX_ORIGINAL_BYTES each.
 */
export class DeadLetterStore {
  readonly key: string;
  /**
   * Letters per stage and code, kept beside the stream (one HINCRBY per letter), because the
   * stream cannot be counted by field without reading every entry. Letters trimmed at the cap,
   * and letters from before the counts existed, are not in it: `indexer status` says so when
   * the counts do not add up to the stream's length.
   */
  readonly countsKey: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly maxEntries = 1_000_000,
  ) {
    this.key = `${prefix}:dlq`;
    this.countsKey = `${prefix}:dlq:counts`;
  }

  async add(entries: DeadLetter[]): Promise<void> {
    if (entries.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const entry of entries) {
      const cut = entry.original.length > MAX_ORIGINAL_BYTES;
      pipeline.xadd(
        this.key,
        'MAXLEN',
        '~',
        String(this.maxEntries),
        '*',
        'stage', entry.stage,
        'code', entry.code,
        'reason', entry.reason,
        'item_id', entry.itemId ?? '',
        'source', entry.source ?? '',
        'key', entry.key === null ? '' : entry.key.toString('base64'),
        'original', (cut ? entry.original.subarray(0, MAX_ORIGINAL_BYTES) : entry.original).toString('base64'),
        'at', new Date().toISOString(),
        ...(cut ? ['truncated', '1', 'original_bytes', String(entry.original.length)] : []),
      );
      pipeline.hincrby(this.countsKey, countField(entry.stage, entry.code), 1);
    }
    const results = await pipeline.exec();
    const failed = results?.find(([error]) => error);
    if (failed?.[0]) throw failed[0];
  }

  async count(): Promise<number> {
    return this.redis.xlen(this.key);
  }

  /** Letters by stage and code, most first (see countsKey). */
  async countsByStageAndCode(): Promise<DeadLetterCount[]> {
    const flat = await this.redis.hgetall(this.countsKey);
    return Object.entries(flat)
      .map(([field, n]) => {
        const [stage = '', code = ''] = field.split('\u0000');
        return { stage: stage as DeadLetterStage, code, count: Number(n) };
      })
      .filter((c) => c.count > 0)
      .sort((a, b) => b.count - a.count || a.stage.localeCompare(b.stage) || a.code.localeCompare(b.code));
  }

  /** The oldest `limit` entries that match the filter. */
  async list(limit = 100, filter: DeadLetterFilter = {}): Promise<StoredDeadLetter[]> {
    const found: StoredDeadLetter[] = [];
    const filtered = filter.stage !== undefined || filter.code !== undefined;
    for await (const page of this.pages(filter, filtered ? PAGE : Math.min(limit, PAGE))) {
      found.push(...page.slice(0, limit - found.length));
      if (found.length >= limit) break;
    }
    return found;
  }

  async get(id: string): Promise<StoredDeadLetter | undefined> {
    const rows = await this.redis.xrange(this.key, id, id);
    return rows[0] === undefined ? undefined : parseEntry(rows[0]);
  }

  /**
   * Every entry matching the filter, oldest first, a page at a time, up to the newest entry when
   * the walk starts: letters added meanwhile (a retried entry that failed again) are not walked
   * into. Entries the caller deletes between pages do not disturb it: each page starts after the
   * last id read.
   */
  async *pages(filter: DeadLetterFilter = {}, pageSize = PAGE): AsyncIterable<StoredDeadLetter[]> {
    const newest = (await this.redis.xrevrange(this.key, '+', '-', 'COUNT', 1))[0]?.[0];
    if (newest === undefined) return;
    let start = '-';
    for (;;) {
      const rows = await this.redis.xrange(this.key, start, newest, 'COUNT', pageSize);
      if (rows.length === 0) return;
      const page = rows.map(parseEntry).filter((entry) => matches(entry, filter));
      if (page.length > 0) yield page;
      if (rows.length < pageSize) return;
      start = `(${(rows[rows.length - 1] as [string, string[]])[0]}`;
    }
  }

  /** Deletes entries by id; returns how many existed. */
  async remove(ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return (await this.redis.eval(REMOVE, 2, this.key, this.countsKey, ...ids)) as number;
  }
}

function matches(entry: StoredDeadLetter, filter: DeadLetterFilter): boolean {
  return (filter.stage === undefined || entry.stage === filter.stage) && (filter.code === undefined || entry.code === filter.code);
}

function parseEntry([id, flat]: [string, string[]]): StoredDeadLetter {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
  const original = Buffer.from(f.original ?? '', 'base64');
  return {
    id,
    stage: f.stage as DeadLetterStage,
    code: f.code ?? '',
    reason: f.reason ?? '',
    itemId: f.item_id || undefined,
    source: f.source || undefined,
    key: f.key ? Buffer.from(f.key, 'base64') : null,
    original,
    at: f.at ?? '',
    truncated: f.truncated === '1',
    originalBytes: f.original_bytes ? Number(f.original_bytes) : original.length,
  };
}
