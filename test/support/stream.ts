import { isAfter } from '../../src/core/change-order.js';
import { contentHash } from '../../src/embed/content-hash.js';
import type { VectorSink } from '../../src/sinks/vector-sink.js';
import { stubVector } from './embeddings-stub.js';
import type { Kafka } from 'kafkajs';

/** A change event as tests script it; `partition` forces where it lands (to simulate disorder). */
export interface ScriptedEvent {
  id: string;
  op: 'upsert' | 'delete';
  version: number;
  text?: string;
  metadata?: Record<string, unknown>;
  partition?: number;
}

export function eventValue(e: ScriptedEvent): string {
  return e.op === 'delete' ? JSON.stringify({ id: e.id, op: 'delete', version: e.version }) : JSON.stringify({ id: e.id, op: 'upsert', version: e.version, text: e.text, metadata: e.metadata ?? {} });
}

/** Sends events in order, keyed by item id, each to its forced partition when it has one. */
export async function sendScripted(kafka: Kafka, topic: string, events: ScriptedEvent[]): Promise<void> {
  const producer = kafka.producer();
  await producer.connect();
  try {
    await producer.send({
      topic,
      acks: -1,
      messages: events.map((e) => ({ key: e.id, value: eventValue(e), ...(e.partition === undefined ? {} : { partition: e.partition }) })),
    });
  } finally {
    await producer.disconnect();
  }
}

export interface ExpectedItem {
  version: number;
  text: string;
  metadata: Record<string, unknown>;
}

/** The state the sink must converge to, computed from the event list alone: newest version wins. */
export function expectedState(events: ScriptedEvent[]): Map<string, ExpectedItem> {
  const newest = new Map<string, ScriptedEvent>();
  // The indexer's one order: by version, and at an equal version a delete after an upsert.
  for (const e of events) {
    const held = newest.get(e.id);
    if (held === undefined || isAfter(e, held)) newest.set(e.id, e);
  }
  const live = new Map<string, ExpectedItem>();
  for (const [id, e] of newest) if (e.op === 'upsert') live.set(id, { version: e.version, text: e.text as string, metadata: e.metadata ?? {} });
  return live;
}

/**
 * Whether the sink holds exactly the newest state of the events' items (version, text's vector,
 * metadata; deleted items absent): true, or what differs first.
 */
export async function sinkMatchesEvents(sink: VectorSink, events: ScriptedEvent[], embedding: { model: string; dimensions: number }): Promise<true | string> {
  const expected = expectedState(events);
  const ids = [...new Set(events.map((e) => e.id))];
  const held = new Map((await sink.retrieve(ids, { withVectors: true })).map((r) => [r.itemId, r]));
  for (const id of ids) {
    const want = expected.get(id);
    const got = held.get(id);
    if (!want) {
      if (got) return `${id} should be deleted, sink holds version ${got.payload.version}`;
      continue;
    }
    if (!got) return `${id} missing (want version ${want.version})`;
    if (got.payload.version !== want.version) return `${id} at version ${got.payload.version}, want ${want.version}`;
    if (got.payload.content_hash !== contentHash(want.text, embedding.model, embedding.dimensions)) return `${id} holds the vector of another text`;
    for (const [k, v] of Object.entries(want.metadata)) if (JSON.stringify(got.payload[k]) !== JSON.stringify(v)) return `${id}.${k} = ${JSON.stringify(got.payload[k])}, want ${JSON.stringify(v)}`;
    const vector = stubVector(want.text, embedding.dimensions, embedding.model);
    if (got.vector?.some((x, i) => Math.abs(x - (vector[i] as number)) > 1e-5)) return `${id} vector differs from its text's`;
  }
  return true;
}
