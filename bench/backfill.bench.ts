/**
 * Backfill benchmark on the local services (Redis, Kafka), the embeddings stub (its own process)
 * and LanceDB or the Qdrant contract server. Figures are printed, never asserted.
 *
 *   npm run services:up
 *   npm run bench:backfill -- [--events 100000] [--live-rate 200] [--live-events 4000]
 *                             [--stub-latency-ms 50] [--sink lancedb|qdrant-contract] [--json FILE]
 *
 * Three runs, each on fresh queues, topic and collection, all roles in this process:
 * 1. backfill: the generated workload (scripts/catalog-generator.ts, --events change events) as an
 *    NDJSON file, backfilled into an empty sink: rows/s until the job completes (every row written),
 *    embeddings requests and inputs, Redis commands per row; then the same backfill again, which
 *    should make no embeddings request.
 * 2. live alone: --live-events new items produced to Kafka at --live-rate events/s; latency per
 *    event from producing it to the sink acknowledging its write.
 * 3. live during a backfill: the same live stream, started once the backfill of run 1's workload
 *    is under way into an empty sink.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { BackfillControl, type BackfillStatus } from '../src/backfill/backfill-control.js';
import { silentLogger } from '../src/observability/logger.js';
import { startPipeline, type Pipeline, type Role } from '../src/pipeline/pipeline.js';
import { createSink } from '../src/sinks/create-sink.js';
import type { SinkBatch, VectorSink } from '../src/sinks/vector-sink.js';
import { Cleanup, fmt, isEntryPoint, latencyFigures, loadWorkload, log, machine, nonNegative, positiveInt, printTable, produceAtRate, redisCommands, startServices, type BenchServices, type ProducedAt } from './pipeline.bench.js';

const PROGRESS_EVERY_MS = 5_000;

/** Records when the sink acknowledged each live item's write (live items are `live-<n>`). */
function timedSink(inner: VectorSink, ackedAt: Map<string, number>): VectorSink {
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property !== 'write') return Reflect.get(target, property, receiver) as unknown;
      return async (batch: SinkBatch) => {
        const result = await target.write(batch);
        const now = Date.now();
        for (const r of batch.upserts) if (r.itemId.startsWith('live-') && !ackedAt.has(r.itemId)) ackedAt.set(r.itemId, now);
        return result;
      };
    },
  });
}

async function start(services: BenchServices, roles: Role[], ackedAt: Map<string, number>, cleanup: Cleanup): Promise<Pipeline> {
  const sink = timedSink(createSink(services.config.sink, services.config.embeddings.dimensions), ackedAt);
  const pipeline = await startPipeline(services.config, { roles, logger: silentLogger, sink });
  cleanup.add('pipeline', () => pipeline.close());
  return pipeline;
}

function control(services: BenchServices, cleanup: Cleanup): BackfillControl {
  const c = new BackfillControl(services.redis, services.config.redis.prefix, { attempts: 8, backoffMs: 1000 });
  cleanup.add('backfill control', () => c.close());
  return c;
}

async function followBackfill(c: BackfillControl, id: string, label: string): Promise<BackfillStatus> {
  let last = 0;
  return c.follow(
    id,
    (s) => {
      if (Date.now() - last < PROGRESS_EVERY_MS || !s.progress) return;
      last = Date.now();
      log(`  ${label}: ${s.progress.phase}, read ${s.progress.read}/${s.progress.total ?? '?'}, enqueued ${s.progress.enqueued}, unchanged ${s.progress.unchanged} (${fmt(s.rowsPerSecond ?? 0)} rows/s)`);
    },
    200,
  );
}

/** Live items, one event each, produced at `rate`; returns per-event latency once all are written. */
async function liveStream(services: BenchServices, count: number, rate: number, ackedAt: Map<string, number>): Promise<number[]> {
  const lines = Array.from({ length: count }, (_, i) => JSON.stringify({ id: `live-${i}`, version: 1, text: `live item ${i}: a new product, searchable as soon as it is written`, metadata: { n: i } }));
  const producedAt: ProducedAt = new Map();
  await produceAtRate(services, lines, rate, producedAt, { sent: 0 });
  const deadline = Date.now() + 300_000;
  while (ackedAt.size < count) {
    if (Date.now() > deadline) throw new Error(`only ${ackedAt.size}/${count} live events written after 300 s`);
    await sleep(50);
  }
  return [...producedAt].map(([id, at]) => (ackedAt.get(id) as number) - at).sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      events: { type: 'string', default: '100000' },
      'live-rate': { type: 'string', default: '200' },
      'live-events': { type: 'string', default: '4000' },
      'stub-latency-ms': { type: 'string', default: '50' },
      sink: { type: 'string', default: 'lancedb' },
      json: { type: 'string' },
    },
  });
  const liveRate = positiveInt('--live-rate', args['live-rate']);
  const liveEvents = positiveInt('--live-events', args['live-events']);
  const stubLatencyMs = nonNegative('--stub-latency-ms', args['stub-latency-ms']);
  const workload = loadWorkload({ events: args.events, catalog: undefined });
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-backfill-'));
  const file = join(dir, 'catalog.ndjson');
  writeFileSync(file, `${workload.lines.join('\n')}\n`);
  log(`backfill benchmark: ${workload.lines.length} rows, ${workload.finals.size} items (${workload.expectedLive} live at the end); sink ${args.sink}; stub latency ${stubLatencyMs} ms; live stream ${liveEvents} events at ${liveRate}/s; ${os.cpus().length} cores`);
  const figures: Record<string, number> = {};

  try {
    // ---- 1. backfill into an empty sink, then again ----
    {
      const cleanup = new Cleanup();
      try {
        const services = await startServices('bench-backfill', { sink: args.sink, provider: 'stub', stubLatencyMs }, cleanup);
        await start(services, ['embed', 'write', 'backfill'], new Map(), cleanup);
        const c = control(services, cleanup);
        const commandsBefore = await redisCommands(services.redis);
        const statsBefore = await services.stub?.stats();
        const id = await c.start({ source: { kind: 'file', path: file } });
        const done = await followBackfill(c, id, 'backfill');
        if (done.state !== 'completed') throw new Error(`the backfill ${done.state}: ${done.failedReason}`);
        const stats = await services.stub?.stats();
        const seconds = ((done.progress?.updatedAt ?? 0) - (done.progress?.startedAt ?? 0)) / 1000;
        figures.backfill_rows = done.progress?.read ?? 0;
        figures.backfill_rows_per_s = figures.backfill_rows / seconds;
        figures.backfill_items_written_per_s = workload.expectedLive / seconds;
        figures.backfill_embed_requests = (stats?.requests ?? 0) - (statsBefore?.requests ?? 0);
        figures.backfill_embed_inputs = (stats?.inputs ?? 0) - (statsBefore?.inputs ?? 0);
        figures.backfill_redis_commands_per_row = ((await redisCommands(services.redis)) - commandsBefore) / figures.backfill_rows;
        figures.backfill_seconds = seconds;

        const rerun = await followBackfill(c, await c.start({ source: { kind: 'file', path: file } }), 'backfill again');
        const after = await services.stub?.stats();
        figures.rerun_rows_per_s = (rerun.progress?.read ?? 0) / (((rerun.progress?.updatedAt ?? 0) - (rerun.progress?.startedAt ?? 0)) / 1000);
        figures.rerun_embed_requests = (after?.requests ?? 0) - (stats?.requests ?? 0);
      } finally {
        await cleanup.run();
      }
    }

    // ---- 2. live alone ----
    {
      const cleanup = new Cleanup();
      try {
        const services = await startServices('bench-live', { sink: args.sink, provider: 'stub', stubLatencyMs }, cleanup);
        const ackedAt = new Map<string, number>();
        await start(services, ['ingest', 'embed', 'write', 'backfill'], ackedAt, cleanup);
        const latencies = await liveStream(services, liveEvents, liveRate, ackedAt);
        const f = latencyFigures(latencies);
        Object.assign(figures, { live_alone_p50_ms: f.latency_ms_p50, live_alone_p95_ms: f.latency_ms_p95, live_alone_p99_ms: f.latency_ms_p99 });
      } finally {
        await cleanup.run();
      }
    }

    // ---- 3. live during a backfill ----
    {
      const cleanup = new Cleanup();
      try {
        const services = await startServices('bench-both', { sink: args.sink, provider: 'stub', stubLatencyMs }, cleanup);
        const ackedAt = new Map<string, number>();
        await start(services, ['ingest', 'embed', 'write', 'backfill'], ackedAt, cleanup);
        const c = control(services, cleanup);
        const id = await c.start({ source: { kind: 'file', path: file } });
        for (;;) {
          const s = await c.status(id);
          if ((s?.progress?.read ?? 0) > 0) break;
          await sleep(50);
        }
        const latencies = await liveStream(services, liveEvents, liveRate, ackedAt);
        const during = await c.status(id);
        const f = latencyFigures(latencies);
        Object.assign(figures, { live_during_backfill_p50_ms: f.latency_ms_p50, live_during_backfill_p95_ms: f.latency_ms_p95, live_during_backfill_p99_ms: f.latency_ms_p99 });
        figures.backfill_rows_read_while_live_ran = during?.progress?.read ?? 0;
        figures.backfill_still_running_at_end_of_live = during?.state === 'active' ? 1 : 0;
        await c.cancel(id);
      } finally {
        await cleanup.run();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  log('');
  printTable([
    ['backfill', `${fmt(figures.backfill_rows ?? 0)} rows in ${fmt(figures.backfill_seconds ?? 0, 1)} s`, `${fmt(figures.backfill_rows_per_s ?? 0)} rows/s, ${fmt(figures.backfill_items_written_per_s ?? 0)} items written/s`],
    ['  embeddings', `${fmt(figures.backfill_embed_requests ?? 0)} requests`, `${fmt(figures.backfill_embed_inputs ?? 0)} inputs`],
    ['  Redis', `${fmt(figures.backfill_redis_commands_per_row ?? 0, 1)} commands per row`, ''],
    ['backfill again', `${fmt(figures.rerun_embed_requests ?? 0)} embeddings requests`, `${fmt(figures.rerun_rows_per_s ?? 0)} rows/s`],
    ['live alone', `p50 ${fmt(figures.live_alone_p50_ms ?? 0)} ms, p95 ${fmt(figures.live_alone_p95_ms ?? 0)} ms`, `p99 ${fmt(figures.live_alone_p99_ms ?? 0)} ms`],
    ['live during a backfill', `p50 ${fmt(figures.live_during_backfill_p50_ms ?? 0)} ms, p95 ${fmt(figures.live_during_backfill_p95_ms ?? 0)} ms`, `p99 ${fmt(figures.live_during_backfill_p99_ms ?? 0)} ms (backfill read ${fmt(figures.backfill_rows_read_while_live_ran ?? 0)} rows meanwhile${figures.backfill_still_running_at_end_of_live ? ', still running' : ''})`],
  ]);
  if (args.json) writeFileSync(args.json, `${JSON.stringify({ ...figures, config: { events: workload.lines.length, live_rate: liveRate, live_events: liveEvents, stub_latency_ms: stubLatencyMs, sink: args.sink, machine: machine() } }, null, 2)}\n`);
}

if (isEntryPoint(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      log(`bench failed: ${(error as Error).stack ?? String(error)}`);
      process.exit(1);
    },
  );
}
