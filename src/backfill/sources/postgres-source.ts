import pg from 'pg';
import { BackfillError } from '../../core/errors.js';
import type { BackfillSource, SourcePage } from './source.js';

export interface PostgresSourceOptions {
  url: string;
  /** `table` or `schema.table`, read whole; or `query`, whose rows are the records. */
  table: string | undefined;
  query: string | undefined;
  /** A unique, ordered column: keyset pagination pages on it. */
  keyColumn: string;
}

/** The key's text form, read beside each row. */
const CURSOR_COLUMN = '__backfill_cursor';

/** "a.b" → "a"."b": names are validated by the job schema, and quoted so case and keywords survive. */
function quoteName(name: string): string {
  return name
    .split('.')
    .map((part) => `"${part.replace(/"/g, '""')}"`)
    .join('.');
}

/**
 * `postgres:TABLE` (or a query): rows read in pages by keyset pagination on a unique column
 * (`WHERE key > $last ORDER BY key LIMIT n`), so every page is one indexed range read however deep
 * the backfill is, and the cursor is the last key. Each row is a change record under the event
 * field mapping (alias query columns to EVENT_ID_FIELD, EVENT_TEXT_FIELD, ...); timestamps become
 * ISO strings. Rows are read at READ COMMITTED, page by page: rows changed during the pass are
 * read as they are then, and their versions decide against live events.
 */
export class PostgresSource implements BackfillSource {
  private readonly client: pg.Client;
  private connected: Promise<void> | undefined;

  constructor(private readonly options: PostgresSourceOptions) {
    this.client = new pg.Client({ connectionString: options.url, application_name: 'embedding-indexer-backfill' });
    // An idle connection dropped by the server emits 'error'; the next query fails and the job retries.
    this.client.on('error', () => undefined);
  }

  async *pages(cursor: string | undefined, pageSize: number, signal: AbortSignal): AsyncIterable<SourcePage> {
    await this.connect();
    // A query waiting (on a lock, a slow scan) is ended with the connection when the backfill is
    // cancelled or its worker stops.
    signal.addEventListener('abort', () => void this.client.end().catch(() => undefined), { once: true });
    const key = quoteName(this.options.keyColumn);
    const base = this.options.table !== undefined ? `SELECT * FROM ${quoteName(this.options.table)}` : (this.options.query as string);
    const total = await this.countRows(base, key);
    // The cursor is the key's text form, compared after a cast back to the key's own type: a
    // timestamp keeps its microseconds, a bigint its every digit.
    let last: string | undefined = cursor === undefined ? undefined : (JSON.parse(cursor) as string);
    let read = 0;
    for (;;) {
      signal.throwIfAborted();
      const sql =
        last === undefined
          ? `SELECT backfill_rows.*, (backfill_rows.${key})::text AS "${CURSOR_COLUMN}" FROM (${base}) AS backfill_rows ORDER BY backfill_rows.${key} LIMIT ${pageSize}`
          : `SELECT backfill_rows.*, (backfill_rows.${key})::text AS "${CURSOR_COLUMN}" FROM (${base}) AS backfill_rows WHERE backfill_rows.${key} > $1 ORDER BY backfill_rows.${key} LIMIT ${pageSize}`;
      const result = await this.run(sql, last === undefined ? [] : [last]);
      if (result.rows.length === 0) return;
      const rows = result.rows.map(plainRow);
      last = (result.rows.at(-1) as Record<string, unknown>)[CURSOR_COLUMN] as string;
      read += rows.length;
      yield {
        records: rows.map(({ row, cursor: at }) => ({ kind: 'row' as const, position: `${this.options.table ?? 'query'}#${at}`, row })),
        cursor: JSON.stringify(last),
        fraction: total === 0 ? undefined : Math.min(1, read / total),
      };
      if (result.rows.length < pageSize) return;
    }
  }

  async close(): Promise<void> {
    if (this.connected) await this.client.end().catch(() => undefined);
  }

  private connect(): Promise<void> {
    this.connected ??= this.client.connect().then(
      () => undefined,
      (error: unknown) => {
        throw new BackfillError('BACKFILL_SOURCE_UNAVAILABLE', `cannot connect to PostgreSQL (POSTGRES_URL): ${(error as Error).message}`, { canRetry: true, cause: error });
      },
    );
    return this.connected;
  }

  /**
   * The rows in the source, for the ETA (one scan, at each start or resume), and a refusal of a
   * key column holding NULLs: keyset pagination can never reach those rows, and a prune would
   * then delete their items.
   */
  private async countRows(base: string, key: string): Promise<number> {
    const result = await this.run(`SELECT count(*)::bigint AS n, count(*) FILTER (WHERE backfill_rows.${key} IS NULL)::bigint AS nulls FROM (${base}) AS backfill_rows`, []);
    const { n, nulls } = result.rows[0] as { n: string; nulls: string };
    if (Number(nulls) > 0) {
      throw new BackfillError('BACKFILL_INVALID', `${nulls} rows have a NULL in the key column "${this.options.keyColumn}": page on a unique NOT NULL column (--key-column)`, { canRetry: false });
    }
    return Number(n);
  }

  private async run(sql: string, params: unknown[]): Promise<pg.QueryResult<Record<string, unknown>>> {
    try {
      return await this.client.query<Record<string, unknown>>(sql, params);
    } catch (error) {
      const code = (error as { code?: string }).code;
      // Class 42: the query or the names are wrong (a fix, not a retry, helps). Anything else
      // (a dropped connection, a restart, a lock timeout) is retried from the checkpoint.
      if (code?.startsWith('42')) {
        throw new BackfillError('BACKFILL_INVALID', `the backfill query failed: ${(error as Error).message} (check the table, --query and --key-column)`, { canRetry: false, cause: error });
      }
      throw new BackfillError('BACKFILL_SOURCE_UNAVAILABLE', `PostgreSQL: ${(error as Error).message}`, { canRetry: true, cause: error });
    }
  }
}

/** Dates as ISO strings (what updated_at must be), everything else as pg returns it; the cursor apart. */
function plainRow(row: Record<string, unknown>): { row: Record<string, unknown>; cursor: string } {
  const out: Record<string, unknown> = {};
  for (const [column, value] of Object.entries(row)) if (column !== CURSOR_COLUMN) out[column] = value instanceof Date ? value.toISOString() : value;
  return { row: out, cursor: row[CURSOR_COLUMN] as string };
}
