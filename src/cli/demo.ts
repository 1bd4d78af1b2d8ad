import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig, type Config } from '../config/config.js';
import { ensureTopic, produceLines } from '../ingest/produce.js';
import { createKafka } from '../ingest/kafka.js';
import { createLogger } from '../observability/logger.js';
import { startPipeline } from '../pipeline/pipeline.js';
import { formatHits, searchText } from './search.js';

const QUERIES = ['waterproof trail running shoes for muddy trails', 'warm down jacket for winter camping', 'rechargeable headlamp for night runs'];

export interface DemoOptions {
  catalog: string;
  startServices: boolean;
  timeoutMs: number;
}

/** The latest state the catalog leads to: how many items the sink must hold when indexing is done. */
function expectedLiveItems(lines: string[]): number {
  const latest = new Map<string, { version: number; op: string }>();
  for (const line of lines) {
    const e = JSON.parse(line) as { id: string; version: number; op?: string };
    const seen = latest.get(e.id);
    if (!seen || seen.version < e.version) latest.set(e.id, { version: e.version, op: e.op ?? 'upsert' });
  }
  return [...latest.values()].filter((s) => s.op !== 'delete').length;
}

/**
 * End to end on the local defaults: Kafka and Redis (started by the project's scripts), the offline
 * embedder unless an API is configured, LanceDB unless QDRANT_URL is set. Each run uses its own
 * topic, consumer group, queue prefix and table, so runs never see each other's state.
 */
export async function runDemo(options: DemoOptions): Promise<void> {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  if (options.startServices) {
    const started = spawnSync('bash', ['scripts/services/up.sh'], { stdio: 'inherit' });
    if (started.status !== 0) throw new Error('could not start the local services (see above)');
  }
  const run = `demo-${Date.now().toString(36)}`;
  const lancedbUri = '.data/demo-lancedb';
  rmSync(lancedbUri, { recursive: true, force: true });
  const config = loadConfig({
    KAFKA_TOPICS: run,
    KAFKA_GROUP_ID: run,
    QUEUE_PREFIX: run,
    LANCEDB_URI: lancedbUri,
    COLLECTION: process.env.QDRANT_URL ? run : 'products',
    LOG_LEVEL: 'warn',
    ...process.env,
  });
  const logger = createLogger(config.observability.logLevel, { service: 'embedding-indexer-demo' });
  out(`embeddings: ${config.embeddings.provider} (${config.embeddings.model}, ${config.embeddings.dimensions} dimensions)${config.embeddings.provider === 'local' ? ' -- lexical hashing, not semantic; set EMBEDDINGS_BASE_URL/EMBEDDINGS_API_KEY for a real model' : ''}`);
  out(`sink: ${config.sink.kind} ${config.sink.kind === 'lancedb' ? config.sink.lancedb.uri : config.sink.qdrant?.url} / ${config.sink.collection}`);

  const lines = readFileSync(options.catalog, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const expected = expectedLiveItems(lines);
  const kafka = createKafka(config.kafka, logger);
  const topic = config.kafka.topics[0] as string;
  await ensureTopic(kafka, topic, 4);
  const started = Date.now();
  const sent = await produceLines(kafka, topic, lines, { idField: config.events.idField });
  out(`produced ${sent} change events (${expected} live items after updates and deletes) to Kafka topic ${topic} in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  const pipeline = await startPipeline(config, { roles: ['ingest', 'embed', 'write'], logger });
  try {
    const sink = pipeline.sink;
    if (!sink) throw new Error('the demo pipeline runs the write role');
    const deadline = Date.now() + options.timeoutMs;
    let count = 0;
    for (;;) {
      count = await sink.count();
      const backlog = (await pipeline.embedQueue.count()) + (await pipeline.writeQueue.count());
      out(`  indexed ${count}/${expected} items, ${backlog} jobs queued`);
      if (count === expected && backlog === 0) break;
      if (Date.now() > deadline) throw new Error(`the demo did not finish within ${options.timeoutMs / 1000} s (${count}/${expected} items indexed)`);
      await sleep(1000);
    }
    const seconds = (Date.now() - started) / 1000;
    const tokens = (await pipeline.metrics.embeddingTokens.get()).values.reduce((a, v) => a + v.value, 0);
    const requests = (await pipeline.metrics.embeddingRequests.get()).values.reduce((a, v) => a + v.value, 0);
    out(`indexed ${count} items from ${sent} events in ${seconds.toFixed(1)} s (${(sent / seconds).toFixed(0)} events/s); ${requests} embeddings requests, ${tokens} tokens; dead letters: ${await pipeline.deadLetters.count()}`);
  } finally {
    await pipeline.close();
  }

  for (const query of QUERIES) {
    out(`\nsearch: "${query}"`);
    process.stdout.write(formatHits(await searchText(config, query, 5)));
  }
  out(`\n${nextSteps(config)}`);
}

/**
 * The commands that read the demo's index. `search` and `export` read the configured sink, and
 * the demo's is not the default one (a demo run must not overwrite an index of the user's own).
 */
export function nextSteps(config: Config): string {
  const sink = config.sink.kind === 'lancedb' ? `LANCEDB_URI=${shellWord(config.sink.lancedb.uri)} COLLECTION=${shellWord(config.sink.collection)}` : `QDRANT_URL=${shellWord(config.sink.qdrant?.url ?? '')} COLLECTION=${shellWord(config.sink.collection)}`;
  const where = config.sink.kind === 'lancedb' ? `${config.sink.lancedb.uri}, table ${config.sink.collection}` : `Qdrant collection ${config.sink.collection}`;
  return [
    `The demo's index stays in ${where}. Search it, or list what it holds:`,
    `  ${sink} npx indexer search "wool hiking socks"`,
    `  ${sink} npx indexer export | head -3`,
    'To index your own change events, see "Using it" in README.md.',
  ].join('\n');
}

/** Quotes a value for a POSIX shell when it needs it. */
function shellWord(value: string): string {
  return /^[\w./:@-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}
