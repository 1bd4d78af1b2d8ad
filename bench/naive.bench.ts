/**
 * The comparison point for `npm run bench`: an indexer as tutorials build it. A kafkajs consumer
 * (eachMessage, one event at a time), and for each event one POST /v1/embeddings with one input
 * and one sink upsert of that single point (a delete for a delete event); no queue, no batching,
 * no per-item state, every event embedded. Same workload generator, same sink (src/sinks via
 * createSink), same embeddings stub as the pipeline benchmark. Figures are printed, never asserted.
 *
 *   npm run services:up
 *   npm run bench:naive -- [--events 100000 | --catalog FILE [--events N]] [--rate R] [--max-seconds 60]
 *                          [--sink lancedb|qdrant-contract] [--stub-latency-ms 0] [--json FILE]
 *
 * It is slow, so it stops after --max-seconds and reports events/s over what it processed by then.
 * Throughput mode (no --rate) produces every event first, then consumes; --rate R produces at a
 * steady R events/s while it consumes. Latency per item: from producing its last event to the sink
 * acknowledging that version (items whose last event was processed in time). It uses no Redis.
 * `npm run bench -- --compare-naive` runs this after the pipeline and prints both.
 */
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EachMessagePayload } from 'kafkajs';
import { createSink } from '../src/sinks/create-sink.js';
import { buildPayload, type VectorSink } from '../src/sinks/vector-sink.js';
import {
  Cleanup,
  fmt,
  isEntryPoint,
  latencyFigures,
  loadWorkload,
  log,
  machine,
  nonNegative,
  positiveInt,
  printTable,
  produceAll,
  produceAtRate,
  startServices,
  waitForStableGroup,
  PARTITIONS,
  writeFigures,
  STUB_MODEL,
  type Figures,
  type ProducedAt,
} from './pipeline.bench.js';

const PROGRESS_EVERY_MS = 2000;

interface ChangeEvent {
  id: string | number;
  op?: string;
  version: number;
  updated_at?: string;
  text?: string;
  metadata?: Record<string, unknown>;
}

interface EmbeddingsAnswer {
  data: { embedding: number[] }[];
  usage?: { prompt_tokens?: number };
}

/** One event, the tutorial way: embed its text alone, upsert its point alone. */
async function indexOne(event: ChangeEvent, sink: VectorSink, embeddingsUrl: string): Promise<void> {
  const itemId = String(event.id);
  if (event.op === 'delete') {
    await sink.delete([{ itemId, version: event.version }]);
    return;
  }
  const text = event.text ?? '';
  const res = await fetch(embeddingsUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer naive' },
    body: JSON.stringify({ model: STUB_MODEL, input: text, encoding_format: 'float' }),
  });
  if (!res.ok) throw new Error(`embeddings API answered ${res.status}: ${await res.text()}`);
  const answer = (await res.json()) as EmbeddingsAnswer;
  const embedding = answer.data[0]?.embedding;
  if (!embedding) throw new Error('embeddings API answered without a vector');
  const now = new Date().toISOString();
  await sink.upsert([
    {
      itemId,
      vector: Float32Array.from(embedding),
      payload: buildPayload(event.metadata ?? {}, {
        item_id: itemId,
        version: event.version,
        content_hash: createHash('sha256').update(`${STUB_MODEL}\u0000${text}`).digest('hex'),
        model: STUB_MODEL,
        source_updated_at: event.updated_at ?? null,
        embedded_at: now,
        indexed_at: now,
        text_tokens: answer.usage?.prompt_tokens ?? 0,
        truncated: false,
      }),
    },
  ]);
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      events: { type: 'string' },
      catalog: { type: 'string' },
      rate: { type: 'string' },
      'max-seconds': { type: 'string', default: '60' },
      sink: { type: 'string', default: 'lancedb' },
      'stub-latency-ms': { type: 'string', default: '0' },
      json: { type: 'string' },
    },
  });
  const maxSeconds = positiveInt('--max-seconds', args['max-seconds']);
  const rate = args.rate === undefined ? undefined : nonNegative('--rate', args.rate);
  if (rate === 0) throw new Error('--rate must be above 0');
  const stubLatencyMs = nonNegative('--stub-latency-ms', args['stub-latency-ms']);
  const workload = loadWorkload({ events: args.events, catalog: args.catalog });
  const events = workload.lines.length;
  const mode = rate === undefined ? 'throughput' : 'rate';

  const cleanup = new Cleanup();
  try {
    const services = await startServices('naive', { sink: args.sink, provider: 'stub', stubLatencyMs }, cleanup);
    const { config, run } = services;
    const stub = services.stub;
    if (!stub) throw new Error('the naive benchmark needs the embeddings stub');
    const embeddingsUrl = `${services.overrides.EMBEDDINGS_BASE_URL}/embeddings`;
    log(
      `naive benchmark (${mode} mode${rate ? `, ${rate} events/s offered` : ''}): ${events} events, ${workload.finals.size} items from ${workload.source}; ` +
        `one embeddings request and one sink write per event; sink ${config.sink.kind}${args.sink === 'qdrant-contract' ? ' (contract server)' : ''}; stub latency ${stubLatencyMs} ms; stops after ${maxSeconds} s`,
    );

    const sink = createSink(config.sink, config.embeddings.dimensions);
    await sink.open();
    cleanup.add('sink', () => sink.close());

    const producedAt: ProducedAt = new Map();
    if (mode === 'throughput') await produceAll(services, workload.lines, producedAt);

    const consumer = services.kafka.consumer({ groupId: run });
    await consumer.connect();
    cleanup.add('consumer', () => consumer.disconnect());
    await consumer.subscribe({ topic: run, fromBeginning: true });

    let processed = 0;
    let stopping = false;
    const ackedAt = new Map<string, number>();
    const eachMessage = async ({ message }: EachMessagePayload) => {
      if (stopping || !message.value) return;
      const event = JSON.parse(message.value.toString('utf8')) as ChangeEvent;
      await indexOne(event, sink, embeddingsUrl);
      processed++;
      const itemId = String(event.id);
      if (workload.finals.get(itemId)?.version === event.version && !ackedAt.has(itemId)) ackedAt.set(itemId, Date.now());
    };

    let peakRss = process.memoryUsage().rss;
    const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 200);
    cleanup.add('RSS sampler', () => clearInterval(rssTimer));
    const progress = { sent: mode === 'throughput' ? events : 0 };
    let windowStart: number;
    let cpuBefore: NodeJS.CpuUsage;
    let production: Promise<number> | undefined;
    let productionError: unknown;
    if (mode === 'throughput') {
      cpuBefore = process.cpuUsage();
      windowStart = Date.now();
      await consumer.run({ eachMessage });
    } else {
      await consumer.run({ eachMessage });
      await waitForStableGroup(services, 1);
      cpuBefore = process.cpuUsage();
      windowStart = Date.now();
      production = produceAtRate(services, workload.lines, rate as number, producedAt, progress, () => stopping);
      production.catch((error: unknown) => (productionError = error));
    }

    let lastReport = windowStart;
    while (processed < events && Date.now() - windowStart < maxSeconds * 1000) {
      await cleanup.parkIfInterrupted();
      if (productionError) throw productionError;
      await sleep(100);
      if (Date.now() - lastReport >= PROGRESS_EVERY_MS) {
        lastReport = Date.now();
        const elapsed = (Date.now() - windowStart) / 1000;
        log(`  ${elapsed.toFixed(1)} s: ${mode === 'rate' ? `${progress.sent}/${events} produced, ` : ''}${processed}/${events} events processed (${(processed / elapsed).toFixed(0)} events/s)`);
      }
    }
    const windowEnd = Date.now();
    const done = processed;
    stopping = true;
    clearInterval(rssTimer);
    const cpu = process.cpuUsage(cpuBefore);
    await production;
    await consumer.stop();

    const seconds = (windowEnd - windowStart) / 1000;
    const latencies: number[] = [];
    for (const [id, at] of ackedAt) {
      const produced = producedAt.get(id);
      if (produced !== undefined && at <= windowEnd) latencies.push(at - produced);
    }
    const stats = await stub.stats();
    const requests = stats.served;
    const tokens = stats.tokens;
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const figures: Figures = {
      events_per_s: done / seconds,
      redis_commands_per_event: 0,
      ...latencyFigures(latencies),
      embed_requests_per_event: requests / done,
      tokens_per_event: tokens / done,
      peak_rss_mib: peakRss / 2 ** 20,
      cpu_s_per_1k_events: cpuSeconds / (done / 1000),
    };
    const completed = done === events;
    log('');
    log(completed ? `processed all ${events} events` : `STOPPED after ${maxSeconds} s (--max-seconds): ${done} of ${events} events processed; figures are over those`);
    const latencyLabel = `produced -> sink ack${mode === 'throughput' ? '; THROUGHPUT MODE: mostly time waiting in the backlog, use --rate for latency' : ''}`;
    printTable([
      ['events/s', fmt(figures.events_per_s), `${done} events in ${seconds.toFixed(2)} s${mode === 'throughput' ? ', from the consumer start, over a backlog' : ', from the first event produced'}`],
      ['latency p50 (ms)', fmt(figures.latency_ms_p50), `${latencies.length} items whose last event was processed; ${latencyLabel}`],
      ['latency p95 (ms)', fmt(figures.latency_ms_p95), ''],
      ['latency p99 (ms)', fmt(figures.latency_ms_p99), ''],
      ['embeddings requests/event', fmt(figures.embed_requests_per_event, 4), `${requests} requests (counted at the stub; deletes make none)`],
      ['tokens/event', fmt(figures.tokens_per_event, 1), `${tokens} tokens`],
      ['Redis commands/event', '0', 'no Redis'],
      ['peak RSS (MiB)', fmt(figures.peak_rss_mib), 'this process: the consumer plus the stub, contract server and workload'],
      ['CPU s per 1k events', fmt(figures.cpu_s_per_1k_events, 3), `${cpuSeconds.toFixed(1)} s user+system of this process (includes the in-process stub and contract server)`],
    ]);
    if (args.json) {
      writeFigures(args.json, figures, {
        pipeline: 'naive: kafkajs eachMessage, one embeddings request and one sink write per event, no queue',
        mode,
        events,
        processed_events: done,
        completed,
        max_seconds: maxSeconds,
        items: workload.finals.size,
        workload: workload.source,
        rate: rate ?? null,
        workers: 1,
        sink: args.sink,
        provider: 'stub',
        model: STUB_MODEL,
        dimensions: config.embeddings.dimensions,
        stub_latency_ms: stubLatencyMs,
        kafka_partitions: PARTITIONS,
        latency: 'produced (last event) -> sink acknowledged that version',
        machine: machine(),
      });
    }
  } catch (error) {
    await cleanup.parkIfInterrupted(); // the signal handler reports and exits
    throw error;
  } finally {
    await cleanup.run();
  }
}

if (isEntryPoint(import.meta.url)) {
  try {
    await main();
    process.exit(0);
  } catch (error) {
    process.stderr.write(`naive benchmark failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  }
}
