#!/usr/bin/env node
/** The `indexer` command line: worker, produce, backfill, search, export, dlq, verify, recover, demo. */
import { Command, InvalidArgumentError } from 'commander';
import { createKafka } from '../ingest/kafka.js';
import { ensureTopic, produceLines, readLines } from '../ingest/produce.js';
import { createLogger } from '../observability/logger.js';
import { ROLES, type Role } from '../pipeline/pipeline.js';
import { runWorkerProcess } from '../pipeline/worker-process.js';
import { Queue } from 'bullmq';
import { EMBED_QUEUE } from '../queue/jobs.js';
import { ItemStateStore } from '../state/item-state.js';
import { verify } from '../state/verify.js';
import { UsageStore } from '../embed/usage.js';
import { configOrExit, openSink, servingConfigOf, withRedis } from './context.js';
import { reindexCommand } from './reindex.js';
import { configFor, GenerationStore } from '../reindex/generations.js';
import { backfillCommand } from './backfill.js';
import { dlqCommand } from './dlq.js';
import { recoverCommand } from './recover.js';
import { statusCommand } from './status.js';
import { clearPauseReason } from '../observability/pause-reason.js';
import { runDemo } from './demo.js';
import { exportRecords } from './export.js';
import { formatHits, searchText } from './search.js';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
}

function roles(value: string): Role[] {
  const list = value.split(',').map((r) => r.trim());
  for (const r of list) if (!(ROLES as readonly string[]).includes(r)) throw new InvalidArgumentError(`unknown role "${r}": use ${ROLES.join(', ')}`);
  return list as Role[];
}

const program = new Command()
  .name('indexer')
  .description('Incremental embedding indexer: Kafka change events in, a vector collection kept in sync.\nEvery setting comes from the environment; see the README for the list.')
  .showHelpAfterError();

program
  .command('worker')
  .description('run the pipeline: all roles, or some of them (scale each role on its own)')
  .option('--role <roles>', `comma-separated roles (${ROLES.join(', ')})`, roles, [...ROLES])
  .action(async (opts: { role: Role[] }) => {
    await runWorkerProcess(opts.role);
  });

program
  .command('produce')
  .description('send NDJSON change events (one per line) to Kafka, keyed by item id')
  .argument('<file>', 'NDJSON file, or - for standard input')
  .option('--topic <topic>', 'topic (default: the first of KAFKA_TOPICS)')
  .option('--create-topic <partitions>', 'create the topic with this many partitions when missing', positiveInt)
  .action(async (file: string, opts: { topic?: string; createTopic?: number }) => {
    const config = configOrExit();
    const logger = createLogger(config.observability.logLevel);
    const kafka = createKafka(config.kafka, logger);
    const topic = opts.topic ?? (config.kafka.topics[0] as string);
    if (opts.createTopic) await ensureTopic(kafka, topic, opts.createTopic);
    let last = Date.now();
    const sent = await produceLines(kafka, topic, readLines(file), {
      idField: config.events.idField,
      onProgress: ({ sent: n }) => {
        if (Date.now() - last > 2000) {
          last = Date.now();
          process.stderr.write(`sent ${n} events\n`);
        }
      },
    });
    process.stdout.write(`sent ${sent} events to ${topic}\n`);
  });

program
  .command('search')
  .description('nearest items to a text, with their metadata')
  .argument('<text>', 'the query text')
  .option('--limit <n>', 'how many results', positiveInt, 10)
  .option('--json', 'print the hits as JSON lines')
  .action(async (text: string, opts: { limit: number; json?: boolean }) => {
    const hits = await searchText(await servingConfigOf(configOrExit()), text, opts.limit);
    process.stdout.write(opts.json ? hits.map((h) => JSON.stringify(h)).join('\n').concat(hits.length ? '\n' : '') : formatHits(hits));
  });

program
  .command('export')
  .description('every record in the sink as NDJSON: item id, version, content hash, payload')
  .option('--vectors', 'include the vectors')
  .action(async (opts: { vectors?: boolean }) => {
    const count = await exportRecords(await servingConfigOf(configOrExit()), process.stdout, opts.vectors ?? false);
    process.stderr.write(`exported ${count} records\n`);
  });

program.addCommand(dlqCommand(positiveInt));

program
  .command('resume')
  .description('resume the embed queue after it was paused (an exhausted embeddings quota or a refused key pauses it for every worker), in every generation')
  .action(async () => {
    const base = configOrExit();
    await withRedis(base, async (redis) => {
      const registry = await new GenerationStore(redis, base).read();
      for (const generation of registry.generations) {
        const config = configFor(base, generation);
        const queue = new Queue(EMBED_QUEUE, { connection: redis, prefix: config.redis.prefix });
        try {
          const wasPaused = await queue.isPaused();
          await queue.resume();
          await clearPauseReason(redis, config.redis.prefix, EMBED_QUEUE);
          const which = registry.generations.length > 1 ? ` (generation ${generation.id}, ${generation.model})` : '';
          process.stdout.write(wasPaused ? `embed queue resumed${which}\n` : `embed queue was not paused${which}\n`);
        } finally {
          await queue.close();
        }
      }
    });
  });

program
  .command('usage')
  .description('embeddings requests, inputs, tokens and estimated cost per model, summed over every worker (of the serving generation)')
  .action(async () => {
    const config = await servingConfigOf(configOrExit());
    await withRedis(config, async (redis) => {
      const totals = await new UsageStore(redis, config.redis.prefix, config.embeddings.prices).totals();
      if (totals.length === 0) process.stdout.write('no embeddings requests yet\n');
      for (const u of totals) {
        const cost = u.estimatedCostUsd === undefined ? 'no price (set EMBEDDINGS_PRICES)' : `$${u.estimatedCostUsd.toFixed(4)}`;
        process.stdout.write(`${u.model}: ${u.requests} requests, ${u.inputs} inputs, ${u.tokens} tokens, estimated ${cost}\n`);
      }
    });
  });

program
  .command('verify')
  .description('compare the per-item state with the sink and report drift (missing, stale, deleted but present, untracked)')
  .option('--repair', 'delete points the state says are deleted; make the state forget items the sink lost or holds stale, so a replay writes them')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { repair?: boolean; json?: boolean }) => {
    const config = await servingConfigOf(configOrExit());
    const sink = await openSink(config);
    await withRedis(config, async (redis) => {
      const report = await verify(new ItemStateStore(redis, config.redis.prefix, config.redis.tombstoneRetentionSeconds), sink, {
        repair: opts.repair ?? false,
        onProgress: (n) => process.stderr.write(`scanned ${n} points\n`),
      });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(report)}\n`);
      } else {
        const counts = new Map<string, number>();
        for (const d of report.drift) counts.set(d.kind, (counts.get(d.kind) ?? 0) + 1);
        process.stdout.write(`${report.itemsInState} items in state, ${report.pointsInSink} points in the sink, ${report.drift.length} drifted${[...counts].map(([k, n]) => `, ${k}: ${n}`).join('')}\n`);
        for (const d of report.drift.slice(0, 50)) process.stdout.write(`  ${d.kind} ${d.itemId} state=${JSON.stringify(d.state ?? null)} sink=${JSON.stringify(d.sink ?? null)}\n`);
        if (opts.repair) process.stdout.write(`repaired: ${report.repaired.deleted} deleted from the sink, ${report.repaired.forgotten} forgotten by the state (replay them to re-index)\n`);
      }
      process.exitCode = report.drift.length > 0 && !opts.repair ? 2 : 0;
    }).finally(() => sink.close());
  });

program.addCommand(backfillCommand(positiveInt));
program.addCommand(reindexCommand(positiveInt));
program.addCommand(recoverCommand());
program.addCommand(statusCommand());

program
  .command('demo')
  .description('start the local services, load the sample catalog, index it, run searches')
  .option('--catalog <file>', 'NDJSON change events', 'data/sample-catalog.ndjson')
  .option('--no-services', 'do not start the local services (they are already running)')
  .option('--timeout <seconds>', 'give up after this long', positiveInt, 600)
  .action(async (opts: { catalog: string; services: boolean; timeout: number }) => {
    await runDemo({ catalog: opts.catalog, startServices: opts.services, timeoutMs: opts.timeout * 1000 });
    process.exit(0);
  });

program.parseAsync().catch((error: unknown) => {
  process.stderr.write(`indexer: ${(error as Error).message}\n`);
  process.exit(1);
});
