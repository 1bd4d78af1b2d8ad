/**
 * End-to-end benchmark of the indexer on the local services (Redis, Kafka), the embeddings stub and
 * LanceDB or the Qdrant contract server. Figures are printed, never asserted.
 *
 *   npm run services:up
 *   npm run bench -- [--events 100000 | --catalog FILE [--events N]] [--rate R] [--workers 1|2 [--roles "ingest,embed;write"]]
 *                    [--sink lancedb|qdrant-contract] [--provider stub|local] [--stub-latency-ms 0]
 *                    [--json FILE] [--compare-naive [--max-seconds 60]]
 *
 * Workload: the sample catalog generator (scripts/catalog-generator.ts), the smallest catalog
 * giving at least --events change events, cut to exactly that many in line order (so versions stay
 * monotonic per item); or the lines of --catalog. Produced to a fresh topic of 4 partitions.
 *
 * Modes:
 * - throughput (no --rate): every event is produced first, then the pipeline starts; timed from the
 *   pipeline's start until every item is in the sink at its final version (deleted ones gone) and
 *   both queues are empty: sustained end-to-end events/s over a backlog. Latency then mostly
 *   measures the backlog (how long an event waited), and is labelled so.
 * - rate (--rate R): the pipeline starts first, then the events are produced at a steady R events/s
 *   (a small batch every 20 ms); timed from the first event produced until drained. The latency
 *   figure that matters comes from this mode.
 *
 * Workers: --workers 1 runs every role in this process (startPipeline); latency per item is from
 * producing its last event to the sink acknowledging the write of that version (a wrapper around
 * the sink). --workers 2 spawns two real worker processes (workers/indexer-worker.ts; with LanceDB,
 * which takes one writer per table, `ingest,embed` and `write`; with Qdrant both run every role;
 * --roles "A;B" sets them);
 * latency is then read from the sink at the end: indexed_at minus the time its last event was
 * produced (it excludes the sink call itself).
 *
 * --compare-naive then runs bench/naive.bench.ts (an embed-and-upsert-per-event consumer, as
 * tutorials build it) on the same workload and prints both side by side.
 */
import { execFileSync, spawn } from 'node:child_process';
import { realpathSync, rmSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { Admin, Kafka } from 'kafkajs';
import { loadConfig, type Config } from '../src/config/config.js';
import { createKafka } from '../src/ingest/kafka.js';
import { ensureTopic, produceLines, toMessage } from '../src/ingest/produce.js';
import { silentLogger } from '../src/observability/logger.js';
import { startPipeline, type Pipeline } from '../src/pipeline/pipeline.js';
import { EMBED_QUEUE, WRITE_QUEUE } from '../src/queue/jobs.js';
import { createSink } from '../src/sinks/create-sink.js';
import type { PayloadUpdate, SinkBatch, SinkDelete, SinkRecord, VectorSink } from '../src/sinks/vector-sink.js';
import { startStubProcess, type StubProcess } from '../test/support/embeddings-stub-process.js';
import { deleteKeysUnder } from '../test/support/redis-keys.js';
import { spawnWorker, type WorkerProcess } from '../test/support/processes.js';
import { QdrantContractServer } from '../test/support/qdrant-contract/contract-server.js';
import { generateCatalogEvents } from '../scripts/catalog-generator.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
export const DEFAULT_EVENTS = 100_000;
export const PARTITIONS = 4;
const PROGRESS_EVERY_MS = 2000;
const POLL_MS = 100;
/** Fails the run when nothing moves for this long (dead-lettered items never reach the sink). */
const STALL_MS = 120_000;
/** Rate mode sends a batch every this many ms. */
const RATE_TICK_MS = 20;
const STUB_DIMENSIONS = 384;
export const STUB_MODEL = 'stub-embedding';

export const log = (line: string) => process.stdout.write(`${line}\n`);

// ---------------------------------------------------------------------------------------------
// Shared with bench/naive.bench.ts: workload, services, production, figures, clean-up.
// ---------------------------------------------------------------------------------------------

/** The figures both benchmarks write with --json: exactly these keys, plus `config`. */
export interface Figures {
  events_per_s: number;
  redis_commands_per_event: number;
  latency_ms_p50: number;
  latency_ms_p95: number;
  latency_ms_p99: number;
  embed_requests_per_event: number;
  tokens_per_event: number;
  peak_rss_mib: number;
  cpu_s_per_1k_events: number;
}

export interface Final {
  version: number;
  op: 'upsert' | 'delete';
}

export interface Workload {
  lines: string[];
  /** Each item's last event: what the sink must hold at the end. */
  finals: Map<string, Final>;
  expectedLive: number;
  /** Where the events came from, for the report. */
  source: string;
}

/** --events N from the generator, or the lines of --catalog (its first N with --events). */
export function loadWorkload(options: { events: string | undefined; catalog: string | undefined }): Workload {
  let lines: string[];
  let source: string;
  if (options.catalog) {
    lines = readFileSync(options.catalog, 'utf8').split('\n').filter((l) => l.trim());
    if (options.events !== undefined) lines = lines.slice(0, positiveInt('--events', options.events));
    source = options.catalog;
  } else {
    const events = options.events === undefined ? DEFAULT_EVENTS : positiveInt('--events', options.events);
    const generated = generateCatalogEvents(events);
    lines = generated.lines;
    source = `generated catalog of ${generated.items} items`;
  }
  const finals = new Map<string, Final>();
  for (const line of lines) {
    const e = JSON.parse(line) as { id: string | number; version: number; op?: string };
    const id = String(e.id);
    if ((finals.get(id)?.version ?? -Infinity) < e.version) finals.set(id, { version: e.version, op: e.op === 'delete' ? 'delete' : 'upsert' });
  }
  const expectedLive = [...finals.values()].filter((f) => f.op !== 'delete').length;
  return { lines, finals, expectedLive, source };
}

export function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${value}"`);
  return n;
}

export function nonNegative(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got "${value}"`);
  return n;
}

export const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;

/** Calls of every command since the Redis server started (INFO commandstats). */
export async function redisCommands(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  return [...info.matchAll(/calls=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Things to undo at the end, last added first; run once, also on Ctrl-C. */
export class Cleanup {
  private readonly steps: { name: string; fn: () => Promise<unknown> | unknown }[] = [];
  private ran: Promise<void> | undefined;
  /** Set on SIGINT/SIGTERM: the handler cleans up and exits; the run should stop touching anything. */
  interrupted = false;

  constructor() {
    let signalledAt = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalledAt > 0) {
        // One Ctrl-C arrives twice under `tsx` (the terminal's, and the one tsx relays): only a
        // signal sent well after the first one means "leave now".
        if (Date.now() - signalledAt > 1000) process.exit(130);
        return;
      }
      signalledAt = Date.now();
      this.interrupted = true;
      log(`\n${signal}: cleaning up (send it again to leave at once)`);
      void this.run().finally(() => process.exit(130));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  /** After a signal, waits for ever: the signal handler cleans up and exits the process. */
  async parkIfInterrupted(): Promise<void> {
    if (this.interrupted) await new Promise(() => undefined);
  }

  add(name: string, fn: () => Promise<unknown> | unknown): void {
    this.steps.push({ name, fn });
  }

  run(): Promise<void> {
    this.ran ??= (async () => {
      for (const step of this.steps.reverse()) {
        try {
          await step.fn();
        } catch (error) {
          log(`  clean-up of ${step.name} failed: ${(error as Error).message}`);
        }
      }
    })();
    return this.ran;
  }
}

export interface BenchServices {
  run: string;
  config: Config;
  /** The variables the config was loaded from, minus the inherited environment (for child processes). */
  overrides: Record<string, string>;
  /** The embeddings stub, in a process of its own: the indexer's figures do not include it. */
  stub: StubProcess | undefined;
  kafka: Kafka;
  admin: Admin;
  redis: Redis;
}

/**
 * A run's own topic (4 partitions), consumer group, queue prefix and collection, a LanceDB temp
 * dir, the stub and the contract server as asked; each registered for clean-up.
 */
export async function startServices(
  name: string,
  options: { sink: string; provider: string; stubLatencyMs: number },
  cleanup: Cleanup,
): Promise<BenchServices> {
  if (options.sink !== 'lancedb' && options.sink !== 'qdrant-contract') throw new Error(`--sink must be lancedb or qdrant-contract, got "${options.sink}"`);
  if (options.provider !== 'stub' && options.provider !== 'local') throw new Error(`--provider must be stub or local, got "${options.provider}"`);
  const run = `${name}-${Date.now().toString(36)}`;
  const lancedbDir = mkdtempSync(join(os.tmpdir(), `${name}-lancedb-`));
  cleanup.add('LanceDB directory', () => rmSync(lancedbDir, { recursive: true, force: true }));
  const overrides: Record<string, string> = { KAFKA_TOPICS: run, KAFKA_GROUP_ID: run, QUEUE_PREFIX: run, COLLECTION: run, LANCEDB_URI: lancedbDir, LOG_LEVEL: 'silent' };
  let stub: StubProcess | undefined;
  if (options.provider === 'stub') {
    const started = await startStubProcess({ dimensions: STUB_DIMENSIONS, latencyMs: options.stubLatencyMs });
    const baseUrl = started.url;
    stub = started;
    cleanup.add('embeddings stub', () => started.stop());
    Object.assign(overrides, { EMBEDDINGS_BASE_URL: baseUrl, EMBEDDINGS_MODEL: STUB_MODEL, EMBEDDINGS_DIMENSIONS: String(STUB_DIMENSIONS), EMBEDDINGS_PROVIDER: 'openai' });
  } else {
    overrides.EMBEDDINGS_PROVIDER = 'local';
  }
  if (options.sink === 'qdrant-contract') {
    const contract = new QdrantContractServer();
    Object.assign(overrides, { SINK: 'qdrant', QDRANT_URL: await contract.start() });
    cleanup.add('Qdrant contract server', () => contract.stop());
  } else {
    overrides.SINK = 'lancedb';
  }
  const config = loadConfig({ ...process.env, ...overrides });
  const redis = new Redis(config.redis.url);
  cleanup.add('Redis connection', () => redis.disconnect());
  cleanup.add(`Redis keys under ${run}:`, () => deleteKeysUnder(redis, run));
  const kafka = createKafka(config.kafka, silentLogger);
  const admin = kafka.admin();
  await admin.connect();
  cleanup.add('Kafka admin', () => admin.disconnect());
  cleanup.add(`Kafka topic and group ${run}`, async () => {
    await admin.deleteTopics({ topics: [run] });
    await deleteGroup(admin, run);
  });
  await ensureTopic(kafka, run, PARTITIONS);
  return { run, config, overrides, stub, kafka, admin, redis };
}

/**
 * Deletes a consumer group once its members have left (a member that left ungracefully stays
 * until its session times out: retried for up to 40 s). A group that never consumed is absent.
 */
async function deleteGroup(admin: Admin, groupId: string): Promise<void> {
  const deadline = Date.now() + 40_000;
  for (;;) {
    const { groups } = await admin.listGroups();
    if (!groups.some((g) => g.groupId === groupId)) return;
    try {
      await admin.deleteGroups([groupId]);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(1000);
    }
  }
}

/** Item id -> when the bench produced its latest event (ms since the epoch). */
export type ProducedAt = Map<string, number>;

function noteProduced(producedAt: ProducedAt, line: string, at: number, idField: string): void {
  const key = toMessage(line, idField).key;
  if (key !== null && key !== undefined) producedAt.set(String(key), at);
}

/** Throughput mode: every event into the topic, in order, with progress every 2 s. */
export async function produceAll(services: BenchServices, lines: string[], producedAt: ProducedAt): Promise<number> {
  const started = Date.now();
  let lastReport = started;
  const idField = services.config.events.idField;
  await produceLines(
    services.kafka,
    services.run,
    (function* () {
      for (const line of lines) {
        noteProduced(producedAt, line, Date.now(), idField);
        yield line;
      }
    })(),
    {
      idField,
      batchSize: 500,
      onProgress: ({ sent }) => {
        if (Date.now() - lastReport < PROGRESS_EVERY_MS) return;
        lastReport = Date.now();
        log(`  producing: ${sent}/${lines.length} events (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      },
    },
  );
  const seconds = (Date.now() - started) / 1000;
  log(`  produced ${lines.length} events in ${seconds.toFixed(1)} s (${(lines.length / seconds).toFixed(0)} events/s)`);
  return seconds;
}

/**
 * Rate mode: a batch every 20 ms, sized so that the events sent so far keep up with rate x elapsed
 * (R/50 per batch when sends keep up; a late tick sends the shortfall). Returns the seconds it took.
 */
export async function produceAtRate(
  services: BenchServices,
  lines: string[],
  rate: number,
  producedAt: ProducedAt,
  progress: { sent: number },
  shouldStop: () => boolean = () => false,
): Promise<number> {
  const producer = services.kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const idField = services.config.events.idField;
  const started = performance.now();
  try {
    while (progress.sent < lines.length && !shouldStop()) {
      const due = Math.min(lines.length, Math.floor((rate * (performance.now() - started)) / 1000));
      if (due > progress.sent) {
        const batch = lines.slice(progress.sent, due);
        const at = Date.now();
        for (const line of batch) noteProduced(producedAt, line, at, idField);
        await producer.send({ topic: services.run, messages: batch.map((l) => toMessage(l, idField)), acks: -1 });
        progress.sent = due;
      }
      if (progress.sent < lines.length && !shouldStop()) await sleep(RATE_TICK_MS);
    }
  } finally {
    await producer.disconnect();
  }
  return (performance.now() - started) / 1000;
}

/** Events not yet committed by the run's consumer group, over every partition. */
export async function ingestLag(services: BenchServices): Promise<number> {
  const [offsets, committed] = await Promise.all([
    services.admin.fetchTopicOffsets(services.run),
    services.admin.fetchOffsets({ groupId: services.run, topics: [services.run] }),
  ]);
  const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  return offsets.reduce((sum, p) => {
    const at = done.get(p.partition) ?? -1;
    return sum + Math.max(0, Number(p.high) - (at >= 0 ? at : Number(p.low)));
  }, 0);
}

/** Waits until the run's consumer group is stable with this many members (rate mode starts then). */
export async function waitForStableGroup(services: BenchServices, members: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { groups } = await services.admin.describeGroups([services.run]);
    const group = groups[0];
    if (group && group.state === 'Stable' && group.members.length >= members) return;
    if (Date.now() > deadline) throw new Error(`the consumer group did not become stable with ${members} member(s) in ${timeoutMs / 1000} s (state ${group?.state})`);
    await sleep(100);
  }
}

export function machine() {
  const cpus = os.cpus();
  return { cores: cpus.length, cpu_model: cpus[0]?.model.trim() ?? 'unknown', mem_gib: Number((os.totalmem() / 2 ** 30).toFixed(1)), platform: `${os.platform()} ${os.release()}`, node: process.version };
}

const round = (n: number, digits: number) => (Number.isFinite(n) ? Number(n.toFixed(digits)) : Number.NaN);

export function writeFigures(file: string, figures: Figures, config: Record<string, unknown>): void {
  const rounded: Figures = {
    events_per_s: round(figures.events_per_s, 1),
    redis_commands_per_event: round(figures.redis_commands_per_event, 2),
    latency_ms_p50: round(figures.latency_ms_p50, 0),
    latency_ms_p95: round(figures.latency_ms_p95, 0),
    latency_ms_p99: round(figures.latency_ms_p99, 0),
    embed_requests_per_event: round(figures.embed_requests_per_event, 4),
    tokens_per_event: round(figures.tokens_per_event, 2),
    peak_rss_mib: round(figures.peak_rss_mib, 0),
    cpu_s_per_1k_events: round(figures.cpu_s_per_1k_events, 3),
  };
  writeFileSync(file, `${JSON.stringify({ ...rounded, config }, null, 2)}\n`);
  log(`figures written to ${file}`);
}

/** Prints rows of [figure, value, note] as an aligned table. */
export function printTable(rows: [string, string, string][]): void {
  const widths = [0, 1].map((c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
  for (const [name, value, note] of rows) log(`  ${name.padEnd(widths[0] ?? 0)}  ${value.padStart(widths[1] ?? 0)}  ${note}`);
}

export const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a');

export function latencyFigures(latencies: number[]): Pick<Figures, 'latency_ms_p50' | 'latency_ms_p95' | 'latency_ms_p99'> {
  const sorted = [...latencies].sort((a, b) => a - b);
  return { latency_ms_p50: percentile(sorted, 50), latency_ms_p95: percentile(sorted, 95), latency_ms_p99: percentile(sorted, 99) };
}

/** Whether the module was run as the entry point (not imported by another benchmark). */
export function isEntryPoint(moduleUrl: string): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return pathToFileURL(realpathSync(entry)).href === moduleUrl;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The pipeline benchmark
// ---------------------------------------------------------------------------------------------

/** Each item's first acknowledgement by the sink of its final version. */
class FinalAcks {
  readonly ackedAt = new Map<string, number>();
  ackedLive = 0;
  constructor(private readonly finals: Map<string, Final>) {}
  note(itemId: string, version: number, at: number): void {
    const final = this.finals.get(itemId);
    if (!final || final.version !== version || this.ackedAt.has(itemId)) return;
    this.ackedAt.set(itemId, at);
    if (final.op !== 'delete') this.ackedLive++;
  }
}

/** Wraps the in-process sink: records when the sink acknowledged the write of an item's final version. */
class TimedSink implements VectorSink {
  constructor(
    private readonly inner: VectorSink,
    private readonly acks: FinalAcks,
  ) {}
  get kind() {
    return this.inner.kind;
  }
  get remote() {
    return this.inner.remote;
  }
  get collection() {
    return this.inner.collection;
  }
  open() {
    return this.inner.open();
  }
  async upsert(records: SinkRecord[]) {
    await this.inner.upsert(records);
    const now = Date.now();
    for (const r of records) this.acks.note(r.itemId, r.payload.version, now);
  }
  async delete(deletes: SinkDelete[]) {
    await this.inner.delete(deletes);
    const now = Date.now();
    for (const d of deletes) this.acks.note(d.itemId, d.version, now);
  }
  async write(batch: SinkBatch) {
    const result = await this.inner.write(batch);
    const now = Date.now();
    const missing = new Set(result.missing);
    for (const r of batch.upserts) this.acks.note(r.itemId, r.payload.version, now);
    for (const u of batch.payloads) if (!missing.has(u.itemId)) this.acks.note(u.itemId, u.payload.version, now);
    for (const d of batch.deletes) this.acks.note(d.itemId, d.version, now);
    return result;
  }
  async updatePayload(updates: PayloadUpdate[]) {
    const result = await this.inner.updatePayload(updates);
    const now = Date.now();
    const missing = new Set(result.missing);
    for (const u of updates) if (!missing.has(u.itemId)) this.acks.note(u.itemId, u.payload.version, now);
    return result;
  }
  retrieve(...a: Parameters<VectorSink['retrieve']>) {
    return this.inner.retrieve(...a);
  }
  search(...a: Parameters<VectorSink['search']>) {
    return this.inner.search(...a);
  }
  scan(...a: Parameters<VectorSink['scan']>) {
    return this.inner.scan(...a);
  }
  count() {
    return this.inner.count();
  }
  drop() {
    return this.inner.drop();
  }
  close() {
    return this.inner.close();
  }
}

interface Verification {
  ok: boolean;
  problems: string[];
  /** Live item -> Date.parse(payload.indexed_at). */
  indexedAt: Map<string, number>;
}

/** Reads the whole sink: every live item at its final version, nothing else. */
async function verifySink(sink: VectorSink, workload: Workload): Promise<Verification> {
  const problems: string[] = [];
  const indexedAt = new Map<string, number>();
  for await (const record of sink.scan({ pageSize: 1000 })) {
    const final = workload.finals.get(record.itemId);
    if (!final) problems.push(`${record.itemId}: not in the workload`);
    else if (final.op === 'delete') problems.push(`${record.itemId}: deleted at version ${final.version}, still in the sink at ${record.payload.version}`);
    else if (record.payload.version !== final.version) problems.push(`${record.itemId}: version ${record.payload.version} in the sink, ${final.version} expected`);
    else indexedAt.set(record.itemId, Date.parse(record.payload.indexed_at));
  }
  if (indexedAt.size !== workload.expectedLive) problems.push(`${workload.expectedLive - indexedAt.size} live item(s) missing or stale`);
  return { ok: problems.length === 0, problems, indexedAt };
}

/** A worker process under measurement. */
interface Child {
  name: string;
  roles: string;
  worker: WorkerProcess;
  metricsPort: number;
  spawnedAt: number;
  readyAt: number | undefined;
  peakRssKib: number;
  ticksAtStart: number;
  ticksAtEnd: number;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function rssKib(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15). */
function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return Number.NaN;
  }
}

function clockTicksPerSecond(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

async function isReady(port: number): Promise<boolean> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

/** Sum of a counter's samples on a worker's /metrics (the local provider's requests and tokens). */
async function scrapeCounter(port: number, name: string): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  } catch {
    return Number.NaN;
  }
}

/**
 * SIGTERM (the worker drains and leaves the consumer group), SIGKILL after 15 s. After a Ctrl-C the
 * worker, in the terminal's process group, got the SIGINT too and is already draining: a SIGTERM
 * now would be its second signal (exit at once, without leaving the group), so it is given 10 s
 * to finish first.
 */
async function stopChild(child: Child, interrupted: boolean): Promise<void> {
  const { worker } = child;
  const running = () => worker.child.exitCode === null && worker.child.signalCode === null;
  if (running() && interrupted) await Promise.race([worker.exited, sleep(10_000)]);
  if (!running()) return;
  worker.child.kill('SIGTERM');
  const exited = await Promise.race([worker.exited.then(() => true), sleep(15_000).then(() => false)]);
  if (!exited) {
    log(`  ${child.name} did not stop within 15 s of SIGTERM: SIGKILL`);
    worker.child.kill('SIGKILL');
    await worker.exited;
  }
}

/**
 * The roles of the two worker processes. LanceDB takes one writer per table: one process ingests
 * and embeds, the other writes (measured faster than a writer that also ingests and embeds beside
 * a second front process: 3,158 against 2,586 events/s on 60k events). Qdrant: both do everything.
 */
function processRoles(option: string | undefined, sink: string | undefined): string[] {
  if (option === undefined) return sink === 'lancedb' ? ['ingest,embed', 'write'] : ['ingest,embed,write', 'ingest,embed,write'];
  const roles = option.split(';').map((r) => r.trim());
  const all = roles.flatMap((r) => r.split(','));
  if (roles.length !== 2 || !['ingest', 'embed', 'write'].every((role) => all.includes(role)) || all.some((role) => !['ingest', 'embed', 'write'].includes(role))) {
    throw new Error(`--roles takes two processes' roles, e.g. "ingest,embed;write", covering ingest, embed and write; got "${option}"`);
  }
  if (sink === 'lancedb' && roles.filter((r) => r.split(',').includes('write')).length > 1) throw new Error('--roles: LanceDB takes one writer per table; give the write role to one process');
  return roles;
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      events: { type: 'string' },
      catalog: { type: 'string' },
      rate: { type: 'string' },
      workers: { type: 'string', default: '1' },
      /** With --workers 2: each process's roles, `;` between them (default below, by sink). */
      roles: { type: 'string' },
      'stub-latency-ms': { type: 'string', default: '0' },
      sink: { type: 'string', default: 'lancedb' },
      provider: { type: 'string', default: 'stub' },
      json: { type: 'string' },
      'compare-naive': { type: 'boolean', default: false },
      'max-seconds': { type: 'string', default: '60' },
    },
  });
  const workers = Number(args.workers);
  if (workers !== 1 && workers !== 2) throw new Error(`--workers must be 1 or 2, got "${args.workers}"`);
  if (workers === 1 && args.roles !== undefined) throw new Error('--roles splits the roles over two processes: use it with --workers 2 (--workers 1 runs every role in this process)');
  const roles = workers === 2 ? processRoles(args.roles, args.sink) : [];
  const rate = args.rate === undefined ? undefined : nonNegative('--rate', args.rate);
  if (rate === 0) throw new Error('--rate must be above 0');
  const stubLatencyMs = nonNegative('--stub-latency-ms', args['stub-latency-ms']);
  if (args['compare-naive'] && args.provider !== 'stub') throw new Error('--compare-naive needs --provider stub (the naive pipeline calls the embeddings API)');

  const workload = loadWorkload({ events: args.events, catalog: args.catalog });
  const events = workload.lines.length;
  const cleanup = new Cleanup();
  let figures: Figures | undefined;
  let runConfig: Record<string, unknown> | undefined;
  try {
    const services = await startServices('bench', { sink: args.sink, provider: args.provider, stubLatencyMs }, cleanup);
    const { config, stub, redis, run } = services;
    const mode = rate === undefined ? 'throughput' : 'rate';
    runConfig = {
      mode,
      events,
      items: workload.finals.size,
      live_items_at_end: workload.expectedLive,
      workload: workload.source,
      rate: rate ?? null,
      workers,
      processes: workers === 1 ? 'in-process (startPipeline)' : 'spawned worker processes',
      sink: args.sink,
      provider: args.provider,
      model: config.embeddings.model,
      dimensions: config.embeddings.dimensions,
      stub_latency_ms: args.provider === 'stub' ? stubLatencyMs : null,
      kafka_partitions: PARTITIONS,
      latency: workers === 1 ? 'produced (last event) -> sink acknowledged the final version' : 'indexed_at - produced (last event); excludes the sink call',
      machine: machine(),
    };
    log(
      `benchmark (${mode} mode${rate ? `, ${rate} events/s offered` : ''}): ${events} events, ${workload.finals.size} items (${workload.expectedLive} live at the end) from ${workload.source}; ` +
        `provider ${config.embeddings.provider} (${config.embeddings.model}${stub ? `, stub latency ${stubLatencyMs} ms` : ''}); sink ${config.sink.kind}${args.sink === 'qdrant-contract' ? ' (contract server)' : ''}; ` +
        `${workers === 1 ? 'all roles in this process' : '2 worker processes'}; ${os.cpus().length} cores`,
    );

    // The bench's own polling reads both queues' counts from Redis; measured before the pipeline
    // runs and taken out of the Redis figure.
    const queueConnection = new Redis(config.redis.url, { maxRetriesPerRequest: null });
    const embedQueue = new Queue(EMBED_QUEUE, { connection: queueConnection, prefix: run });
    const writeQueue = new Queue(WRITE_QUEUE, { connection: queueConnection, prefix: run });
    cleanup.add('bench queues', async () => {
      await embedQueue.close();
      await writeQueue.close();
      queueConnection.disconnect();
    });
    const jobTypes = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children'] as const;
    const backlog = async () => {
      const [e, w] = await Promise.all([embedQueue.getJobCounts(...jobTypes), writeQueue.getJobCounts(...jobTypes)]);
      const sum = (c: Record<string, number>) => Object.values(c).reduce((s, v) => s + v, 0);
      return { embed: sum(e), write: sum(w) };
    };
    let pollCost = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 3; i++) {
      const before = await redisCommands(redis);
      await backlog();
      pollCost = Math.min(pollCost, (await redisCommands(redis)) - before - 1);
    }

    const producedAt: ProducedAt = new Map();
    if (mode === 'throughput') await produceAll(services, workload.lines, producedAt);

    // ---- start the indexer ----
    const acks = new FinalAcks(workload.finals);
    let pipeline: Pipeline | undefined;
    let timedSink: TimedSink | undefined;
    const children: Child[] = [];
    let reader: VectorSink | undefined;
    const tck = clockTicksPerSecond();
    let rssTimer: NodeJS.Timeout | undefined;
    let peakRss = process.memoryUsage().rss;
    const sampleRss = () => {
      if (workers === 1) peakRss = Math.max(peakRss, process.memoryUsage().rss);
      for (const c of children) c.peakRssKib = Math.max(c.peakRssKib, rssKib(c.worker.child.pid ?? -1));
    };

    if (workers === 1) {
      timedSink = new TimedSink(createSink(config.sink, config.embeddings.dimensions), acks);
      pipeline = await startPipeline(config, { roles: ['ingest', 'embed', 'write'], logger: silentLogger, sink: timedSink });
      const started = pipeline;
      cleanup.add('pipeline', () => started.close());
    } else {
      const env = { ...process.env, ...services.overrides, KAFKA_BROKERS: config.kafka.brokers.join(','), REDIS_URL: config.redis.url, LOG_LEVEL: 'warn' };
      for (const [i, r] of roles.entries()) {
        const metricsPort = await freePort();
        const worker = spawnWorker(r, { ...env, METRICS_PORT: String(metricsPort) });
        const child: Child = { name: `worker ${i + 1} (${r})`, roles: r, worker, metricsPort, spawnedAt: Date.now(), readyAt: undefined, peakRssKib: 0, ticksAtStart: 0, ticksAtEnd: Number.NaN };
        children.push(child);
        cleanup.add(child.name, () => stopChild(child, cleanup.interrupted));
        // Should the bench leave without its clean-up (a second Ctrl-C), the workers must not outlive it.
        process.on('exit', () => {
          if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGTERM');
        });
      }
      // Ready: startPipeline has returned in the process (its /readyz answers 200).
      const deadline = Date.now() + 120_000;
      while (children.some((c) => c.readyAt === undefined)) {
        for (const c of children) {
          if (c.worker.child.exitCode !== null) throw new Error(`${c.name} exited with code ${c.worker.child.exitCode} before it was ready:\n${c.worker.output()}`);
          if (c.readyAt === undefined && (await isReady(c.metricsPort))) c.readyAt = Date.now();
        }
        // Throughput mode: the clock starts when the first process is ready, it works from then on.
        if (mode === 'throughput' && children.some((c) => c.readyAt !== undefined)) break;
        if (Date.now() > deadline) throw new Error(`worker processes not ready within 120 s:\n${children.map((c) => c.worker.output()).join('\n')}`);
        await sleep(20);
      }
    }

    const openReader = async (): Promise<VectorSink> => {
      // Another process writes: a fresh connection sees its latest commits (LanceDB does not
      // re-check a table it holds open by default).
      const sink = createSink(config.sink, config.embeddings.dimensions);
      await sink.open();
      return sink;
    };
    const sinkCount = async (): Promise<number> => {
      if (timedSink) return timedSink.count();
      // The collection is created by a writer process: do not race it.
      if (!children.some((c) => c.readyAt !== undefined && c.roles.includes('write'))) return 0;
      if (args.sink === 'qdrant-contract') {
        reader ??= await openReader();
        return reader.count();
      }
      const fresh = await openReader();
      try {
        return await fresh.count();
      } finally {
        await fresh.close();
      }
    };
    cleanup.add('sink reader', () => reader?.close());

    const progress = { sent: mode === 'throughput' ? events : 0 };
    let production: Promise<number> | undefined;
    let productionError: unknown;
    if (mode === 'rate') {
      await waitForStableGroup(services, workers === 1 ? 1 : roles.filter((r) => r.split(',').includes('ingest')).length);
      log(`  pipeline ready; producing ${events} events at ${rate} events/s (about ${((events / (rate ?? 1)) || 0).toFixed(0)} s)`);
    }

    // ---- the timed window ----
    const commandsBefore = await redisCommands(redis);
    const cpuBefore = process.cpuUsage();
    const windowStart = Date.now();
    for (const c of children) c.ticksAtStart = cpuTicks(c.worker.child.pid ?? -1);
    rssTimer = setInterval(sampleRss, 200);
    cleanup.add('RSS sampler', () => clearInterval(rssTimer));
    if (mode === 'rate') {
      production = produceAtRate(services, workload.lines, rate as number, producedAt, progress);
      production.catch((error: unknown) => (productionError = error));
    }

    let polls = 0;
    let lastReport = windowStart;
    let windowEnd = 0;
    let verification: Verification | undefined;
    let lastChange = { at: windowStart, state: '' };
    for (;;) {
      await cleanup.parkIfInterrupted();
      if (productionError) throw productionError;
      for (const c of children) {
        if (c.readyAt === undefined && (await isReady(c.metricsPort))) c.readyAt = Date.now();
        if (c.worker.child.exitCode !== null) throw new Error(`${c.name} exited with code ${c.worker.child.exitCode}:\n${c.worker.output()}`);
      }
      const observedAt = Date.now();
      const [queues, count, lag] = await Promise.all([backlog(), sinkCount(), ingestLag(services)]);
      polls++;
      if (Date.now() - lastReport >= PROGRESS_EVERY_MS) {
        lastReport = Date.now();
        const produced = mode === 'rate' ? `${progress.sent}/${events} produced, ` : '';
        const acked = timedSink ? ` (${acks.ackedLive} at their final version)` : '';
        log(`  ${((Date.now() - windowStart) / 1000).toFixed(1)} s: ${produced}${count}/${workload.expectedLive} items in the sink${acked}; backlog: ${lag} events in Kafka, ${queues.embed} embed jobs, ${queues.write} write jobs`);
      }
      const state = `${progress.sent}/${count}/${acks.ackedLive}/${lag}/${queues.embed}/${queues.write}`;
      if (state !== lastChange.state) lastChange = { at: observedAt, state };
      else if (observedAt - lastChange.at > STALL_MS) {
        throw new Error(`no progress for ${STALL_MS / 1000} s (${count}/${workload.expectedLive} items in the sink, ${lag} events in Kafka, ${queues.embed} embed and ${queues.write} write jobs; dead letters under ${run}:*)`);
      }
      const drained = progress.sent === events && lag === 0 && queues.embed === 0 && queues.write === 0 && count === workload.expectedLive;
      if (drained && timedSink && acks.ackedLive === workload.expectedLive) {
        windowEnd = observedAt;
        break;
      }
      if (drained && !timedSink) {
        // Processes: only the sink tells which versions it holds; read it all (outside the clock's
        // favour: the window ends at the observation, the scan is not counted).
        const fresh = await openReader();
        try {
          verification = await verifySink(fresh, workload);
        } finally {
          await fresh.close();
        }
        if (verification.ok) {
          windowEnd = observedAt;
          break;
        }
      }
      await sleep(POLL_MS);
    }
    clearInterval(rssTimer);
    const seconds = (windowEnd - windowStart) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    const commands = (await redisCommands(redis)) - commandsBefore - polls * pollCost;
    for (const c of children) c.ticksAtEnd = cpuTicks(c.worker.child.pid ?? -1);
    const productionSeconds = production ? await production : undefined;

    // Embeddings: counted at the stub (both modes alike), else from the indexer's metrics.
    let requests: number;
    let tokens: number;
    if (stub) {
      const stats = await stub.stats();
      requests = stats.served;
      tokens = stats.tokens;
    } else if (pipeline) {
      requests = (await pipeline.metrics.embeddingRequests.get()).values.reduce((s, v) => s + v.value, 0);
      tokens = (await pipeline.metrics.embeddingTokens.get()).values.reduce((s, v) => s + v.value, 0);
    } else {
      requests = 0;
      tokens = 0;
      for (const c of children) {
        requests += await scrapeCounter(c.metricsPort, 'indexer_embedding_requests_total');
        tokens += await scrapeCounter(c.metricsPort, 'indexer_embedding_tokens_total');
      }
    }

    // Latency per item: from producing its last event to its final version being in the sink.
    const latencies: number[] = [];
    let latencyCount = 0;
    if (timedSink) {
      for (const [id, at] of acks.ackedAt) {
        const produced = producedAt.get(id);
        if (produced !== undefined) latencies.push(at - produced);
      }
      latencyCount = latencies.length;
      verification = await verifySink(timedSink, workload);
    } else if (verification) {
      for (const [id, at] of verification.indexedAt) {
        const produced = producedAt.get(id);
        if (produced !== undefined && Number.isFinite(at)) latencies.push(at - produced);
      }
      latencyCount = latencies.length;
    }

    const cpuSeconds = workers === 1 ? (cpu.user + cpu.system) / 1e6 : children.reduce((s, c) => s + (c.ticksAtEnd - c.ticksAtStart) / tck, 0);
    const peakRssMib = workers === 1 ? peakRss / 2 ** 20 : children.reduce((s, c) => s + c.peakRssKib / 1024, 0);
    figures = {
      events_per_s: events / seconds,
      redis_commands_per_event: commands / events,
      ...latencyFigures(latencies),
      embed_requests_per_event: requests / events,
      tokens_per_event: tokens / events,
      peak_rss_mib: peakRssMib,
      cpu_s_per_1k_events: cpuSeconds / (events / 1000),
    };

    log('');
    if (verification && !verification.ok) log(`SINK CHECK FAILED: ${verification.problems.slice(0, 5).join('; ')}${verification.problems.length > 5 ? ` (+${verification.problems.length - 5} more)` : ''}`);
    else log(`sink checked: ${workload.expectedLive} live items at their final version, ${workload.finals.size - workload.expectedLive} deleted items gone`);
    const latencyLabel =
      (workers === 1 ? 'produced -> sink ack' : 'indexed_at - produced, excludes the sink call') + (mode === 'throughput' ? '; THROUGHPUT MODE: mostly time waiting in the backlog, use --rate for latency' : '');
    const rows: [string, string, string][] = [
      ['events/s end to end', fmt(figures.events_per_s), `${events} events in ${seconds.toFixed(2)} s${mode === 'throughput' ? ', from the pipeline start, over a backlog' : `, from the first event produced (production took ${productionSeconds?.toFixed(1)} s)`}`],
      ['latency p50 (ms)', fmt(figures.latency_ms_p50), `${latencyCount} items; ${latencyLabel}`],
      ['latency p95 (ms)', fmt(figures.latency_ms_p95), ''],
      ['latency p99 (ms)', fmt(figures.latency_ms_p99), ''],
      ['embeddings requests/event', fmt(figures.embed_requests_per_event, 4), `${requests} requests${stub ? ' (counted at the stub)' : ''}`],
      ['tokens/event', fmt(figures.tokens_per_event, 1), `${tokens} tokens`],
      ['Redis commands/event', fmt(figures.redis_commands_per_event, 1), `${fmt(commands)} commands (INFO commandstats, whole server; the bench's polling, ${polls} x ${pollCost}, taken out)`],
      [
        'peak RSS (MiB)',
        fmt(figures.peak_rss_mib),
        workers === 1 ? 'this process: the pipeline plus the contract server and workload (the stub runs in its own process)' : `sum of ${children.map((c) => `${c.name}: ${fmt(c.peakRssKib / 1024)}`).join(', ')}`,
      ],
      [
        'CPU s per 1k events',
        fmt(figures.cpu_s_per_1k_events, 3),
        workers === 1
          ? `${cpuSeconds.toFixed(1)} s user+system of this process (includes the contract server and the bench's polling; not the stub, which runs in its own process)`
          : `${cpuSeconds.toFixed(1)} s user+system of the worker processes (/proc/<pid>/stat, ${tck} ticks/s; the stub runs in its own process, not counted)`,
      ],
    ];
    if (children.length > 0) rows.push(['process start-up', '', children.map((c) => `${c.name}: ${c.readyAt ? `${((c.readyAt - c.spawnedAt) / 1000).toFixed(1)} s to ready` : 'not ready before the run ended'}`).join(', ')]);
    printTable(rows);
    if (args.json) writeFigures(args.json, figures, runConfig);
  } catch (error) {
    await cleanup.parkIfInterrupted(); // the signal handler reports and exits
    throw error;
  } finally {
    await cleanup.run();
  }

  if (args['compare-naive'] && figures) await compareNaive(args, figures);
}

/** Runs bench/naive.bench.ts as its own process on the same workload and prints both. */
async function compareNaive(args: { events?: string | undefined; catalog?: string | undefined; rate?: string | undefined; sink: string; 'stub-latency-ms': string; 'max-seconds': string; json?: string | undefined }, pipeline: Figures): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-naive-'));
  const json = args.json ? args.json.replace(/(\.json)?$/, '.naive.json') : join(dir, 'naive.json');
  const argv = ['--import', 'tsx', 'bench/naive.bench.ts', '--sink', args.sink, '--stub-latency-ms', args['stub-latency-ms'], '--max-seconds', args['max-seconds'], '--json', json];
  if (args.events !== undefined) argv.push('--events', args.events);
  if (args.catalog !== undefined) argv.push('--catalog', args.catalog);
  if (args.rate !== undefined) argv.push('--rate', args.rate);
  log(`\n--- naive pipeline (bench/naive.bench.ts, its own process) ---`);
  const code = await new Promise<number | null>((resolve) => spawn(process.execPath, argv, { cwd: ROOT, stdio: 'inherit' }).on('exit', resolve));
  try {
    if (code !== 0 || !existsSync(json)) {
      log(`naive benchmark failed (exit code ${code}): no comparison`);
      return;
    }
    const naive = JSON.parse(readFileSync(json, 'utf8')) as Figures & { config: { processed_events?: number; events?: number } };
    log('\n--- comparison ---');
    const keys: [keyof Figures, string, number][] = [
      ['events_per_s', 'events/s', 0],
      ['latency_ms_p50', 'latency p50 (ms)', 0],
      ['latency_ms_p95', 'latency p95 (ms)', 0],
      ['latency_ms_p99', 'latency p99 (ms)', 0],
      ['embed_requests_per_event', 'embeddings requests/event', 4],
      ['tokens_per_event', 'tokens/event', 1],
      ['redis_commands_per_event', 'Redis commands/event', 1],
      ['peak_rss_mib', 'peak RSS (MiB)', 0],
      ['cpu_s_per_1k_events', 'CPU s per 1k events', 3],
    ];
    const rows: [string, string, string][] = [['figure', 'indexer', 'naive']];
    for (const [key, label, digits] of keys) rows.push([label, fmt(pipeline[key], digits), fmt(naive[key] ?? Number.NaN, digits)]);
    const width = Math.max(...rows.map((r) => r[0].length));
    for (const [a, b, c] of rows) log(`  ${a.padEnd(width)}  ${b.padStart(12)}  ${c.padStart(12)}`);
    log(`  (naive: ${naive.config.processed_events ?? '?'} of ${naive.config.events ?? '?'} events processed within --max-seconds ${args['max-seconds']})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isEntryPoint(import.meta.url)) {
  try {
    await main();
    process.exit(0);
  } catch (error) {
    process.stderr.write(`benchmark failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  }
}
