/**
 * Every error the indexer raises on purpose. The code names the outcome, `canRetry` is the
 * instruction to whoever catches it (the retry wrapper, the queue boundary): a retryable error may
 * heal by itself (timeouts, 429, 5xx, an unreachable sink); a non-retryable one never will (bad
 * input, a wrong dimension, an exhausted quota) and goes to the dead-letter store or stops the process.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'EVENT_INVALID'
  | 'EMBEDDINGS_UNAVAILABLE'
  | 'EMBEDDINGS_RATE_LIMITED'
  | 'EMBEDDINGS_QUOTA_EXHAUSTED'
  | 'EMBEDDINGS_PAUSED'
  | 'EMBEDDINGS_REJECTED'
  | 'EMBEDDINGS_UNAUTHORIZED'
  | 'EMBEDDINGS_CIRCUIT_OPEN'
  | 'EMBEDDINGS_BAD_RESPONSE'
  | 'VECTOR_INVALID'
  | 'SINK_UNAVAILABLE'
  | 'SINK_REJECTED'
  | 'SINK_SCHEMA_MISMATCH'
  | 'WRITE_ITEM_BUSY'
  | 'WRITE_QUEUE_FULL'
  | 'WRITE_VECTOR_MISSING'
  | 'SHUTTING_DOWN'
  | 'JOB_STALLED'
  | 'BACKFILL_INVALID'
  | 'BACKFILL_SOURCE_UNAVAILABLE'
  | 'BACKFILL_CANCELLED'
  | 'REDIS_MISCONFIGURED'
  | 'REDIS_NOT_DURABLE'
  | 'REDIS_DATA_LOST'
  | 'INGEST_FAILED'
  | 'KAFKA_TOPIC_MISSING';

export interface IndexerErrorOptions {
  canRetry: boolean;
  cause?: unknown;
  /** The server told us how long to wait (Retry-After); the retry policy waits at least this. */
  retryAfterMs?: number;
  details?: Record<string, unknown>;
}

export class IndexerError extends Error {
  readonly code: ErrorCode;
  readonly canRetry: boolean;
  readonly retryAfterMs: number | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: IndexerErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.canRetry = options.canRetry;
    this.retryAfterMs = options.retryAfterMs;
    this.details = options.details;
  }
}

/** A setting is missing or malformed: the process must not start. */
export class ConfigError extends IndexerError {
  constructor(readonly problems: { variable: string; message: string }[]) {
    super(
      'CONFIG_INVALID',
      `invalid configuration:\n${problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n')}`,
      { canRetry: false },
    );
  }
}

/** A change event that can never be indexed as it is; it goes to the dead-letter store. */
export class InvalidEventError extends IndexerError {
  /** The item the event is about, when its id could be read: the dead letter names it. */
  itemId: string | undefined;

  constructor(
    message: string,
    readonly field?: string,
  ) {
    super('EVENT_INVALID', message, { canRetry: false, details: field === undefined ? undefined : { field } });
  }
}

export class EmbeddingsError extends IndexerError {}

/**
 * The work was not attempted and must wait, not fail: every endpoint's circuit is open, the queue
 * is paused for an operator, or the provider keeps rate-limiting. The job goes back to the queue
 * without spending one of its attempts (BullMQ's RateLimitError at the job boundary), so an
 * outage of any length dead-letters nothing. Whoever throws it has already told the queue how long
 * to hold the work (a global rate limit or a pause); it is never retried in process.
 */
export class DeferredError extends IndexerError {
  constructor(code: ErrorCode, message: string, options: { retryAfterMs?: number; details?: Record<string, unknown> } = {}) {
    super(code, message, { canRetry: true, ...options });
  }
}
/**
 * The process is stopping: work that would otherwise be retried in process (another attempt, a
 * wait for the rate limiter) goes back to the queue instead, without spending an attempt, and
 * another worker takes it. A request already sent is never abandoned: its answer is kept.
 */
export function handBackOnShutdown(error: unknown, stopping: AbortSignal | undefined): unknown {
  if (!stopping?.aborted || error instanceof DeferredError) return error;
  if (!isRetryable(error) && !(error instanceof Error && error.name === 'AbortError')) return error;
  return new DeferredError('SHUTTING_DOWN', `the worker is stopping: the job goes back to the queue (${errorMessage(error)})`, { retryAfterMs: 0 });
}

export class VectorError extends IndexerError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('VECTOR_INVALID', message, { canRetry: false, details });
  }
}
export class SinkError extends IndexerError {}

/**
 * A backfill that cannot go on: its job data or source is invalid (final: the job fails at once,
 * naming the field), its source cannot be reached (retryable: the job resumes from its checkpoint),
 * or an operator cancelled it (final).
 */
export class BackfillError extends IndexerError {}
export class SchemaMismatchError extends IndexerError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('SINK_SCHEMA_MISMATCH', message, { canRetry: false, details });
  }
}

const RETRYABLE_SYSTEM_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/**
 * Redis replies that mean "not now", each healing without any change to the command: out of memory
 * under noeviction (OOM), a read-only replica or a failover in progress (READONLY, MASTERDOWN,
 * NOREPLICAS), a script running past its time (BUSY), a dataset still loading (LOADING), writes
 * refused after a failed RDB save (MISCONF), a cluster resharding or down (TRYAGAIN, CLUSTERDOWN).
 * Dead-lettering on them would throw away work (vectors paid for) over a passing Redis condition.
 * Every other reply (WRONGTYPE, NOSCRIPT, a script bug) says the command itself is wrong: final.
 */
const TRANSIENT_REDIS_REPLIES = new Set(['OOM', 'READONLY', 'BUSY', 'LOADING', 'MISCONF', 'TRYAGAIN', 'CLUSTERDOWN', 'MASTERDOWN', 'NOREPLICAS']);

/**
 * Redis before 7 wraps the reply of a command that failed inside a script:
 * `ERR Error running script (call to f_<sha>): @user_script:41: @user_script: 41: -OOM command not allowed ...`.
 * Redis 7 passes the inner reply through as it is (`OOM command not allowed ... script: <sha>, on @user_script:1.`).
 */
const WRAPPED_SCRIPT_REPLY = /^ERR Error running script \(call to [^)]*\): (?:@user_script:\s*\d+: )*-?([A-Z]+) /;

/** ioredis's own errors for a connection that is gone or going: the command was never answered. */
const REDIS_CONNECTION_LOST = new Set(['Connection is closed.', "Stream isn't writeable and enableOfflineQueue options is false", 'Command aborted due to connection close']);

/**
 * A Redis error that may pass: a transient reply, recognised by its error code (the reply's first
 * word, or the wrapped script reply's), never by words anywhere in the message; or ioredis giving
 * up on a connection. Named by class (`ReplyError`, `MaxRetriesPerRequestError`) so that core code
 * does not depend on ioredis.
 */
function isTransientRedisError(link: unknown): boolean {
  if (!(link instanceof Error)) return false;
  if (link.name === 'MaxRetriesPerRequestError') return true;
  if (link.name === 'ReplyError') {
    const code = WRAPPED_SCRIPT_REPLY.exec(link.message)?.[1] ?? /^[A-Z]+(?= |$)/.exec(link.message)?.[0];
    return code !== undefined && TRANSIENT_REDIS_REPLIES.has(code);
  }
  return REDIS_CONNECTION_LOST.has(link.message);
}

function* causeChain(error: unknown): Generator<unknown> {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current !== undefined && current !== null && !seen.has(current)) {
    seen.add(current);
    yield current;
    current = (current as { cause?: unknown }).cause;
  }
}

/**
 * Retry only when nothing in the cause chain says it cannot succeed, and something says it may:
 * our own errors by their flag, network failures by their system code, Redis by its reply (see
 * isTransientRedisError). Unknown errors are not retried: a bug retried is a bug multiplied.
 */
export function isRetryable(error: unknown): boolean {
  let retryable = false;
  for (const link of causeChain(error)) {
    if (link instanceof IndexerError) {
      if (!link.canRetry) return false;
      retryable = true;
    } else if (typeof (link as { code?: unknown }).code === 'string' && RETRYABLE_SYSTEM_CODES.has((link as { code: string }).code)) {
      retryable = true;
    } else if (isTransientRedisError(link)) {
      retryable = true;
    }
  }
  return retryable;
}

/** Whether a system error code (ECONNREFUSED, ...) from `codes` is anywhere in the cause chain. */
export function hasSystemCode(error: unknown, codes: ReadonlySet<string>): boolean {
  for (const link of causeChain(error)) {
    const code = (link as { code?: unknown }).code;
    if (typeof code === 'string' && codes.has(code)) return true;
  }
  return false;
}

/** The longest Retry-After anywhere in the chain, if any. */
export function retryAfterOf(error: unknown): number | undefined {
  let longest: number | undefined;
  for (const link of causeChain(error)) {
    if (link instanceof IndexerError && link.retryAfterMs !== undefined) {
      longest = Math.max(longest ?? 0, link.retryAfterMs);
    }
  }
  return longest;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
