import { randomBytes } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import type { ChangeEvent, VersionSource } from '../ingest/change-event.js';

export const EMBED_QUEUE = 'embed';
export const WRITE_QUEUE = 'write';

/** One item's change, waiting to be embedded. Several of them make an embed job. */
export interface QueuedChange extends ChangeEvent {
  /** Where it came from, for the dead-letter store: `topic/partition@offset`. */
  source: string | undefined;
  /** ms since epoch when ingest accepted the event: the start of event-to-sink latency. */
  acceptedAt: number;
  /** The backfill job that read it, for backfill rows: their jobs run after live ones. */
  backfill?: string;
}

/**
 * An embed job: every accepted change of a chunk of a Kafka batch (bounded by items and bytes).
 * Outcomes are per item: failed items are dead-lettered alone, retryable ones stay in the job
 * (its data shrinks to them) and the job is retried; the rest completes.
 */
export interface EmbedJobData {
  changes: QueuedChange[];
}

/**
 * One item's write, waiting for the sink: `upsert` with its vector (held here until written, so a
 * sink outage never re-buys it), `delete`, or `payload`: the text is unchanged, only the metadata
 * is written (it carries the text, in case the sink turns out not to hold its vector: lost, or an
 * edit written meanwhile; the write queue's byte budget counts it).
 */
export type WriteOp = 'upsert' | 'delete' | 'payload';

export interface ItemWrite {
  itemId: string;
  op: WriteOp;
  version: number;
  updatedAt: string | undefined;
  metadata: Record<string, unknown>;
  contentHash: string | undefined;
  model: string | undefined;
  /** An upsert's vector. In a write job it lives in the job's vector blob (see write-jobs.ts). */
  vector: Float32Array | undefined;
  embeddedAt: string | undefined;
  acceptedAt: number;
  textTokens?: number;
  truncated?: boolean;
  /** Only on `payload` writes: what is embedded again if the sink does not hold the vector. */
  text?: string;
  versionSource?: VersionSource;
  /** The write job holding this write (and its vector): what the in-flight hint names. */
  heldBy?: string;
  /** The backfill whose row this is (see QueuedChange.backfill). */
  backfill?: string;
  /** Where its vector is in the blob of the write job it was read from. */
  slot?: number;
}

/**
 * A write as a write job's JSON holds it: an upsert names its vector's `slot` in the job's blob.
 * `vector` (float32 little-endian, base64) only in jobs an older version queued.
 */
export type QueuedWrite = Omit<ItemWrite, 'vector'> & { vector?: string };

/** A write job: the results of one embeddings request (plus the deletes and payload-only changes beside it). */
export interface WriteJobData {
  writes: QueuedWrite[];
  /** The vectors' dimension, when the job has a blob. */
  dimensions?: number;
}

/**
 * A fresh job id. Never derived from the content: a replay of an event whose earlier job failed
 * (and is kept in the failed set) must run, not meet the old id. Duplicates of changes still queued
 * are caught per item by the state (see ItemStateStore.observe), not by the job id. Short, because
 * the item state keeps the id of the job holding each item's newest change.
 */
export function newJobId(kind: 'e' | 'w' | 'b'): string {
  return `${kind}${randomBytes(9).toString('base64url')}`;
}

export function defaultJobOptions(attempts: number, backoffMs: number): JobsOptions {
  return {
    attempts,
    backoff: { type: 'exponential', delay: backoffMs, jitter: 0.5 },
    // Completed jobs are gone at once (their effect is in the sink). A job only fails when it
    // cannot even dead-letter its items (Redis gone at its last attempt): keep those for a week.
    removeOnComplete: true,
    removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
  };
}

/** A write's field names, numbers, dates and punctuation in JSON, measured with room to spare. */
const WRITE_FIELDS_BYTES = 360;

/**
 * A write job's size in Redis: its data as JSON, estimated from its strings, and its vectors'
 * blob. The vectors dominate it, and
 * serializing every job a second time only to weigh it cost the embed stage more than the enqueue.
 * Never below the real size: strings from the source (id, text, model) are measured as JSON writes
 * them, since a quote, newline or control character takes two to six bytes there.
 */
export function writeJobBytes(writes: ItemWrite[]): number {
  let bytes = 16;
  for (const w of writes) {
    bytes += WRITE_FIELDS_BYTES + jsonStringBytes(w.itemId) + (w.vector?.byteLength ?? 0) + (w.contentHash?.length ?? 0) + (w.model === undefined ? 0 : jsonStringBytes(w.model)) + (w.updatedAt?.length ?? 0);
    bytes += (w.heldBy?.length ?? 0) + (w.backfill?.length ?? 0) + (w.text === undefined ? 0 : jsonStringBytes(w.text)) + Buffer.byteLength(JSON.stringify(w.metadata));
  }
  return bytes;
}

/** A string's bytes as JSON holds it, quotes and escapes included (exact for lone surrogates too). */
function jsonStringBytes(value: string): number {
  return Buffer.byteLength(JSON.stringify(value));
}

export function encodeVector(vector: Float32Array): string {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
}

export function decodeVector(encoded: string): Float32Array {
  return floatsOf(Buffer.from(encoded, 'base64'));
}

/**
 * Bytes as float32 values (little-endian, as the API and the blobs hold them): a view when they
 * start on a multiple of 4, else a copy, since a Float32Array needs such a byte offset (a Buffer
 * from Node's pool or from a socket may not have one). Trailing bytes short of a value are dropped.
 */
export function floatsOf(bytes: Buffer): Float32Array {
  const count = Math.floor(bytes.byteLength / 4);
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  const aligned = new Float32Array(count);
  new Uint8Array(aligned.buffer).set(bytes.subarray(0, aligned.byteLength));
  return aligned;
}
