/**
 * End-to-end benchmark on the local services: produces a catalog into a fresh Kafka topic while
 * the pipeline (all roles, one process) indexes it, and prints
 *   events/s, event-to-sink latency p50/p95/p99 (produce -> sink acknowledged the write),
 *   embeddings requests and tokens per event, Redis commands per event, peak RSS.
 * Figures are printed, never asserted.
 *
 *   npm run services:up
 *   npm run bench -- [--catalog data/sample-catalog.ndjson] [--sink lancedb|qdrant-contract] [--provider stub|local] [--stub-latency-ms 0]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { loadConfig } from '../src/config/config.js';
import { createKafka } from '../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../src/ingest/produce.js';
import { silentLogger } from '../src/observability/logger.js';
import { startPipeline } from '../src/pipeline/pipeline.js';
import { createSink } from '../src/sinks/create-sink.js';
import type { PayloadUpdate, SinkDelete, SinkRecord, VectorSink } from '../src/sinks/vector-sink.js';
import { EmbeddingsStub } from '../test/support/embeddings-stub.js';
import { QdrantContractServer } from '../test/support/qdrant-contract/contract-server.js';

const { values: args } = parseArgs({
  options: {
    catalog: { type: 'string', default: 'data/sample-catalog.ndjson' },
    sink: { type: 'string', default: 'lancedb' },
    provider: { type: 'string', default: 'stub' },
    'stub-latency-ms': { type: 'string', default: '0' },
  },
});

const log = (line: string) => process.stdout.write(`${line}\n`);
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;

async function redisCommands(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  return [...info.matchAll(/calls=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Wraps the sink to time each item from its production to the sink's acknowledgement. */
class TimedSink implements VectorSink {
  constructor(
    private readonly inner: VectorSink,
    private readonly producedAt: Map<string, number>,
    private readonly latencies: number[],
  ) {}
  get kind() {
    return this.inner.kind;
  }
  get collection() {
    return this.inner.collection;
  }
  open() {
    return this.inner.open();
  }
  async upsert(records: SinkRecord[]) {
    await this.inner.upsert(records);
    this.record(records.map((r) => r.itemId));
  }
  async delete(deletes: SinkDelete[]) {
    await this.inner.delete(deletes);
    this.record(deletes.map((d) => d.itemId));
  }
  async updatePayload(updates: PayloadUpdate[]) {
    const result = await this.inner.updatePayload(updates);
    this.record(updates.map((u) => u.itemId));
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
  close() {
    return this.inner.close();
  }
  private record(ids: string[]) {
    const now = Date.now();
    for (const id of ids) {
      const t = this.producedAt.get(id);
      if (t !== undefined) this.latencies.push(now - t);
    }
  }
}

const lines = readFileSync(args.catalog, 'utf8').split('\n').filter((l) => l.trim());
const latest = new Map<string, { version: number; op: string }>();
for (const l of lines) {
  const e = JSON.parse(l) as { id: string; version: number; op?: string };
  if ((latest.get(e.id)?.version ?? -1) < e.version) latest.set(e.id, { version: e.version, op: e.op ?? 'upsert' });
}
const expectedLive = [...latest.values()].filter((s) => s.op !== 'delete').length;

const run = `bench-${Date.now().toString(36)}`;
const stub = new EmbeddingsStub({ dimensions: 384, latencyMs: Number(args['stub-latency-ms']) });
const contract = new QdrantContractServer();
const lancedbDir = mkdtempSync(join(tmpdir(), 'bench-lancedb-'));
const env: Record<string, string | undefined> = { ...process.env, KAFKA_TOPICS: run, KAFKA_GROUP_ID: run, QUEUE_PREFIX: run, COLLECTION: run, LOG_LEVEL: 'silent', LANCEDB_URI: lancedbDir };
if (args.provider === 'stub') Object.assign(env, { EMBEDDINGS_BASE_URL: await stub.start(), EMBEDDINGS_MODEL: 'stub-embedding', EMBEDDINGS_DIMENSIONS: '384', EMBEDDINGS_PROVIDER: 'openai' });
if (args.sink === 'qdrant-contract') Object.assign(env, { SINK: 'qdrant', QDRANT_URL: await contract.start() });
const config = loadConfig(env);

const redis = new Redis(config.redis.url);
const producedAt = new Map<string, number>();
const latencies: number[] = [];
const sink = new TimedSink(createSink(config.sink, config.embeddings.dimensions), producedAt, latencies);
const kafka = createKafka(config.kafka, silentLogger);
await ensureTopic(kafka, run, 4);

log(`benchmark: ${lines.length} events, ${latest.size} items (${expectedLive} live at the end); provider ${config.embeddings.provider} (${config.embeddings.model}); sink ${config.sink.kind}${args.sink === 'qdrant-contract' ? ' (contract server)' : ''}`);
const pipeline = await startPipeline(config, { roles: ['ingest', 'embed', 'write'], logger: silentLogger, sink });
const commandsBefore = await redisCommands(redis);
const started = Date.now();
let peakRss = process.memoryUsage().rss;
const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100);

const produced = produceLines(kafka, run, (function* () {
  for (const line of lines) {
    producedAt.set((JSON.parse(line) as { id: string }).id, Date.now());
    yield line;
  }
})(), { idField: 'id', batchSize: 100 });
await produced;

let lastReport = 0;
for (;;) {
  const count = await sink.count();
  const backlog = (await pipeline.embedQueue.count()) + (await pipeline.writeQueue.count());
  if (Date.now() - lastReport > 2000) {
    lastReport = Date.now();
    log(`  ${((Date.now() - started) / 1000).toFixed(1)} s: ${count}/${expectedLive} items in the sink, ${backlog} jobs queued`);
  }
  if (count === expectedLive && backlog === 0) break;
  await sleep(50);
}
const seconds = (Date.now() - started) / 1000;
clearInterval(rssTimer);
const commands = (await redisCommands(redis)) - commandsBefore;
const requests = (await pipeline.metrics.embeddingRequests.get()).values.reduce((s, v) => s + v.value, 0);
const tokens = (await pipeline.metrics.embeddingTokens.get()).values.reduce((s, v) => s + v.value, 0);
await pipeline.close();
latencies.sort((a, b) => a - b);

log('');
log(`events/s end to end:          ${(lines.length / seconds).toFixed(0)} (${lines.length} events in ${seconds.toFixed(2)} s)`);
log(`event-to-sink latency (ms):   p50 ${percentile(latencies, 50)}  p95 ${percentile(latencies, 95)}  p99 ${percentile(latencies, 99)}  (${latencies.length} writes)`);
log(`embeddings per event:         ${(requests / lines.length).toFixed(4)} requests, ${(tokens / lines.length).toFixed(1)} tokens (${requests} requests, ${tokens} tokens)`);
log(`Redis commands per event:     ${(commands / lines.length).toFixed(1)} (${commands} commands)`);
log(`peak RSS (this process):      ${(peakRss / 1024 / 1024).toFixed(0)} MiB`);

redis.disconnect();
await stub.stop();
await contract.stop();
rmSync(lancedbDir, { recursive: true, force: true });
process.exit(0);
