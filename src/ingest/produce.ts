import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { CompressionTypes, type Kafka, type Message } from 'kafkajs';
import { readPath } from './change-event.js';

/** Creates the topic when missing (no-op when it exists). */
export async function ensureTopic(kafka: Kafka, topic: string, partitions: number): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = await admin.listTopics();
    if (!existing.includes(topic)) {
      await admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true });
    }
  } finally {
    await admin.disconnect();
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
