import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type { Config } from '../../src/config/config.js';
import { createKafka } from '../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../src/ingest/produce.js';
import { silentLogger } from '../../src/observability/logger.js';
import { startPipeline, type Pipeline, type Role } from '../../src/pipeline/pipeline.js';
import type { EmbedJobData } from '../../src/queue/jobs.js';
import type { VectorSink } from '../../src/sinks/vector-sink.js';
import { EmbeddingsStub } from './embeddings-stub.js';
import { removeTestResources, testConfig, uniqueName } from './helpers.js';

export const HARNESS_DIMENSIONS = 8;
export const HARNESS_MODEL = 'stub-embedding';

/** An upsert change event as a Kafka value. */
export const upsertEvent = (id: string, version: number, text: string, metadata: Record<string, unknown> = {}) => JSON.stringify({ id, op: 'upsert', version, text, metadata });

/**
 * Pipelines on the real parts for one test file: each test's stub, topic, queues and LanceDB
 * directory, and the pipelines it starts, are removed after it (call inside `describe`).
 */
export function pipelineHarness(name: string) {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function setup(env: Record<string, string> = {}, stubOptions: ConstructorParameters<typeof EmbeddingsStub>[0] = {}, partitions = 2) {
    const stub = new EmbeddingsStub({ dimensions: HARNESS_DIMENSIONS, ...stubOptions });
    const lancedbDir = mkdtempSync(join(tmpdir(), `${name}-`));
    const config = testConfig({ EMBEDDINGS_BASE_URL: await stub.start(), EMBEDDINGS_MODEL: HARNESS_MODEL, EMBEDDINGS_DIMENSIONS: String(HARNESS_DIMENSIONS), LANCEDB_URI: lancedbDir, COLLECTION: uniqueName('items'), ...env });
    const topic = config.kafka.topics[0] as string;
    await ensureTopic(createKafka(config.kafka, silentLogger), topic, partitions);
    cleanups.push(async () => {
      await stub.stop();
      await removeTestResources(config);
      rmSync(lancedbDir, { recursive: true, force: true });
    });
    const produce = (lines: string[]) => produceLines(createKafka(config.kafka, silentLogger), topic, lines, { idField: 'id' });
    return { stub, config, produce };
  }

  async function start(config: Config, roles: Role[], sink?: VectorSink): Promise<Pipeline> {
    const pipeline = await startPipeline(config, { roles, logger: silentLogger, sink });
    cleanups.push(() => pipeline.close());
    return pipeline;
  }

  return { cleanups, setup, start };
}

/** Another consumer group on the same topic and queues: it re-reads every event, as a redelivery, a new partition owner or a replay does. */
export const replayGroup = (config: Config): Config => ({ ...config, kafka: { ...config.kafka, groupId: uniqueName('replay') } });
export const consumed = async (p: Pipeline) => (await p.metrics.eventsConsumed.get()).values[0]?.value ?? 0;
export const skipped = async (p: Pipeline, reason: string) => (await p.metrics.eventsSkipped.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
/** The embed jobs not yet done: what ingest queued and no embed worker finished. */
export const queuedJobs = async (p: Pipeline) => (await p.embedQueue.getJobs(['waiting', 'prioritized', 'delayed', 'active'])).map((job) => job.data as EmbedJobData);
export const queuedChanges = async (p: Pipeline) => (await queuedJobs(p)).reduce((sum, job) => sum + job.changes.length, 0);

/** A message on the partition it names, as a producer that keys by something else than the item places it. */
export interface PlacedMessage {
  partition: number;
  key: string | null;
  value: string | null;
}

/** Sends messages to the partitions they name (produceLines places them by item id). */
export async function sendToPartitions(config: Config, messages: PlacedMessage[]): Promise<void> {
  const producer = createKafka(config.kafka, silentLogger).producer();
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 500) await producer.send({ topic: config.kafka.topics[0] as string, acks: -1, messages: messages.slice(i, i + 500) });
  } finally {
    await producer.disconnect();
  }
}
