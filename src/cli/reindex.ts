import { setTimeout as sleep } from 'node:timers/promises';
import { Command } from 'commander';
import { parseSourceArgument } from '../backfill/backfill-job.js';
import type { Config } from '../config/config.js';
import { Reindexer, type GenerationStatus } from '../reindex/reindex.js';
import { configOrExit, withRedis } from './context.js';

async function withReindexer<T>(config: Config, run: (reindexer: Reindexer) => Promise<T>): Promise<T> {
  return withRedis(config, (redis) => run(new Reindexer(config, redis)));
}

function describe(s: GenerationStatus): string {
  const g = s.generation;
  const state = s.serving ? 'serving' : s.caughtUp ? 'caught up' : 'filling';
  const backfill = s.backfill ? `, backfill ${s.backfill.state} (${s.backfill.progress?.read ?? 0} rows read)` : '';
  return `generation ${g.id} ${state}: ${g.model}, ${g.dimensions} dimensions, collection ${g.collection}, ${s.points} points, Kafka lag ${s.kafkaLag ?? 'not started'}, ${s.queued} jobs queued${backfill}`;
}

/** `indexer reindex --model M --dimensions D [--wait]`, and `status`, `switch`, `drop-old`. */
export function reindexCommand(positiveInt: (value: string) => number): Command {
  const reindex = new Command('reindex')
    .description('re-index to a new embedding model without downtime: a new collection filled from the Kafka history (and SOURCE) while live events are written to both, then switched to')
    .option('--model <model>', 'the new embedding model')
    .option('--dimensions <n>', 'its vector size', positiveInt)
    .option('--source <source>', 'also backfill the new generation from file:PATH, kafka:TOPIC or postgres:TABLE')
    .option('--wait', 'wait until it has caught up, switch to it, and exit (the old collection is kept until `reindex drop-old`)')
    .action(async (opts: { model?: string; dimensions?: number; source?: string; wait?: boolean }) => {
      if (!opts.model || !opts.dimensions) {
        process.stderr.write('indexer reindex needs --model and --dimensions (or one of: status, switch, drop-old)\n');
        process.exitCode = 64;
        return;
      }
      const config = configOrExit();
      const source = opts.source === undefined ? undefined : parseSourceArgument(opts.source, { cwd: process.cwd() });
      await withReindexer(config, async (reindexer) => {
        const generation = await reindexer.start({ model: opts.model as string, dimensions: opts.dimensions as number, source });
        process.stdout.write(`generation ${generation.id} created: ${generation.model}, ${generation.dimensions} dimensions, collection ${generation.collection}; the workers fill it within seconds\n`);
        if (!opts.wait) {
          process.stdout.write('follow it with `indexer reindex status`, then `indexer reindex switch`\n');
          return;
        }
        let last = 0;
        for (;;) {
          const status = (await reindexer.status()).find((s) => s.generation.id === generation.id);
          if (!status) throw new Error(`generation ${generation.id} is gone from the registry`);
          if (Date.now() - last > 5_000) {
            last = Date.now();
            process.stderr.write(`${describe(status)}\n`);
          }
          if (status.caughtUp) break;
          await sleep(1_000);
        }
        await reindexer.switchTo({ id: generation.id });
        process.stdout.write(`generation ${generation.id} is serving; the old collection is kept until \`indexer reindex drop-old\`\n`);
      });
    });

  reindex
    .command('status')
    .description('every generation: model, collection, points, Kafka lag, jobs queued, which one serves')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const config = configOrExit();
      await withReindexer(config, async (reindexer) => {
        const statuses = await reindexer.status();
        process.stdout.write(opts.json ? `${JSON.stringify(statuses)}\n` : statuses.map((s) => `${describe(s)}\n`).join(''));
      });
    });

  reindex
    .command('switch')
    .description('make the newest generation the serving one (refused until it has caught up)')
    .option('--force', 'switch even if it has not caught up')
    .action(async (opts: { force?: boolean }) => {
      const config = configOrExit();
      await withReindexer(config, async (reindexer) => {
        const generation = await reindexer.switchTo({ force: opts.force ?? false });
        process.stdout.write(`generation ${generation.id} (${generation.model}) is serving\n`);
      });
    });

  reindex
    .command('drop-old')
    .description('delete every generation but the serving one: collections, queues and item state')
    .action(async () => {
      const config = configOrExit();
      await withReindexer(config, async (reindexer) => {
        const dropped = await reindexer.dropOld();
        process.stdout.write(dropped.length === 0 ? 'nothing to drop\n' : dropped.map((g) => `dropped generation ${g.id} (${g.model}, collection ${g.collection})\n`).join(''));
      });
    });

  return reindex;
}
