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

  async *pages(cursor: string | undefined, pageSize: number): AsyncIterable<SourcePage> {
    await this.connect();
    const key = quoteName(this.options.keyColumn);
    const base = this.options.table !== undefined ? `SELECT * FROM ${quoteName(this.options.table)}` : (this.options.query as string);
    const total = await this.count(base);
    let last: unknown = cursor === undefined ? undefined : JSON.parse(cursor);
    let read = 0;
    for (;;) {
      const sql =
        last === undefined
          ? `SELECT * FROM (${base}) AS backfill_rows ORDER BY ${key} LIMIT ${pageSize}`
          : `SELECT * FROM (${base}) AS backfill_rows WHERE ${key} > $1 ORDER BY ${key} LIMIT ${pageSize}`;
      const result = await this.run(sql, last === undefined ? [] : [last]);
      if (result.rows.length === 0) return;
      const rows = result.rows.map(plainRow);
      const lastRow = result.rows.at(-1) as Record<string, unknown>;
      if (!(this.options.keyColumn in lastRow)) {
        throw new BackfillError('BACKFILL_INVALID', `the rows have no column "${this.options.keyColumn}" to page on: set the key column (--key-column) to a unique column of the table or query`, { canRetry: false });
      }
      last = keyValue(lastRow[this.options.keyColumn]);
      read += rows.length;
      yield {
        records: rows.map((row) => ({ kind: 'row' as const, position: `${this.options.table ?? 'query'}#${String(row[this.options.keyColumn])}`, row })),
        cursor: JSON.stringify(last),
        fraction: total === undefined || total === 0 ? undefined : Math.min(1, read / total),
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

  /** The rows in the source, for the ETA; a count is one scan, paid once per pass (not per resume). */
  private async count(base: string): Promise<number | undefined> {
    const result = await this.run(`SELECT count(*)::bigint AS n FROM (${base}) AS backfill_rows`, []);
    return Number((result.rows[0] as { n: string }).n);
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

function keyValue(value: unknown): unknown {
  return value instanceof Date ? value.toISOString() : value;
}

/** Dates as ISO strings (what updated_at must be); everything else as pg returns it. */
function plainRow(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [column, value] of Object.entries(row)) out[column] = value instanceof Date ? value.toISOString() : value;
  return out;
}
