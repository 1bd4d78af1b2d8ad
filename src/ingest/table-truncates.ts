import type { Redis } from 'ioredis';
import type { VersionSource } from './change-event.js';
import type { TableName } from './debezium.js';

/** A table's newest truncate: every row it had before `version` is gone. */
export interface TruncateMark {
  version: number;
  versionSource: VersionSource;
}

const SOURCE_CODES: Record<VersionSource, string> = { version: 'v', updated_at: 'u', kafka_timestamp: 'k' };
const SOURCES_BY_CODE = new Map(Object.entries(SOURCE_CODES).map(([source, code]) => [code, source as VersionSource]));

// KEYS[1]: the truncates hash. ARGV: table, version, version source code, repeated. Keeps each
// table's newest truncate: a redelivered or late older one never moves it back.
const RECORD_TRUNCATES = `
for i = 1, #ARGV, 3 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  local version = held and tonumber(string.match(held, '^[^|]+')) or nil
  if version == nil or tonumber(ARGV[i + 1]) > version then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '|' .. ARGV[i + 2])
  end
end
return 1`;

/** A Debezium TRUNCATE read in a batch or a backfill's page: every item of `table` is deleted at `version`. */
export interface TableTruncate {
  table: TableName;
  version: number;
  versionSource: VersionSource;
  /** Where it was read (`topic/partition@offset`, `backfill:<id>/<position>`), as the deletes' source. */
  source: string;
}

/**
 * What a Debezium TRUNCATE needs in Redis: which items each table has had, and each table's newest
 * truncate. Nothing else knows an item's table (the item state and the sink hold none), and a
 * truncate event carries no rows.
 *   `<prefix>:cdc:items:<table>`  a set of the item ids ever seen from the table
 *   `<prefix>:cdc:truncated`      a hash: table -> `<version>|<version source>` of its newest truncate
 * A truncate deletes every member of its table's set at its own version (the item state then drops
 * the deletes of items changed after it); the mark turns a change older than the truncate that is
 * read after it (from another partition: a truncate has no key, so it lands on any partition) into
 * that delete. Ingest adds members and reads marks, in that order, before it offers a batch's
 * changes, and a truncate sets its mark before it reads the members: whichever runs second sees
 * the other's write, so no row of the table outlives its truncate.
 * Members are never removed (a concurrent change could be re-adding one): a set holds every id the
 * table ever had, and a truncate deletes each again, which costs a sink delete for ids long gone.
 */
export class TableTruncates {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private membersKey(table: TableName): string {
    return `${this.prefix}:cdc:items:${table}`;
  }

  private get marksKey(): string {
    return `${this.prefix}:cdc:truncated`;
  }

  /**
   * Adds the items of a batch to their tables, records the batch's truncates, and returns the
   * newest truncate of every table the batch touches: one round trip, run in this order.
   */
  async record(members: Map<TableName, string[]>, truncates: { table: TableName; version: number; versionSource: VersionSource }[]): Promise<Map<TableName, TruncateMark>> {
    const tables = [...new Set([...members.keys(), ...truncates.map((t) => t.table)])];
    if (tables.length === 0) return new Map();
    const pipeline = this.redis.pipeline();
    for (const [table, ids] of members) if (ids.length > 0) pipeline.sadd(this.membersKey(table), ...ids);
    if (truncates.length > 0) pipeline.eval(RECORD_TRUNCATES, 1, this.marksKey, ...truncates.flatMap((t) => [t.table, String(t.version), SOURCE_CODES[t.versionSource]]));
    pipeline.hmget(this.marksKey, ...tables);
    const results = (await pipeline.exec()) ?? [];
    for (const [error] of results) if (error) throw error;
    const marks = (results.at(-1)?.[1] ?? []) as (string | null)[];
    const byTable = new Map<TableName, TruncateMark>();
    tables.forEach((table, i) => {
      const mark = marks[i];
      if (mark === null || mark === undefined) return;
      const [version, code] = mark.split('|');
      byTable.set(table, { version: Number(version), versionSource: SOURCES_BY_CODE.get(code ?? '') ?? 'version' });
    });
    return byTable;
  }

  /** One page of the item ids the table has had; cursor '0' starts, and a returned '0' ends. */
  async members(table: TableName, cursor: string, count: number): Promise<{ cursor: string; ids: string[] }> {
    const [next, ids] = await this.redis.sscan(this.membersKey(table), cursor, 'COUNT', count);
    return { cursor: next, ids };
  }
}
