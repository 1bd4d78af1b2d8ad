/**
 * Memory under a large backlog: produces N events (default 1,000,000) into a fresh topic, then runs
 * one worker process (all roles, the stub in a process of its own; or, with --roles split, one for
 * ingest and embed and one for write, as the deployment runs them) against that backlog for a
 * while, sampling each worker's RSS and the queue depths. Ingest holds Kafka batches while the
 * queues are above QUEUE_HIGH_WATER, so the worker's memory should stay flat however deep the
 * backlog is. Figures are printed, never asserted.
 *
 *   npm run services:up
 *   npm run bench:backlog -- [--events 1000000] [--seconds 120] [--sink lancedb|qdrant-contract] [--roles all|split] [--heap-mib 256 (0: Node's default)]
 *                            [--malloc-arenas 2 (0: glibc's default)] [--malloc-mmap-threshold 131072 (0: glibc's default)]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { createSink } from '../src/sinks/create-sink.js';
import { EMBED_QUEUE, WRITE_QUEUE } from '../src/queue/jobs.js';
import { spawnWorker } from '../test/support/processes.js';
import { Cleanup, fmt, ingestLag, loadWorkload, log, positiveInt, printTable, produceAll, startServices, type ProducedAt } from './pipeline.bench.js';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '1000000' },
    seconds: { type: 'string', default: '120' },
    sink: { type: 'string', default: 'lancedb' },
    /** all: one process with every role; split: ingest and embed in one process, write in another. */
    roles: { type: 'string', default: 'all' },
    /** The worker's V8 old space, as the Dockerfile sets it (0: Node's default, about 4 GiB). */
    'heap-mib': { type: 'string', default: '256' },
    /** glibc's malloc arenas in the worker, as the Dockerfile sets them (0: glibc's default, 8 per core). */
    'malloc-arenas': { type: 'string', default: '2' },
    /**
     * glibc's fixed mmap and trim thresholds in bytes, as the Dockerfile sets them (0: glibc's
     * default, which raises the mmap threshold up to 32 MiB as large blocks are freed, so LanceDB's
     * buffers end up in the arenas and their freed pages are kept).
     */
    'malloc-mmap-threshold': { type: 'string', default: '131072' },
  },
});

/** The worker processes each --roles value runs: LanceDB allows one writer process per table. */
const ROLE_SETS = { all: ['ingest,embed,write'], split: ['ingest,embed', 'write'] } as const;

const MALLOC_SETTINGS = ['MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_'] as const;

/** glibc's settings for the worker, as the image sets them; '0' leaves one at glibc's default. */
function mallocEnv(arenas: string, mmapThreshold: string): Partial<Record<(typeof MALLOC_SETTINGS)[number], string>> {
  const env: Partial<Record<(typeof MALLOC_SETTINGS)[number], string>> = {};
  if (arenas !== '0') env.MALLOC_ARENA_MAX = String(positiveInt('--malloc-arenas', arenas));
  if (mmapThreshold !== '0') {
    const bytes = positiveInt('--malloc-mmap-threshold', mmapThreshold);
    // glibc's own ceiling for the mmap threshold on 64-bit; above it glibc ignores the setting.
    if (bytes > 32 * 2 ** 20) throw new Error(`--malloc-mmap-threshold must be at most 33554432 (32 MiB, glibc's maximum), got "${mmapThreshold}"`);
    env.MALLOC_MMAP_THRESHOLD_ = env.MALLOC_TRIM_THRESHOLD_ = String(bytes);
  }
  return env;
}

function rssMib(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** A worker's V8 heap, from its /metrics: what of the RSS is JavaScript objects. */
async function heapOf(port: number): Promise<string> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const used = /^indexer_nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1];
    const external = /^indexer_nodejs_external_memory_bytes (\S+)/m.exec(text)?.[1];
    return `heap ${fmt(Number(used) / 2 ** 20)} MiB, external ${fmt(Number(external) / 2 ** 20)} MiB`;
  } catch {
    return 'heap n/a';
  }
}

const cleanup = new Cleanup();
try {
  const seconds = positiveInt('--seconds', args.seconds);
  // Checked before a million events are produced, not after.
  const malloc = mallocEnv(args['malloc-arenas'], args['malloc-mmap-threshold']);
  const heapMib = args['heap-mib'] === '0' ? 0 : positiveInt('--heap-mib', args['heap-mib']);
  const roleSets = ROLE_SETS[args.roles as keyof typeof ROLE_SETS];
  if (roleSets === undefined) throw new Error(`--roles must be "all" or "split", got "${args.roles}"`);
  const workload = loadWorkload({ events: args.events, catalog: undefined });
  const services = await startServices('backlog', { sink: args.sink, provider: 'stub', stubLatencyMs: 0 }, cleanup);
  log(`backlog benchmark: ${workload.lines.length} events (${workload.source}) into ${services.run}; ${roleSets.length === 1 ? 'one worker process, all roles' : `one worker process per role set (${roleSets.join(' | ')})`}; sink ${services.config.sink.kind}`);
  const producedAt: ProducedAt = new Map();
  await produceAll(services, workload.lines, producedAt);
  producedAt.clear();
  workload.lines.length = 0;

  const embed = new Queue(EMBED_QUEUE, { connection: services.redis, prefix: services.run });
  const write = new Queue(WRITE_QUEUE, { connection: services.redis, prefix: services.run });
  cleanup.add('queues', async () => {
    await embed.close();
    await write.close();
  });
  const nodeOptions = heapMib > 0 ? `--max-old-space-size=${heapMib}` : '';
  const basePort = Number(process.env.BACKLOG_METRICS_PORT ?? '19464');
  const env: NodeJS.ProcessEnv = { ...process.env, ...services.overrides, LOG_LEVEL: 'warn', NODE_OPTIONS: nodeOptions };
  // 0 means glibc's default: not whatever this shell happens to set.
  for (const name of MALLOC_SETTINGS) delete env[name];
  Object.assign(env, malloc);
  const workers = roleSets.map((roles, i) => ({ roles, port: basePort + i, rss: 0, peak: 0, worker: spawnWorker(roles, { ...env, METRICS_PORT: String(basePort + i) }) }));
  cleanup.add('worker processes', async () => {
    for (const { worker } of workers) if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
    await Promise.all(workers.map(({ worker }) => worker.exited));
  });
  const started = Date.now();
  let maxJobs = 0;
  let lastReport = 0;
  const exited = () => workers.find(({ worker }) => worker.child.exitCode !== null);
  while (Date.now() - started < seconds * 1000 && exited() === undefined) {
    for (const w of workers) {
      w.rss = rssMib(w.worker.child.pid ?? -1);
      w.peak = Math.max(w.peak, w.rss);
    }
    const jobs = (await embed.count()) + (await write.count());
    maxJobs = Math.max(maxJobs, jobs);
    if (Date.now() - lastReport > 5_000) {
      lastReport = Date.now();
      const processes = await Promise.all(workers.map(async (w) => `${workers.length > 1 ? `${w.roles}: ` : ''}RSS ${fmt(w.rss)} MiB (peak ${fmt(w.peak)}; ${await heapOf(w.port)})`));
      log(`  ${((Date.now() - started) / 1000).toFixed(0)} s: ${processes.join('; ')}, ${jobs} jobs waiting, ${await ingestLag(services)} events still in Kafka`);
    }
    await sleep(500);
  }
  const dead = exited();
  if (dead) throw new Error(`the ${dead.roles} worker exited (${dead.worker.child.exitCode}):\n${dead.worker.output().slice(-2000)}`);
  const lag = await ingestLag(services);
  for (const { worker } of workers) worker.child.kill('SIGTERM');
  await Promise.all(workers.map(({ worker }) => worker.exited));
  const sink = createSink(services.config.sink, services.config.embeddings.dimensions);
  await sink.open();
  const written = await sink.count();
  await sink.close();
  log('');
  printTable([
    ...workers.map((w): [string, string, string] => [`${w.roles} peak RSS (MiB)`, fmt(w.peak), `sampled every 500 ms over ${seconds} s; ${nodeOptions || "Node's default heap limit"}; ${MALLOC_SETTINGS.map((name) => `${name}=${malloc[name] ?? "glibc's default"}`).join(' ')}`]),
    ['events consumed', fmt(Number(args.events) - lag), `of ${args.events}; ${fmt(lag)} still waiting in Kafka`],
    ['items in the sink', fmt(written), `${fmt(written / seconds)} items/s`],
    ['most jobs waiting', fmt(maxJobs), `embed + write queues; QUEUE_HIGH_WATER=${services.config.redis.highWater}`],
  ]);
} finally {
  await cleanup.run();
}
process.exit(0);
