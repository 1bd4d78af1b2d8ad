import { setTimeout as sleep } from 'node:timers/promises';
import { DeferredError, isRetryable, retryAfterOf } from './errors.js';

export interface RetryPolicy {
  /** Total attempts, the first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 20_000 };

/**
 * Exponential backoff with full jitter (a random wait in [0, base * 2^n]): concurrent workers that
 * failed together do not come back together. A server's Retry-After is a floor, never shortened.
 */
export function backoffDelay(policy: RetryPolicy, failedAttempt: number, retryAfterMs?: number, random = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, failedAttempt - 1));
  const jittered = Math.floor(random() * ceiling);
  return retryAfterMs === undefined ? jittered : Math.max(retryAfterMs, jittered);
}

export interface RetryOptions {
  policy?: RetryPolicy;
  signal?: AbortSignal;
  onRetry?: (info: { attempt: number; delayMs: number; error: unknown }) => void;
}

/**
 * The one retry wrapper for every HTTP and sink call. Retries only errors that say they may heal
 * (see isRetryable), and never a DeferredError; when it gives up, the last error is thrown with every attempt's error attached
 * as an AggregateError cause, so nothing about the failure is lost.
 */
export async function withRetry<T>(operation: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const policy = options.policy ?? DEFAULT_RETRY_POLICY;
  const errors: unknown[] = [];
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await operation(attempt);
    } catch (error) {
      errors.push(error);
      // Deferred work waits in the queue, not in this loop (see DeferredError).
      if (error instanceof DeferredError) throw error;
      if (!isRetryable(error) || attempt >= policy.attempts) {
        if (errors.length > 1 && error instanceof Error && error.cause === undefined) {
          Object.defineProperty(error, 'cause', {
            value: new AggregateError(errors, `failed after ${errors.length} attempts`),
            enumerable: false,
            configurable: true,
          });
        }
        throw error;
      }
      const delayMs = backoffDelay(policy, attempt, retryAfterOf(error));
      options.onRetry?.({ attempt, delayMs, error });
      await sleep(delayMs, undefined, { signal: options.signal });
    }
  }
}
