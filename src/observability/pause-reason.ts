import type { Redis } from 'ioredis';

/**
 * Why an operator-paused queue is paused. BullMQ records only that a queue is paused; the worker
 * that paused it knows why (an exhausted quota, a refused key) and writes it here, so that
 * `indexer status` can say so from any host. `indexer resume` clears it with the pause.
 */
export interface PauseReason {
  /** The error code that paused it: EMBEDDINGS_QUOTA_EXHAUSTED, EMBEDDINGS_UNAUTHORIZED, ... */
  code: string;
  message: string;
  /** What the operator does about it. */
  fix: string;
  /** ISO time of the pause. */
  at: string;
}

export const pauseReasonKey = (prefix: string, queue: string) => `${prefix}:status:paused:${queue}`;

export async function recordPauseReason(redis: Redis, prefix: string, queue: string, reason: Omit<PauseReason, 'at'>): Promise<void> {
  await redis.set(pauseReasonKey(prefix, queue), JSON.stringify({ ...reason, at: new Date().toISOString() }));
}

export async function clearPauseReason(redis: Redis, prefix: string, queue: string): Promise<void> {
  await redis.del(pauseReasonKey(prefix, queue));
}

/**
 * Deletes the reason when it is older than `olderThanMs` and still the one read (a script: a
 * pause recorded meanwhile is kept). The reason is written just before the queue is paused, so a
 * sampler that finds the queue running and a fresh reason may be between the two.
 */
export async function clearStalePauseReason(redis: Redis, prefix: string, queue: string, olderThanMs: number): Promise<void> {
  const key = pauseReasonKey(prefix, queue);
  const raw = await redis.get(key);
  if (raw === null) return;
  const at = Date.parse(readAt(raw));
  if (Number.isFinite(at) && Date.now() - at < olderThanMs) return;
  await redis.eval(DELETE_IF_UNCHANGED, 1, key, raw);
}

/** The `at` of a recorded reason; '' (stale) for one written by hand. */
function readAt(raw: string): string {
  try {
    return (JSON.parse(raw) as Partial<PauseReason>).at ?? '';
  } catch {
    return '';
  }
}

const DELETE_IF_UNCHANGED = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

export async function readPauseReason(redis: Redis, prefix: string, queue: string): Promise<PauseReason | undefined> {
  const raw = await redis.get(pauseReasonKey(prefix, queue));
  if (raw === null) return undefined;
  try {
    return JSON.parse(raw) as PauseReason;
  } catch {
    // Written by hand or by another version: still worth showing.
    return { code: 'UNKNOWN', message: raw, fix: 'run `indexer resume` once the cause is fixed', at: '' };
  }
}
