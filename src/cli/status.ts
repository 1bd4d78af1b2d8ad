import { setTimeout as sleep } from 'node:timers/promises';
import { Command, InvalidArgumentError } from 'commander';
import { Redis } from 'ioredis';
import { redactUrl, type Config } from '../config/config.js';
import { errorMessage } from '../core/errors.js';
import { createKafka } from '../ingest/kafka.js';
import { KafkaLagReader } from '../observability/kafka-lag.js';
import { silentLogger } from '../observability/logger.js';
import { gatherStatus, type GenerationReport, type QueueReport, type StatusReport } from '../observability/status-report.js';
import type { WorkerStatus } from '../observability/worker-heartbeat.js';
import { configOrExit } from './context.js';

/** How long status waits for Redis before saying it is unreachable. */
const REDIS_CONNECT_TIMEOUT_MS = 3_000;

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0.5) throw new InvalidArgumentError('expected a number of seconds, at least 0.5 (e.g. --interval 2)');
  return n;
}

/** `indexer status [--json] [--watch] [--interval <s>]`. */
export function statusCommand(): Command {
  return new Command('status')
    .description('one screen: queues (and why paused or held), Kafka lag, events/s and items written/s, dead letters, embeddings circuits and rate limits, running backfills, usage and cost')
    .option('--json', 'print the report as JSON (with --watch: one line per refresh)')
    .option('--watch', 'refresh until Ctrl-C')
    .option('--interval <seconds>', 'refresh every this many seconds, with --watch', seconds, 2)
    .action(async (opts: { json?: boolean; watch?: boolean; interval: number }) => {
      const config = configOrExit();
      const reporter = new StatusReporter(config);
      try {
        if (opts.watch) await watch(reporter, opts.json ?? false, opts.interval * 1000);
        else await once(reporter, opts.json ?? false);
      } finally {
        await reporter.close();
      }
    });
}

async function once(reporter: StatusReporter, json: boolean): Promise<void> {
  let report: StatusReport;
  try {
    report = await reporter.gather();
  } catch (error) {
    process.stderr.write(`indexer status: ${errorMessage(error)}\n`);
    process.exitCode = 1;
    return;
  }
  process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report));
}

async function watch(reporter: StatusReporter, json: boolean, intervalMs: number): Promise<void> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const tty = process.stdout.isTTY === true;
  try {
    while (!stop.signal.aborted) {
      let screen: string;
      try {
        const report = await reporter.gather();
        screen = json ? `${JSON.stringify(report)}\n` : formatStatus(report);
      } catch (error) {
        // A watch outlives an outage: it says so and tries again at the next refresh.
        screen = json ? `${JSON.stringify({ version: 1, at: new Date().toISOString(), error: errorMessage(error) })}\n` : `indexer status: ${errorMessage(error)}\n`;
      }
      if (json) process.stdout.write(screen);
      else process.stdout.write(tty ? `\x1b[2J\x1b[H${screen}(every ${intervalMs / 1000} s; Ctrl-C to stop)\n` : `${screen}\n`);
      await sleep(intervalMs, undefined, { signal: stop.signal }).catch(() => undefined);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * The connections status reads through: Redis, failing fast (the workers' connections wait out
 * an outage; a status screen should say it instead), and one Kafka admin for the lag.
 */
class StatusReporter {
  private redis: Redis | undefined;
  private readonly lag: KafkaLagReader;

  constructor(private readonly config: Config) {
    this.lag = new KafkaLagReader(createKafka(config.kafka, silentLogger));
  }

  async gather(): Promise<StatusReport> {
    return gatherStatus(this.config, await this.connected(), this.lag);
  }

  async close(): Promise<void> {
    this.redis?.disconnect();
    await this.lag.close();
  }

  private async connected(): Promise<Redis> {
    if (this.redis?.status === 'ready') return this.redis;
    this.redis?.disconnect();
    const url = this.config.redis.url;
    const redis = new Redis(url, { lazyConnect: true, connectTimeout: REDIS_CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null, connectionName: 'indexer-status' });
    // connect() only says "Connection is closed."; the event has the cause (ECONNREFUSED, ...).
    let cause: unknown;
    redis.on('error', (error) => (cause = error));
    this.redis = redis;
    try {
      await redis.connect();
    } catch (error) {
      redis.disconnect();
      this.redis = undefined;
      throw new Error(`cannot reach Redis at ${redactUrl(url)} (${errorMessage(cause ?? error)}): is it running, and is REDIS_URL right?`);
    }
    return redis;
  }
}

// ---- the human screen -------------------------------------------------------------------------

/** The report as one screen of aligned sections, no colours. */
export function formatStatus(report: StatusReport): string {
  const many = report.generations.length > 1;
  const serving = report.generations.find((g) => g.serving);
  const out: string[] = [];
  out.push(`indexer status  ${report.at}  prefix ${report.prefix}  serving generation ${report.servingGeneration}${serving ? ` (${serving.model})` : ''}`);
  const r = report.rates;
  out.push(
    r.workers === 0
      ? 'throughput: no live workers (none has published a heartbeat in the last 15 s)'
      : `throughput, last ${Math.round(r.windowSeconds)} s over ${r.workers} worker${r.workers === 1 ? '' : 's'}: ${rate(r.eventsPerSecond)} events/s consumed, ${rate(r.itemsWrittenPerSecond)} items/s written`,
  );
  for (const error of report.errors) out.push(`! ${error}`);

  section(out, 'QUEUES', table(['queue', 'waiting', 'active', 'delayed', 'failed', 'state'], report.generations.flatMap((g) => g.queues.map((q) => [q.queue, String(q.waiting), String(q.active), String(q.delayed), String(q.failed), queueState(q)])), [1, 2, 3, 4]));

  for (const g of report.generations) section(out, `KAFKA LAG${suffix(g, many)}  group ${g.kafka.group}`, kafkaLines(g));

  section(
    out,
    'EMBEDDINGS ENDPOINTS',
    report.embeddings.length === 0
      ? [report.workers.some((w) => w.roles.includes('embed')) ? 'no remote endpoints (the local hashing provider)' : 'no live embed worker']
      : table(
          ['endpoint', ...(many ? ['generation'] : []), 'circuit', 'workers closed/half-open/open', 'rpm', 'tpm', 'url'],
          report.embeddings.map((e) => [e.name, ...(many ? [String(e.generation)] : []), e.circuit.replace('_', '-'), `${e.workers.closed}/${e.workers.half_open}/${e.workers.open}`, limit(e.rpm), limit(e.tpm), e.url]),
          many ? [4, 5] : [3, 4],
        ),
  );

  section(
    out,
    'WORKERS',
    report.workers.length === 0
      ? ['none live']
      : table(
          ['worker', 'roles', 'up', 'events/s', 'written/s', 'notes'],
          report.workers.map((w) => [w.id, w.roles.join(','), duration((Date.parse(report.at) - Date.parse(w.startedAt)) / 1000), rate(w.rates.eventsPerSecond), rate(w.rates.itemsWrittenPerSecond), workerNotes(w)]),
          [3, 4],
        ),
  );

  for (const g of report.generations) {
    const d = g.deadLetters;
    const rows = d.byStageAndCode.map((c) => [c.stage, c.code, String(c.count)]);
    if (d.uncounted > 0) rows.push(['?', '(older than the per-stage counts)', String(d.uncounted)]);
    section(out, `DEAD LETTERS${suffix(g, many)}  ${d.total}`, d.total === 0 ? [] : [...table(['stage', 'code', 'count'], rows, [2]), ...(d.uncounted < 0 ? [`(the counts exceed the stream by ${-d.uncounted}: letters trimmed at the cap)`] : []), 'list them: indexer dlq list']);
  }

  for (const g of report.generations) {
    section(
      out,
      `BACKFILLS${suffix(g, many)}`,
      g.backfills.length === 0
        ? ['none running']
        : table(
            ['id', 'state', 'source', 'phase', 'read', 'enqueued', 'unchanged', 'failed', 'total', 'rows/s', 'eta'],
            g.backfills.map((b) => [b.id, b.state, b.source, b.progress?.phase ?? '-', num(b.progress?.read), num(b.progress?.enqueued), num(b.progress?.unchanged), num(b.progress?.failed), num(b.progress?.total), b.rowsPerSecond === null ? '-' : rate(b.rowsPerSecond), b.etaSeconds === null ? '-' : duration(b.etaSeconds)]),
            [4, 5, 6, 7, 8, 9],
          ),
    );
  }

  const usage = report.generations.flatMap((g) => g.usage.map((u) => ({ ...u, generation: g.id })));
  const unpriced = report.usage.modelsWithoutPrice.length > 0 ? ` (no price for ${report.usage.modelsWithoutPrice.join(', ')}: set EMBEDDINGS_PRICES)` : '';
  section(
    out,
    `USAGE  estimated ${usd(report.usage.totalCostUsd)} so far${unpriced}`,
    usage.length === 0
      ? ['no embeddings requests yet']
      : table(
          ['model', ...(many ? ['generation'] : []), 'requests', 'inputs', 'tokens', 'cost'],
          usage.map((u) => [u.model, ...(many ? [String(u.generation)] : []), String(u.requests), String(u.inputs), String(u.tokens), u.estimatedCostUsd === null ? 'no price' : usd(u.estimatedCostUsd)]),
          many ? [2, 3, 4, 5] : [1, 2, 3, 4],
        ),
  );
  return `${out.join('\n')}\n`;
}

function queueState(q: QueueReport): string {
  if (q.paused) {
    const why = q.pauseReason;
    return why ? `PAUSED since ${why.at}: ${why.code}: ${why.message}. ${why.fix}` : 'PAUSED (no reason recorded: paused by hand or an older version); `indexer resume` resumes it';
  }
  if (q.held.length > 0) return `held: ${q.held.join('; ')}`;
  return q.waiting + q.active + q.delayed > 0 ? 'running' : 'idle';
}

function kafkaLines(g: GenerationReport): string[] {
  const k = g.kafka;
  if (k.error) return [`unavailable: ${k.error}`];
  const lines =
    k.partitions.length === 0
      ? [`no partitions (topics ${k.topics.join(', ')})`]
      : [...table(['topic', 'partition', 'committed', 'end', 'lag'], k.partitions.map((p) => [p.topic, String(p.partition), p.committed ?? '-', p.end, String(p.lag)]), [1, 2, 3, 4]), `total lag ${k.totalLag ?? '-'}`];
  if (k.pausedByHighWater.length > 0) lines.push(`ingest waits, queues above QUEUE_HIGH_WATER: ${k.pausedByHighWater.join(', ')}`);
  return lines;
}

function workerNotes(w: WorkerStatus): string {
  const notes: string[] = [];
  for (const g of w.generations) {
    const at = w.generations.length > 1 ? `g${g.generation} ` : '';
    const open = (g.embeddings ?? []).filter((e) => e.circuit !== 'closed');
    if (open.length > 0) notes.push(`${at}circuit ${open.map((e) => `${e.name} ${e.circuit.replace('_', '-')}`).join(', ')}`);
    if (g.sink && !g.sink.available) notes.push(`${at}sink unreachable`);
    if (g.ingest?.pausedByHighWater) notes.push(`${at}ingest above high water`);
  }
  return notes.join('; ');
}

function section(out: string[], title: string, lines: string[]): void {
  out.push('', title, ...lines.map((l) => `  ${l}`));
}

function suffix(g: GenerationReport, many: boolean): string {
  return many ? `  generation ${g.id} (${g.model}${g.serving ? ', serving' : ''})` : '';
}

/** Aligned columns; the columns listed in `right` (numbers) are right-aligned; no trailing spaces. */
export function table(headers: string[], rows: string[][], right: number[] = []): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right.includes(i) ? c.padStart(widths[i] ?? 0) : i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)];
}

export function rate(perSecond: number): string {
  return perSecond >= 100 ? String(Math.round(perSecond)) : perSecond.toFixed(1);
}

/** 45s, 12m05s, 3h05m, 2d04h. */
export function duration(totalSeconds: number): string {
  const s = Math.max(0, Math.round(totalSeconds));
  const two = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${two(Math.floor((s % 86400) / 3600))}h`;
}

function usd(amount: number): string {
  return `$${amount.toFixed(4)}`;
}

function num(n: number | undefined): string {
  return n === undefined ? '-' : String(n);
}

function limit(n: number): string {
  return n === 0 ? '-' : String(n);
}
