import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { CompressionTypes, type Admin, type Kafka, type Message } from 'kafkajs';
import { readPath } from './change-event.js';
import { isUnknownTopic } from './kafka.js';

/** How long a topic just created may take to have a leader for every partition. */
const TOPIC_LEADERS_TIMEOUT_MS = 30_000;

/** Creates the topic when missing (no-op when it exists), and returns once its partitions have leaders. */
export async function ensureTopic(kafka: Kafka, topic: string, partitions: number): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = await admin.listTopics();
    if (existing.includes(topic)) return;
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
    } catch (error) {
      // kafkajs waits for the leaders by reading the topic's metadata, and retries only while the
      // answer is LEADER_NOT_AVAILABLE; a KRaft broker can answer UNKNOWN_TOPIC_OR_PARTITION
      // until the new topic reaches its metadata cache (seen once in a full test run). The topic
      // was created: wait for its leaders here instead.
      if (!isUnknownTopic(error)) throw error;
      await waitForLeaders(admin, topic, partitions);
    }
  } finally {
    await admin.disconnect();
  }
}

async function waitForLeaders(admin: Admin, topic: string, partitions: number): Promise<void> {
  const deadline = Date.now() + TOPIC_LEADERS_TIMEOUT_MS;
  for (;;) {
    try {
      const [metadata] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics;
      if (metadata !== undefined && metadata.partitions.length >= partitions && metadata.partitions.every((p) => p.leader >= 0)) return;
    } catch (error) {
      if (!isUnknownTopic(error)) throw error;
    }
    if (Date.now() > deadline) throw new Error(`the Kafka topic ${topic} was created, but its ${partitions} partitions have no leader after ${TOPIC_LEADERS_TIMEOUT_MS / 1000} s`);
    await sleep(100);
  }
}

/**
 * The Kafka message for one NDJSON line: key = item id (per-item ordering), value = the line as is.
 * A line whose id cannot be read is still sent, without a key: ingest is where bad events are
 * judged and dead-lettered, and a producer tool that silently dropped them would hide problems.
 */
export function toMessage(line: string, idField: string): Message {
  let key: string | null = null;
  try {
    const id = readPath(JSON.parse(line), idField);
    if (typeof id === 'string' || typeof id === 'number') key = String(id);
  } catch {
    // not JSON: sent as is, ingest dead-letters it
  }
  return { key, value: line };
}

export interface ProduceProgress {
  sent: number;
}

/** Sends NDJSON lines to a topic in batches; returns how many were sent. */
export async function produceLines(
  kafka: Kafka,
  topic: string,
  lines: AsyncIterable<string> | Iterable<string>,
  options: { idField: string; batchSize?: number; onProgress?: (p: ProduceProgress) => void },
): Promise<number> {
  const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  let sent = 0;
  let batch: Message[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await producer.send({ topic, messages: batch, acks: -1, compression: CompressionTypes.None });
    sent += batch.length;
    batch = [];
    options.onProgress?.({ sent });
  };
  try {
    for await (const line of lines) {
      if (line.trim() === '') continue;
      batch.push(toMessage(line, options.idField));
      if (batch.length >= (options.batchSize ?? 500)) await flush();
    }
    await flush();
  } finally {
    await producer.disconnect();
  }
  return sent;
}

/**
 * Lines of a file (or stdin for "-"), opened only when iteration starts: readline emits lines as
 * soon as it exists, and lines emitted before a `for await` begins (say, while the producer
 * connects) would be lost, leaving the loop waiting forever.
 */
export async function* readLines(path: string): AsyncIterable<string> {
  const input = path === '-' ? process.stdin : createReadStream(path, { encoding: 'utf8' });
  yield* createInterface({ input, crlfDelay: Infinity });
}
