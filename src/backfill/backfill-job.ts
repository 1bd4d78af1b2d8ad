import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { BackfillError } from '../core/errors.js';

/** The queue backfill jobs wait in; any process running the `backfill` role takes them. */
export const BACKFILL_QUEUE = 'backfill';

/**
 * BullMQ priority of the embed and write jobs a backfill enqueues. Live jobs carry none, and BullMQ
 * hands out every job without a priority before any prioritized one: a waiting live change never
 * queues behind a backfill.
 */
export const BACKFILL_PRIORITY = 1000;

/**
 * The backfills whose rows a new job holds (its work in flight, counted there before it is
 * added), and its priority: below live jobs only when every item is a backfill row, so that a
 * live change never waits behind a backfill.
 */
export function backfillShare(items: readonly { backfill?: string }[]): { backfills: string[]; priority: { priority?: number } } {
  const backfills = [...new Set(items.flatMap((item) => (item.backfill === undefined ? [] : [item.backfill])))];
  const allBackfill = items.length > 0 && items.every((item) => item.backfill !== undefined);
  return { backfills, priority: allBackfill ? { priority: BACKFILL_PRIORITY } : {} };
}

const identifier = z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$/, 'expected a column or table name (letters, digits, "_"; a table may be schema.table)');

const FileSource = z.strictObject({
  kind: z.literal('file'),
  /** Absolute: the worker that reads it may run in another directory. */
  path: z.string().refine(isAbsolute, 'expected an absolute path (the worker reading it may run in another directory)'),
});

const KafkaSource = z.strictObject({
  kind: z.literal('kafka'),
  topic: z.string().regex(/^[A-Za-z0-9._-]{1,249}$/, 'expected a Kafka topic name'),
});

const PostgresSource = z
  .strictObject({
    kind: z.literal('postgres'),
    /** A table (or view) to read whole... */
    table: identifier.optional(),
    /** ...or a query whose rows are change records (alias columns to the event fields). */
    query: z.string().min(1).optional(),
    /** The unique, ordered column paged on (keyset pagination: `WHERE key > last ORDER BY key`). */
    keyColumn: z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]*$/, 'expected a column name').default('id'),
  })
  .refine((s) => (s.table === undefined) !== (s.query === undefined), { message: 'give exactly one of "table" and "query"', path: ['table'] });

export const BackfillSourceSchema = z.discriminatedUnion('kind', [FileSource, KafkaSource, PostgresSource]);

/**
 * A backfill job's data: what another service (or a queue dashboard) puts on the `backfill` queue
 * to start one without the CLI. Validated when the job starts; an invalid job fails at once with
 * the field named.
 */
export const BackfillJobSchema = z.strictObject({
  source: BackfillSourceSchema,
  /** After a complete pass, delete the sink points of items the source no longer has. */
  prune: z.boolean().default(false),
  /** Rows per page; default BACKFILL_PAGE_SIZE. */
  pageSize: z.int().min(1).max(100_000).optional(),
  /** Buy the embeddings through OpenAI's Batch API (half the price, within 24 h). */
  batchApi: z.boolean().default(false),
});

export type BackfillSourceSpec = z.infer<typeof BackfillSourceSchema>;
export type BackfillJobData = z.input<typeof BackfillJobSchema>;
export type BackfillJob = z.output<typeof BackfillJobSchema>;

function invalid(message: string): BackfillError {
  return new BackfillError('BACKFILL_INVALID', message, { canRetry: false });
}

/** Validates job data; the error names every bad field and what it expects. */
export function parseBackfillJob(data: unknown): BackfillJob {
  const parsed = BackfillJobSchema.safeParse(data);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(job data)'}: ${i.message}`);
  throw invalid(`invalid backfill job data: ${problems.join('; ')} (see "Backfills" in the README: Job data)`);
}

/**
 * The CLI's SOURCE argument: `file:PATH`, `kafka:TOPIC`, `postgres:TABLE`, or `postgres:` with a
 * query. A relative file path is resolved against `cwd`.
 */
export function parseSourceArgument(argument: string, options: { cwd: string; query?: string; keyColumn?: string }): BackfillSourceSpec {
  const colon = argument.indexOf(':');
  const kind = colon < 0 ? argument : argument.slice(0, colon);
  const rest = colon < 0 ? '' : argument.slice(colon + 1);
  let spec: unknown;
  if (kind === 'file') spec = { kind, path: rest === '' ? rest : isAbsolute(rest) ? rest : `${options.cwd.replace(/\/+$/, '')}/${rest}` };
  else if (kind === 'kafka') spec = { kind, topic: rest };
  else if (kind === 'postgres') spec = { kind, table: rest === '' ? undefined : rest, query: options.query, keyColumn: options.keyColumn };
  else throw invalid(`unknown source "${argument}": use file:PATH, kafka:TOPIC, postgres:TABLE or postgres: --query SQL`);
  const parsed = BackfillSourceSchema.safeParse(spec);
  if (!parsed.success) throw invalid(`source "${argument}": ${parsed.error.issues.map((i) => `${i.path.join('.') || kind}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** Where a backfill stands: its job's progress (BullMQ keeps it in the job), and its checkpoint. */
export interface BackfillProgress {
  phase: 'reading' | 'finishing' | 'pruning' | 'done';
  /** The source position after the last page whose jobs are in Redis: a restart reads on from it. */
  cursor: string | undefined;
  /** Rows read from the source. */
  read: number;
  /** Changes queued to be embedded and written. */
  enqueued: number;
  /** Rows with nothing to do: the sink holds that version or a newer one, or it is queued already. */
  unchanged: number;
  /** Rows the source gave that are not valid change records: in the dead-letter store. */
  failed: number;
  /** Points deleted by the prune: items the source no longer has. */
  pruned: number;
  /** The source's size in rows, estimated from how far the cursor is (for the ETA). */
  total: number | undefined;
  /** ms since epoch: when the pass started (kept across restarts), and the last update. */
  startedAt: number;
  updatedAt: number;
  /**
   * Batch API only: the batch submitted for the next `rows` rows from `cursor`, while it runs. A
   * restart re-reads those rows and waits for this batch instead of submitting another (its
   * results are keyed by content hash, so rows read in another order still find their vectors).
   */
  batch?: { id: string; rows: number } | undefined;
  /** Batch API only: inputs the batches embedded, and those that failed and went the normal way. */
  batchInputs?: number;
  batchFailed?: number;
}

export function initialProgress(now = Date.now()): BackfillProgress {
  return { phase: 'reading', cursor: undefined, read: 0, enqueued: 0, unchanged: 0, failed: 0, pruned: 0, total: undefined, startedAt: now, updatedAt: now };
}

export function isBackfillProgress(value: unknown): value is BackfillProgress {
  return typeof value === 'object' && value !== null && typeof (value as BackfillProgress).phase === 'string' && typeof (value as BackfillProgress).startedAt === 'number';
}
