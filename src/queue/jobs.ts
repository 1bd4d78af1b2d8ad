import { createHash } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import type { ChangeEvent, Operation } from '../ingest/change-event.js';

export const EMBED_QUEUE = 'embed';
export const WRITE_QUEUE = 'write';

/** Live events outrank backfills (BullMQ: lower number, higher priority). */
export const PRIORITY = { live: 1, backfill: 10 } as const;

/** Where an event came from, kept for the dead-letter store and for tracing. */
export interface EventSource {
  topic: string;
  partition: number;
  offset: string;
}

/** One item's change, waiting to be embedded. */
export interface EmbedJobData extends ChangeEvent {
  source: EventSource | undefined;
  /** ms since epoch when ingest accepted the event: the start of event-to-searchable latency. */
  acceptedAt: number;
}

/**
 * One item's change, waiting for the sink: `upsert` with its vector (held here until written, so a
 * sink outage never re-buys it), `delete`, or `payload`: the text is unchanged, only the metadata
 * is written (it carries the text in case the sink turns out to have lost the point).
 */
export type WriteOp = Operation | 'payload';

export interface WriteJobData {
  itemId: string;
  op: WriteOp;
  version: number;
  updatedAt: string | undefined;
  metadata: Record<string, unknown>;
  contentHash: string | undefined;
  model: string | undefined;
  /** float32 little-endian, base64: a quarter of the size of a JSON float array. */
  vector: string | undefined;
  embeddedAt: string | undefined;
  acceptedAt: number;
  textTokens?: number;
  truncated?: boolean;
  /** Only on `payload` jobs. */
  text?: string;
}

/**
 * Deterministic job id: the same event delivered twice (a Kafka redelivery after a crash before the
 * offset commit) maps to the same job, which BullMQ adds only once while it exists.
 */
export function jobIdFor(itemId: string, version: number, op: Operation): string {
  const digest = createHash('sha256').update(`${itemId}\u0000${version}\u0000${op}`).digest('base64url').slice(0, 27);
  return `j${digest}`;
}

export function defaultJobOptions(attempts: number, backoffMs: number): JobsOptions {
  return {
    attempts,
    backoff: { type: 'exponential', delay: backoffMs, jitter: 0.5 },
    // Completed jobs are gone at once (their effect is in the sink); failed ones are kept a week
    // for inspection, and their events are in the dead-letter store as well.
    removeOnComplete: true,
    removeOnFail: { age: 7 * 24 * 3600, count: 100_000 },
  };
}

export function encodeVector(vector: Float32Array): string {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
}

export function decodeVector(encoded: string): Float32Array {
  const bytes = Buffer.from(encoded, 'base64');
  // Copy into a fresh, aligned buffer: Float32Array needs a byte offset divisible by 4.
  const aligned = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(aligned).set(bytes);
  return new Float32Array(aligned);
}
