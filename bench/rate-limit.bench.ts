/**
 * How close two worker processes run to a provider's tokens-per-minute limit without tripping it.
 *
 * The stub enforces a TPM limit the way OpenAI does (a bucket holding a minute's worth, refilled
 * continuously, 429 rate_limit_exceeded with Retry-After, x-ratelimit-* headers on every answer)
 * and answers after 50-150 ms. Two real worker processes (`ingest,embed,write` and `embed`) share
 * one Redis. A catalogue of unique texts larger than the run can embed is produced to Kafka, and
 * for each mode the stub's own log gives:
 *   achieved TPM as a share of the limit, over a steady window that starts once the full bucket
 *   of the first minute has been spent, and the share of requests answered 429.
 * Modes: `configured` (EMBEDDINGS_TPM set to the limit), `learned` (nothing set: limits come from
 * the x-ratelimit headers), `off` (EMBEDDINGS_ADAPT_RATE_LIMITS=false and no TPM: only 429s and
 * Retry-After slow the workers down). Printed, never asserted.
 *
 *   npm run services:up
 *   npm run bench:rate-limit -- [--tpm 60000] [--minutes 1.5] [--modes configured,learned,off]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../src/config/config.js';
import { createKafka } from '../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../src/ingest/produce.js';
import { silentLogger } from '../src/observability/logger.js';
import { EmbeddingsStub, stubTokens } from '../test/support/embeddings-stub.js';
import { deletePrefix, deleteTopics } from '../test/support/helpers.js';
import { spawnWorker, type WorkerProcess } from '../test/support/processes.js';

const { values: args } = parseArgs({
  options: {
    tpm: { type: 'string', default: '60000' },
    minutes: { type: 'string', default: '1.5' },
    modes: { type: 'string', default: 'configured,learned,off' },
    'batch-size': { type: 'string', default: '32' },
  },
});
const TPM = Number(args.tpm);
const WINDOW_MS = Number(args.minutes) * 60_000;
/** The first minute's full bucket is spent within seconds; the window starts after it. */
const WARMUP_MS = 15_000;
const MODES = args.modes.split(',').map((m) => m.trim()) as ('configured' | 'learned' | 'off')[];

const log = (line: string) => process.stdout.write(`${line}\n`);
const WORDS = 'waterproof trail running shoe rock plate grippy outsole gusseted tongue breathable mesh upper cushioned midsole reflective heel loop lightweight durable recycled fabric four season tent snow skirt'.split(' ');

/** Unique product texts of about 40 tokens, enough to outlast the run at the limit. */
function catalogue(run: string): { lines: string[]; tokens: number } {
  const needed = TPM * ((WARMUP_MS + WINDOW_MS) / 60_000 + 1) * 1.3;
  const lines: string[] = [];
  let tokens = 0;
  for (let i = 0; tokens < needed; i++) {
    const words = Array.from({ length: 30 }, (_, w) => WORDS[(i * 7 + w * 13 + Math.floor(i / 11)) % WORDS.length]);
    const text = `${run} product ${i}: ${words.join(' ')}`;
    tokens += stubTokens(text);
    lines.push(JSON.stringify({ id: `p-${i}`, op: 'upsert', version: 1, text, metadata: { i } }));
  }
  return { lines, tokens };
}

async function runMode(mode: (typeof MODES)[number]): Promise<string> {
  const run = `ratebench-${mode}-${Date.now().toString(36)}`;
  const stub = new EmbeddingsStub({ dimensions: 64, latencyMs: 50, latencyJitterMs: 100, rateLimits: { tpm: TPM } });
  const lancedbDir = mkdtempSync(join(tmpdir(), 'ratebench-lancedb-'));
  const env: Record<string, string | undefined> = {
    KAFKA_BROKERS: process.env.KAFKA_BROKERS,
    REDIS_URL: process.env.REDIS_URL,
    KAFKA_TOPICS: run,
    KAFKA_GROUP_ID: run,
    QUEUE_PREFIX: run,
    COLLECTION: run,
    LANCEDB_URI: lancedbDir,
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    EMBEDDINGS_PROVIDER: 'openai',
    EMBEDDINGS_BASE_URL: await stub.start(),
    EMBEDDINGS_MODEL: 'stub-embedding',
    EMBEDDINGS_DIMENSIONS: '64',
    EMBEDDINGS_BATCH_SIZE: args['batch-size'],
    ...(mode === 'configured' ? { EMBEDDINGS_TPM: String(TPM) } : {}),
    ...(mode === 'off' ? { EMBEDDINGS_ADAPT_RATE_LIMITS: 'false' } : {}),
  };
  const config = loadConfig(env);
  const kafka = createKafka(config.kafka, silentLogger);
  await ensureTopic(kafka, run, 4);
  const { lines, tokens } = catalogue(run);
  log(`\n[${mode}] ${lines.length} unique texts, ${tokens} tokens, against ${TPM} tokens/min; 2 worker processes`);
  await produceLines(kafka, run, lines, { idField: 'id', batchSize: 500 });

  const workers: WorkerProcess[] = [spawnWorker('ingest,embed,write', env), spawnWorker('embed', env)];
  const firstAt = await waitForFirstRequest(stub);
  const windowStart = firstAt + WARMUP_MS;
  const windowEnd = windowStart + WINDOW_MS;
  while (Date.now() < windowEnd) {
    await sleep(10_000);
    const elapsed = Date.now() - firstAt;
    const ok = stub.requests.filter((r) => r.status === 200);
    const limited = stub.requests.filter((r) => r.status === 429).length;
    log(`  ${(elapsed / 1000).toFixed(0)} s: ${ok.reduce((s, r) => s + r.tokens, 0)} tokens accepted in ${ok.length} requests, ${limited} answered 429`);
    if (workers.some((w) => w.child.exitCode !== null)) throw new Error(`a worker exited:\n${workers.map((w) => w.output()).join('\n')}`);
  }
  // BENCH_DEBUG=1: the workers' logs (BENCH_LOG_LEVEL, default warn) and the stub's request log.
  if (process.env.BENCH_DEBUG) {
    log(workers.map((w) => w.output()).join('\n'));
    log(stub.requests.map((r) => `${r.at - firstAt}ms:${r.status}:${r.tokens}`).join(' '));
  }
  await Promise.all(workers.map(async (w) => {
    w.child.kill('SIGTERM');
    await w.exited;
  }));
  await stub.stop();
  await deletePrefix(config.redis.url, run);
  await deleteTopics(config.kafka.brokers, [run]);
  rmSync(lancedbDir, { recursive: true, force: true });

  const inWindow = stub.requests.filter((r) => r.at >= windowStart && r.at < windowEnd);
  const accepted = inWindow.filter((r) => r.status === 200);
  // Tokens per minute between the first and the last accepted request of the window (the first's
  // tokens left out): counting whole requests against the window's edges would be off by one request.
  const span = (accepted.at(-1)?.at ?? 0) - (accepted[0]?.at ?? 0);
  const achieved = span > 0 ? (accepted.slice(1).reduce((s, r) => s + r.tokens, 0) * 60_000) / span : 0;
  const all = stub.requests.filter((r) => r.at < windowEnd);
  const share429 = (rs: typeof all) => (rs.length === 0 ? 0 : rs.filter((r) => r.status === 429).length / rs.length);
  const row = `| ${mode} | ${achieved.toFixed(0)} | ${((100 * achieved) / TPM).toFixed(1)}% | ${(100 * share429(inWindow)).toFixed(1)}% (${inWindow.filter((r) => r.status === 429).length}/${inWindow.length}) | ${(100 * share429(all)).toFixed(1)}% (${all.filter((r) => r.status === 429).length}/${all.length}) |`;
  log(row);
  return row;
}

async function waitForFirstRequest(stub: EmbeddingsStub): Promise<number> {
  const deadline = Date.now() + 120_000;
  while (stub.requests.length === 0) {
    if (Date.now() > deadline) throw new Error('no embeddings request within 2 minutes of starting the workers');
    await sleep(50);
  }
  return (stub.requests[0] as { at: number }).at;
}

log(`rate-limit benchmark: stub limit ${TPM} tokens/min, steady window ${WINDOW_MS / 1000} s after a ${WARMUP_MS / 1000} s warm-up, modes ${MODES.join(', ')}`);
const rows: string[] = [];
for (const mode of MODES) rows.push(await runMode(mode));
log('\n| mode | achieved tokens/min (steady window) | share of the limit | requests answered 429 (window) | requests answered 429 (whole run, warm-up included) |');
log('|---|---|---|---|---|');
for (const row of rows) log(row);
process.exit(0);
