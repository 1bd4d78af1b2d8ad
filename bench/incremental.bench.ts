/**
 * What incremental indexing saves: the sample catalog replayed as a live stream in which 30% of
 * the events are metadata-only changes and 20% are duplicates of earlier events, indexed by the
 * full pipeline (all roles, running while events arrive) against the embeddings stub. Prints the
 * tokens the indexer sent against an embed-every-event pipeline on the same stream, and the lower
 * bound (every distinct text embedded once). Tokens are the stub's count (cl100k_base, as OpenAI's
 * usage counts them), the same measure on both sides.
 *
 * --chunks N produces the stream in N chunks and lets the pipeline drain after each: nothing is
 * coalesced across chunks, so the figure shows what content hashes and versions save by themselves.
 *
 *   npm run services:up && npx tsx bench/incremental.bench.ts [--catalog data/sample-catalog.ndjson] [--events 10000] [--chunks 1]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../src/config/config.js';
import { createKafka } from '../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../src/ingest/produce.js';
import { silentLogger } from '../src/observability/logger.js';
import { startPipeline } from '../src/pipeline/pipeline.js';
import { EmbeddingsStub, stubTokens } from '../test/support/embeddings-stub.js';

const { values: args } = parseArgs({ options: { catalog: { type: 'string', default: 'data/sample-catalog.ndjson' }, events: { type: 'string', default: '10000' }, chunks: { type: 'string', default: '1' } } });
const log = (line: string) => process.stdout.write(`${line}\n`);

interface Event {
  id: string;
  op?: string;
  version: number;
  updated_at?: string;
  text?: string;
  metadata?: Record<string, unknown>;
}

// A seeded generator: the same stream on every run.
let seed = 42;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);

const creates = readFileSync(args.catalog, 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Event)
  .filter((e) => e.version === 1);
const total = Math.max(Number(args.events), creates.length * 2);
const current = new Map(creates.map((e) => [e.id, { ...e }]));
const ids = [...current.keys()];
const stream: Event[] = [...creates];
// Of all events: 30% metadata-only changes, 20% duplicates, the rest creates and text changes.
const rest = total - creates.length;
const pDuplicate = (0.2 * total) / rest;
const pMetadata = (0.3 * total) / rest;
while (stream.length < total) {
  const roll = random();
  if (roll < pDuplicate) {
    stream.push({ ...(stream[Math.floor(random() * stream.length)] as Event) }); // a redelivery
    continue;
  }
  const item = current.get(ids[Math.floor(random() * ids.length)] as string) as Event;
  const next: Event = { ...item, version: item.version + 1, metadata: { ...item.metadata } };
  if (roll < pDuplicate + pMetadata) {
    (next.metadata as Record<string, unknown>).price = Math.round(random() * 50000) / 100; // metadata only
  } else {
    next.text = `${item.text} Revised ${next.version}: ${['lighter', 'warmer', 'more durable', 'recycled fabric'][Math.floor(random() * 4)]}.`;
  }
  current.set(next.id, next);
  stream.push(next);
}
const kinds = { creates: creates.length, duplicates: 0, metadataOnly: 0, textChanges: 0 };
{
  const seen = new Set<string>();
  const last = new Map<string, Event>();
  for (const e of stream) {
    const key = `${e.id}@${e.version}`;
    if (seen.has(key)) kinds.duplicates++;
    else if (e.version > 1) (last.get(e.id)?.text === e.text ? kinds.metadataOnly++ : kinds.textChanges++);
    seen.add(key);
    last.set(e.id, e);
  }
}

const naiveTokens = stream.filter((e) => e.op !== 'delete').reduce((s, e) => s + stubTokens(e.text as string), 0);
const distinctTexts = new Set(stream.filter((e) => e.op !== 'delete').map((e) => e.text as string));
const dedupOnly = [...distinctTexts].reduce((s, t) => s + stubTokens(t), 0);
const latestOnly = [...new Set([...current.values()].map((e) => e.text as string))].reduce((s, t) => s + stubTokens(t), 0);

const run = `incr-${Date.now().toString(36)}`;
const stub = new EmbeddingsStub({ dimensions: 256 });
const dir = mkdtempSync(join(tmpdir(), 'incr-'));
const config = loadConfig({ ...process.env, KAFKA_TOPICS: run, KAFKA_GROUP_ID: run, QUEUE_PREFIX: run, LANCEDB_URI: dir, LOG_LEVEL: 'silent', EMBEDDINGS_BASE_URL: await stub.start(), EMBEDDINGS_MODEL: 'stub-embedding', EMBEDDINGS_DIMENSIONS: '256' });
const kafka = createKafka(config.kafka, silentLogger);
await ensureTopic(kafka, run, 4);
log(`stream: ${stream.length} events on ${ids.length} items: ${kinds.creates} creates, ${kinds.textChanges} text changes, ${kinds.metadataOnly} metadata-only (${((kinds.metadataOnly / stream.length) * 100).toFixed(0)}%), ${kinds.duplicates} duplicates (${((kinds.duplicates / stream.length) * 100).toFixed(0)}%)`);

const pipeline = await startPipeline(config, { roles: ['ingest', 'embed', 'write'], logger: silentLogger });
const started = Date.now();
const chunks = Math.max(1, Number(args.chunks));
const chunkSize = Math.ceil(stream.length / chunks);
let lastReport = 0;
for (let c = 0; c < chunks; c++) {
  const chunk = stream.slice(c * chunkSize, (c + 1) * chunkSize);
  const upTo = stream.slice(0, (c + 1) * chunkSize);
  await produceLines(kafka, run, chunk.map((e) => JSON.stringify(e)), { idField: 'id', batchSize: 200 });
  const wantVersions = new Map<string, number>();
  for (const e of upTo) wantVersions.set(e.id, Math.max(wantVersions.get(e.id) ?? 0, e.version));
  for (;;) {
    const backlog = (await pipeline.embedQueue.count()) + (await pipeline.writeQueue.count());
    const consumed = (await pipeline.metrics.eventsConsumed.get()).values[0]?.value ?? 0;
    if (Date.now() - lastReport > 2000) {
      lastReport = Date.now();
      log(`  ${((Date.now() - started) / 1000).toFixed(1)} s: ${consumed}/${stream.length} events consumed, ${backlog} jobs queued`);
    }
    if (consumed === upTo.length && backlog === 0) {
      const states = await pipeline.state.getMany(ids);
      if (states.every((s, i) => s.writtenVersion === wantVersions.get(ids[i] as string))) break;
    }
    await sleep(50);
  }
}
const seconds = (Date.now() - started) / 1000;
const sentTokens = stub.served.reduce((s, r) => s + r.inputs.reduce((t, x) => t + stubTokens(x), 0), 0);
const sentInputs = stub.served.reduce((s, r) => s + r.inputs.length, 0);
const skipped = (await pipeline.metrics.eventsSkipped.get()).values.map((v) => `${v.labels.reason}=${v.value}`).join(', ');
const avoided = (await pipeline.metrics.embeddingsAvoided.get()).values.reduce((sum, v) => sum + v.value, 0);
await pipeline.close();

log('');
log(`indexed in ${seconds.toFixed(1)} s (${(stream.length / seconds).toFixed(0)} events/s)`);
log(`tokens, embed every event:     ${naiveTokens} (${stream.length} inputs)`);
log(`tokens, this indexer:          ${sentTokens} (${sentInputs} inputs in ${stub.served.length} requests) = ${((sentTokens / naiveTokens) * 100).toFixed(1)}% of embed-every-event`);
log(`tokens, dedup by text only:    ${dedupOnly} (each of the ${distinctTexts.size} distinct texts once)`);
log(`tokens, latest texts only:     ${latestOnly} (the floor: each item's final text once)`);
log(`work avoided:                  ${avoided} payload-only writes; skipped: ${skipped}`);
await stub.stop();
rmSync(dir, { recursive: true, force: true });
process.exit(0);
