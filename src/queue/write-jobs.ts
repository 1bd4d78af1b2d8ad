import { Job, type JobsOptions, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { decodeVector, encodeVector, floatsOf, WRITE_QUEUE, type ItemWrite, type QueuedWrite, type WriteJobData } from './jobs.js';

/**
 * A write job's vectors live beside it, in one binary key (`<prefix>:write-vectors:<job id>`, the
 * float32 vectors end to end), and each upsert in the job's JSON names its `slot` there. Base64
 * inside the JSON cost the main thread ~8% at saturation: JSON.stringify scans every character of
 * a string for escapes (~250 MB/s), and the job crossed UTF-8 both ways, for bytes that JSON never
 * needed to read. The key is added in the same MULTI as the job, so no process ever sees one
 * without the other, and deleted once the job's writes are done.
 */
export function vectorsKey(prefix: string, jobId: string): string {
  return `${prefix}:${WRITE_QUEUE}-vectors:${jobId}`;
}

/** The key pattern of every write job's vectors under a prefix (for a generation's clean-up). */
export function vectorsKeyPattern(prefix: string): string {
  return `${prefix}:${WRITE_QUEUE}-vectors:*`;
}

/**
 * Writes as a new job's data and its vectors' blob: each upsert gets the next slot, whatever slot
 * it had in a job it was read from (a job that shrinks keeps its slots: see remainingWrites).
 */
export function packWrites(writes: ItemWrite[]): { data: WriteJobData; blob: Buffer | undefined } {
  const vectors: Float32Array[] = [];
  const queued = writes.map((w) => {
    if (w.vector === undefined) return queuedWrite(w, undefined);
    vectors.push(w.vector);
    return queuedWrite(w, vectors.length - 1);
  });
  if (vectors.length === 0) return { data: { writes: queued }, blob: undefined };
  const dimensions = (vectors[0] as Float32Array).length;
  if (vectors.some((v) => v.length !== dimensions)) throw new Error(`a write job's vectors must share one dimension (${dimensions}); got ${[...new Set(vectors.map((v) => v.length))].join(', ')}`);
  return { data: { writes: queued, dimensions }, blob: Buffer.concat(vectors.map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength))) };
}

/**
 * The data a job keeps when it shrinks to these of its writes: their slots stay as they were, and
 * so does `dimensions` (the blob is still there, and is removed when the job completes). A vector
 * without a slot came inline, in a job an older version queued: it stays inline.
 */
export function remainingWrites(writes: ItemWrite[], dimensions: number | undefined): WriteJobData {
  const queued = writes.map((w) => {
    const q = queuedWrite(w, w.slot);
    if (w.slot === undefined && w.vector !== undefined) q.vector = encodeVector(w.vector);
    return q;
  });
  return dimensions === undefined ? { writes: queued } : { writes: queued, dimensions };
}

/**
 * A job's writes with their vectors: from the blob by slot, or (jobs queued by an older version)
 * base64 inside the write. An upsert whose vector is not there (the blob was removed after its
 * writes were recorded, and the job ran again) comes back without one: the writer only needs it
 * if the item was not written, and then dead-letters it (WRITE_VECTOR_MISSING).
 */
export function unpackWrites(data: WriteJobData, blob: Buffer | null | undefined): ItemWrite[] {
  const floats = blob ? floatsOf(blob) : undefined;
  const dimensions = data.dimensions ?? 0;
  return data.writes.map((q) => {
    const write = itemWrite(q);
    if (q.slot !== undefined) {
      write.slot = q.slot;
      const start = q.slot * dimensions;
      if (floats !== undefined && dimensions > 0 && start + dimensions <= floats.length) write.vector = floats.subarray(start, start + dimensions);
    } else if (typeof q.vector === 'string') {
      write.vector = decodeVector(q.vector);
    }
    return write;
  });
}

/** A write as its dead letter holds it: the vector as base64 (what `dlq retry` reads back). */
export function writeLetter(write: ItemWrite): unknown {
  const { vector, slot: _slot, ...rest } = write;
  return vector === undefined ? rest : { ...rest, vector: encodeVector(vector) };
}

/**
 * Whether a job was added with a blob (else it has none, or carries its vectors inline): packWrites
 * sets `dimensions` exactly then, and it stays when the job shrinks, even to writes without a vector.
 */
export function hasBlob(data: WriteJobData): boolean {
  return data.dimensions !== undefined;
}

/**
 * Adds a write job with its vectors in one MULTI: the job and its blob exist together or not at
 * all. This is what Queue.add does (Job.addJob is BullMQ's own step for adding inside a
 * transaction, as its addBulk does), with the blob's SET before it.
 */
export async function addWriteJob(queue: Queue<WriteJobData>, writes: ItemWrite[], opts: JobsOptions & { jobId: string }): Promise<void> {
  const { data, blob } = packWrites(writes);
  if (blob === undefined) {
    await queue.add('writes', data, opts);
    return;
  }
  const key = vectorsKey(queue.opts.prefix ?? 'bull', opts.jobId);
  const multi = (await queue.backend.client).multi();
  multi.runCommand('set', [key, blob]);
  // Queued on the transaction at once; its promise settles with exec (its error is exec's).
  job(queue, data, opts).addJob(multi).catch(() => undefined);
  let replies: [Error | null, unknown][];
  try {
    replies = (await multi.exec()) ?? [];
  } catch (error) {
    throw causeOfAbortedTransaction(error);
  }
  const failed = replies.find(([error]) => error)?.[0];
  if (failed === undefined || failed === null) return;
  // ioredis loads a script before a MULTI only when this connection has not loaded it yet, and
  // its fallback for a script Redis no longer holds (SCRIPT FLUSH, a failover behind a proxy)
  // does not work inside one: the blob was SET and the job not added. Added apart instead (a
  // plain add reloads the script, so the next MULTI works); a crash between the two leaves only
  // the blob, which the retry of this job id overwrites.
  if (!/^NOSCRIPT/.test(failed.message)) throw failed;
  await queue.add('writes', data, opts);
}

/**
 * Redis's own reason, as a Queue.add would have thrown it, so the retry policy can read it: an
 * EXECABORT carries the replies that aborted it (OOM under noeviction passes), and a connection
 * lost mid-transaction is ioredis's AbortError (nothing was applied: the retry adds it whole).
 */
function causeOfAbortedTransaction(error: unknown): unknown {
  const previous = (error as { previousErrors?: unknown[] }).previousErrors;
  if (/^EXECABORT/.test((error as Error).message) && previous?.[0] instanceof Error) return previous[0];
  return error;
}

function job(queue: Queue<WriteJobData>, data: WriteJobData, opts: JobsOptions & { jobId: string }): Job<WriteJobData> {
  return new Job<WriteJobData>(queue, 'writes', data, opts, opts.jobId);
}

// KEYS: pairs of a vectors key and its job's key. ARGV[1]: the fewest seconds a vectors key must
// have gone unread to be removed. A vectors key outlives its job when the job was removed by hand
// (the dashboard) or failed for good and was later trimmed by BullMQ. Its job is checked here,
// in the same script, so a job added meanwhile keeps it; the idle time spares the one moment a
// key exists before its job (a NOSCRIPT add, which sets the key and adds the job apart). OBJECT
// IDLETIME fails under an LFU eviction policy, which the worker refuses anyway: nothing is removed.
const REMOVE_ORPHANED_VECTORS = `
local removed = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    local ok, idle = pcall(redis.call, 'OBJECT', 'IDLETIME', KEYS[i])
    if ok and idle and idle >= tonumber(ARGV[1]) then
      redis.call('UNLINK', KEYS[i])
      removed = removed + 1
    end
  end
end
return removed`;

/**
 * Vectors keys checked per script call: a short script, never one long block of Redis (the keys
 * are unlinked, their megabytes freed by Redis in the background: a DEL of 200 keys of 4 MiB held
 * Redis for 36-70 ms).
 */
const SWEEP_SLICE = 50;

/**
 * Removes the vectors keys whose write job no longer exists and that nobody read for
 * `minIdleSeconds`. One SCAN over the keyspace, which walks every key (item states included):
 * run it seldom. Stops between pages once `stop` is aborted (a process shutting down does not
 * wait for a walk of millions of keys); the next run starts over.
 */
export async function removeOrphanedVectors(redis: Redis, prefix: string, minIdleSeconds: number, stop?: AbortSignal): Promise<number> {
  const keyPrefix = vectorsKey(prefix, '');
  let removed = 0;
  const pages = redis.scanStream({ match: vectorsKeyPattern(prefix), count: 1000 });
  for await (const keys of pages as AsyncIterable<string[]>) {
    if (stop?.aborted) {
      pages.destroy();
      break;
    }
    for (let i = 0; i < keys.length; i += SWEEP_SLICE) {
      const pairs = keys.slice(i, i + SWEEP_SLICE).flatMap((key) => [key, `${prefix}:${WRITE_QUEUE}:${key.slice(keyPrefix.length)}`]);
      removed += (await redis.eval(REMOVE_ORPHANED_VECTORS, pairs.length, ...pairs, minIdleSeconds)) as number;
    }
  }
  return removed;
}

/** A write job's blob, or null when it has none or it is gone. */
export async function readBlob(redis: Redis, prefix: string, jobId: string): Promise<Buffer | null> {
  return redis.getBuffer(vectorsKey(prefix, jobId));
}

/** Once a job's writes are all done (written, skipped or dead-lettered with their vectors). */
export async function removeBlob(redis: Redis, prefix: string, jobId: string): Promise<void> {
  await redis.del(vectorsKey(prefix, jobId));
}

/**
 * Field by field, like the embed stage's itemWrite: V8 (Node 20) copies an object spread property
 * by property. Optional fields are set only when present, so JSON omits them as before.
 */
function queuedWrite(w: ItemWrite, slot: number | undefined): QueuedWrite {
  const q: QueuedWrite = { itemId: w.itemId, op: w.op, version: w.version, updatedAt: w.updatedAt, metadata: w.metadata, contentHash: w.contentHash, model: w.model, embeddedAt: w.embeddedAt, acceptedAt: w.acceptedAt };
  if (slot !== undefined) q.slot = slot;
  copyOptional(w, q);
  return q;
}

function itemWrite(q: QueuedWrite): ItemWrite {
  const w: ItemWrite = { itemId: q.itemId, op: q.op, version: q.version, updatedAt: q.updatedAt, metadata: q.metadata, contentHash: q.contentHash, model: q.model, vector: undefined, embeddedAt: q.embeddedAt, acceptedAt: q.acceptedAt };
  copyOptional(q, w);
  return w;
}

type OptionalField = 'textTokens' | 'truncated' | 'text' | 'versionSource' | 'heldBy' | 'backfill';
const OPTIONAL_FIELDS: readonly OptionalField[] = ['textTokens', 'truncated', 'text', 'versionSource', 'heldBy', 'backfill'];

function copyOptional(from: Pick<ItemWrite, OptionalField>, to: Pick<ItemWrite, OptionalField>): void {
  for (const field of OPTIONAL_FIELDS) if (from[field] !== undefined) (to as Record<OptionalField, unknown>)[field] = from[field];
}
