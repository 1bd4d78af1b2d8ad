import { Command } from 'commander';
import { Presets, SingleBar } from 'cli-progress';
import { BackfillControl, describeSource, type BackfillStatus } from '../backfill/backfill-control.js';
import { parseSourceArgument } from '../backfill/backfill-job.js';
import type { Config } from '../config/config.js';
import { configOrExit, servingConfigOf, withRedis } from './context.js';

async function withControl<T>(config: Config, run: (control: BackfillControl) => Promise<T>): Promise<T> {
  return withRedis(config, async (redis) => {
    const control = new BackfillControl(redis, config.redis.prefix, { attempts: config.redis.jobAttempts, backoffMs: config.redis.jobBackoffMs });
    try {
      return await run(control);
    } finally {
      await control.close();
    }
  });
}

/** `indexer backfill start|status|cancel`. */
export function backfillCommand(positiveInt: (value: string) => number): Command {
  const backfill = new Command('backfill').description('backfills: re-read a whole catalog (a file, a Kafka topic, a PostgreSQL table) as queue jobs below live priority');

  backfill
    .command('start')
    .description('queue a backfill and print its id; a worker running the backfill role does it')
    .argument('<source>', 'file:PATH (NDJSON change events), kafka:TOPIC (from the start to the current end), postgres:TABLE, or postgres: with --query')
    .option('--prune', 'after a complete pass, delete the points of items the source no longer has')
    .option('--wait', 'follow the backfill with a progress bar; exit 0 when it completes, 1 when it fails')
    .option('--query <sql>', 'postgres: a query whose rows are change records (instead of a table)')
    .option('--key-column <column>', 'postgres: the unique column to page on', 'id')
    .option('--page-size <rows>', 'rows per page (default BACKFILL_PAGE_SIZE)', positiveInt)
    .option('--batch-api', "buy the embeddings through OpenAI's Batch API: half the price, results within 24 h")
    .action(async (source: string, opts: { prune?: boolean; wait?: boolean; query?: string; keyColumn: string; pageSize?: number; batchApi?: boolean }) => {
      // Backfills fill the serving generation (a re-index's new one fills itself).
      const config = await servingConfigOf(configOrExit());
      const spec = parseSourceArgument(source, { cwd: process.cwd(), query: opts.query, keyColumn: opts.keyColumn });
      await withControl(config, async (control) => {
        const id = await control.start({ source: spec, prune: opts.prune ?? false, batchApi: opts.batchApi ?? false, ...(opts.pageSize ? { pageSize: opts.pageSize } : {}) });
        process.stdout.write(`${id}\n`);
        if (!opts.wait) return;
        const final = await followWithBar(control, id);
        process.stderr.write(`${summary(final)}\n`);
        process.exitCode = final.state === 'completed' ? 0 : 1;
      });
    });

  backfill
    .command('status')
    .description('one backfill, or every backfill the queue holds: state, phase, rows read, enqueued, unchanged, failed, rate, ETA')
    .argument('[id]', 'a backfill id (from start)')
    .option('--json', 'print JSON')
    .action(async (id: string | undefined, opts: { json?: boolean }) => {
      const config = await servingConfigOf(configOrExit());
      await withControl(config, async (control) => {
        const statuses = id === undefined ? await control.list() : [await control.status(id)].filter((s): s is BackfillStatus => s !== undefined);
        if (id !== undefined && statuses.length === 0) {
          process.stderr.write(`no backfill ${id}\n`);
          process.exitCode = 1;
          return;
        }
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(id === undefined ? statuses : statuses[0])}\n`);
          return;
        }
        if (statuses.length === 0) process.stdout.write('no backfills\n');
        for (const s of statuses) process.stdout.write(`${summary(s)}\n`);
      });
    });

  backfill
    .command('cancel')
    .description('cancel a backfill: a waiting one is removed, a running one stops at its next page (what it queued already is still written)')
    .argument('<id>', 'a backfill id')
    .action(async (id: string) => {
      const config = await servingConfigOf(configOrExit());
      await withControl(config, async (control) => {
        const outcome = await control.cancel(id);
        const said = { removed: `backfill ${id} removed before it started`, cancelling: `backfill ${id} stops at its next page`, finished: `backfill ${id} had already finished`, unknown: `no backfill ${id}` }[outcome];
        process.stdout.write(`${said}\n`);
        if (outcome === 'unknown') process.exitCode = 1;
      });
    });

  return backfill;
}

/** One line: id, state, source, phase and counts, rate and ETA. */
export function summary(s: BackfillStatus): string {
  const p = s.progress;
  const counts = p ? `${p.phase}, read ${p.read}${p.total ? `/${p.total}` : ''}, enqueued ${p.enqueued}, unchanged ${p.unchanged}, failed ${p.failed}${s.prune ? `, pruned ${p.pruned}` : ''}` : 'not started';
  const rate = s.rowsPerSecond === undefined ? '' : `, ${Math.round(s.rowsPerSecond)} rows/s`;
  const eta = s.etaSeconds === undefined || s.state !== 'active' ? '' : `, ETA ${Math.round(s.etaSeconds)} s`;
  const reason = s.failedReason ? `: ${s.failedReason}` : '';
  return `${s.id} ${s.state} ${describeSource(s.source)}: ${counts}${rate}${eta}${reason}`;
}

/** A progress bar on stderr (a line every few seconds when stderr is not a terminal). */
async function followWithBar(control: BackfillControl, id: string): Promise<BackfillStatus> {
  const bar = new SingleBar(
    {
      format: '{bar} {percentage}% | {value}/{total} rows | enqueued {enqueued} | unchanged {unchanged} | failed {failed} | {rate} rows/s | ETA {eta_formatted} | {phase}',
      stream: process.stderr,
      noTTYOutput: !process.stderr.isTTY,
      notTTYSchedule: 5_000,
      etaBuffer: 20,
      hideCursor: true,
    },
    Presets.shades_classic,
  );
  bar.start(0, 0, { enqueued: 0, unchanged: 0, failed: 0, rate: 0, phase: 'waiting' });
  try {
    return await control.follow(id, (s) => {
      const p = s.progress;
      if (!p) return;
      bar.setTotal(Math.max(p.total ?? p.read, p.read, 1));
      bar.update(p.read, { enqueued: p.enqueued, unchanged: p.unchanged, failed: p.failed, rate: Math.round(s.rowsPerSecond ?? 0), phase: p.phase });
    });
  } finally {
    bar.stop();
  }
}
