import type { Redis } from 'ioredis';
import { errorMessage, IndexerError } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';
import { RedisDataLostError, recoveryAdvice } from '../state/epoch.js';

/**
 * Ingest commits Kafka offsets once the jobs made of a batch are in Redis. Redis acknowledges a
 * write when it holds it in memory: a crash before its AOF reaches disk, or a failover to a replica
 * that had not received it, loses jobs whose events Kafka will never deliver again. This module
 * reads what the Redis at hand can promise, refuses a Redis that would evict the indexer's keys,
 * and makes ingest wait, once per Kafka batch, until the batch's jobs are as durable as the
 * Redis allows (WAITAOF on 7.2+ with AOF on, WAIT with REDIS_MIN_REPLICAS) before it commits.
 */

/** What the indexer needs to know about a Redis; undefined where the Redis would not say. */
export interface RedisFacts {
  version: string | undefined;
  evictionPolicy: string | undefined;
  aofEnabled: boolean | undefined;
  /** From CONFIG GET, which managed Redis services often refuse. */
  appendfsync: string | undefined;
  connectedReplicas: number | undefined;
}

/** What ingest waits for before a commit: the primary's AOF fsync, and/or this many replicas. */
export interface DurabilityMode {
  localFsync: boolean;
  replicas: number;
}

export interface RedisJudgement {
  /** Why the indexer must not start on this Redis (with the fix), if it must not. */
  refusal: string | undefined;
  /** Risks the operator should know about, each with the way to remove it. */
  warnings: string[];
  mode: DurabilityMode;
}

/** INFO's text as name -> value (sections and comments dropped). */
export function parseInfo(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(':');
    if (at > 0 && !line.startsWith('#')) fields.set(line.slice(0, at), line.slice(at + 1).trim());
  }
  return fields;
}

/**
 * Reads the version, eviction policy, persistence and replicas. INFO and CONFIG GET may each be
 * refused (managed Redis services restrict CONFIG, some rename INFO): what could not be read stays
 * undefined and is named in `refused`, and the checks that need it are skipped with a warning.
 */
export async function readRedisFacts(redis: Redis): Promise<{ facts: RedisFacts; refused: string[] }> {
  const refused: string[] = [];
  let info = new Map<string, string>();
  try {
    info = parseInfo(await redis.info());
  } catch (error) {
    refused.push(`INFO (${errorMessage(error)})`);
  }
  let appendfsync: string | undefined;
  try {
    const reply = (await redis.config('GET', 'appendfsync')) as string[];
    appendfsync = reply[1];
  } catch (error) {
    refused.push(`CONFIG GET appendfsync (${errorMessage(error)})`);
  }
  const aof = info.get('aof_enabled');
  const replicas = info.get('connected_slaves');
  return {
    facts: {
      version: info.get('redis_version'),
      evictionPolicy: info.get('maxmemory_policy'),
      aofEnabled: aof === undefined ? undefined : aof === '1',
      appendfsync,
      connectedReplicas: replicas === undefined ? undefined : Number(replicas),
    },
    refused,
  };
}

/** WAITAOF arrived in Redis 7.2 (Valkey reports redis_version 7.2.x and has it too). */
export function hasWaitAof(version: string | undefined): boolean {
  const [major = 0, minor = 0] = (version ?? '').split('.').map(Number);
  return major > 7 || (major === 7 && minor >= 2);
}

/** Judges a Redis by its facts: whether the indexer may run on it, the risks, and what to wait for. */
export function judgeRedis(facts: RedisFacts, minReplicas: number): RedisJudgement {
  const warnings: string[] = [];
  let refusal: string | undefined;
  if (facts.evictionPolicy !== undefined && facts.evictionPolicy !== 'noeviction') {
    refusal =
      `Redis evicts keys under memory pressure (maxmemory-policy ${facts.evictionPolicy}): it would silently drop queued jobs and item state. ` +
      'Set maxmemory-policy to noeviction (redis.conf, `CONFIG SET maxmemory-policy noeviction`, or a managed service\'s parameter group), then start the worker again';
  }
  const waitAof = facts.aofEnabled === true && hasWaitAof(facts.version) && facts.appendfsync !== 'no';
  if (facts.aofEnabled === false) {
    warnings.push(
      'Redis has no AOF (appendonly no): if it restarts, every job and item state written since its last snapshot is lost, while the Kafka offsets of those events are already committed. ' +
        'Set appendonly yes (with appendfsync everysec or always); the worker then refuses to start after such a loss only if Redis lost its epoch too (see `indexer recover`)',
    );
  } else if (facts.aofEnabled === true && facts.appendfsync === 'no') {
    warnings.push('Redis writes its AOF with appendfsync no: the operating system decides when jobs reach disk, and nothing can wait for it. Set appendfsync everysec (on Redis 7.2+, ingest then waits for the fsync with WAITAOF) or always');
  } else if (facts.aofEnabled === true && facts.appendfsync === 'everysec' && !hasWaitAof(facts.version)) {
    warnings.push(
      `Redis ${facts.version ?? '(unknown version)'} fsyncs its AOF every second and has no WAITAOF (Redis 7.2+): up to about 1 s of jobs it acknowledged may be lost if Redis crashes, and their Kafka offsets may already be committed. ` +
        'To avoid it: appendfsync always, or Redis 7.2+ (ingest then waits for the fsync), or REDIS_MIN_REPLICAS=1 with a replica',
    );
  }
  if (minReplicas > 0 && facts.connectedReplicas !== undefined && facts.connectedReplicas < minReplicas) {
    warnings.push(`REDIS_MIN_REPLICAS=${minReplicas} but Redis has ${facts.connectedReplicas} connected replica(s): ingest holds every batch uncommitted, and reports not ready, until enough replicas acknowledge it`);
  }
  return { refusal, warnings, mode: { localFsync: waitAof, replicas: minReplicas } };
}

/** Warnings already logged by this process (each generation's pipeline checks the same Redis). */
const warned = new Set<string>();

/**
 * Checks the Redis at start: refuses one that evicts keys (REDIS_MISCONFIGURED, naming the
 * setting and the fix), warns once per process about each risk, and returns what ingest waits for
 * before a commit. Settings it cannot read (a managed Redis refusing INFO or CONFIG) are warned
 * about and not held against it.
 */
export async function checkRedisAtStart(redis: Redis, minReplicas: number, logger: Logger): Promise<DurabilityMode> {
  const { facts, refused } = await readRedisFacts(redis);
  const judged = judgeRedis(facts, minReplicas);
  if (judged.refusal) throw new IndexerError('REDIS_MISCONFIGURED', judged.refusal, { canRetry: false, details: { setting: 'maxmemory-policy' } });
  const warnings = [...judged.warnings];
  if (refused.length > 0) {
    warnings.push(`could not read Redis settings (${refused.join('; ')}): make sure maxmemory-policy is noeviction and AOF is on (appendonly yes) on this Redis`);
  }
  for (const warning of warnings) {
    if (warned.has(warning)) continue;
    warned.add(warning);
    logger.warn({ redisVersion: facts.version }, warning);
  }
  return judged.mode;
}

/** The jobs of a batch are not yet as durable as configured: ingest holds the batch and tries again. */
export class RedisNotDurableError extends IndexerError {
  constructor(message: string) {
    super('REDIS_NOT_DURABLE', message, { canRetry: true });
  }
}

/**
 * Confirms, before ingest commits a batch's offsets, that Redis still holds the epoch and that
 * every write this process made before is durable as the mode asks. One round trip per call on a
 * connection of its own (WAIT and WAITAOF block their connection), pipelined: `SET epoch XX`, a
 * write whose replication offset lies past every write already acknowledged to any of this
 * process's connections (Redis applies and replicates writes in one order), so WAITAOF and WAIT,
 * which wait for the calling connection's last write, cover them all; then WAITAOF and/or WAIT.
 * Concurrent callers share the next round not yet sent (a group commit): partitions consumed in
 * parallel pay one wait, not one each.
 */
export class CommitGate {
  private pending: Promise<void> | undefined;
  private previous: Promise<void> = Promise.resolve();

  constructor(
    private readonly redis: Redis,
    private readonly epoch: { key: string; value: string },
    readonly mode: DurabilityMode,
    private readonly timeoutMs: number,
  ) {}

  confirm(): Promise<void> {
    if (this.pending) return this.pending;
    const round = this.previous
      .catch(() => undefined)
      .then(() => {
        // From here on the round is being sent: a later caller's writes may come after its mark.
        this.pending = undefined;
        return this.sendRound();
      });
    this.pending = round;
    this.previous = round;
    return round;
  }

  private async sendRound(): Promise<void> {
    const pipeline = this.redis.pipeline().set(this.epoch.key, this.epoch.value, 'XX');
    if (this.mode.localFsync) pipeline.call('WAITAOF', 1, 0, this.timeoutMs);
    if (this.mode.replicas > 0) pipeline.call('WAIT', this.mode.replicas, this.timeoutMs);
    const replies = (await pipeline.exec()) ?? [];
    for (const [error] of replies) if (error) throw error;
    const [mark, ...waits] = replies.map(([, value]) => value);
    if (mark !== 'OK') {
      throw new RedisDataLostError(`Redis lost the indexer's data while it ran (the epoch ${this.epoch.key} is gone: a restart without persistence, a failover to an empty replica, a flush). ${recoveryAdvice()}`);
    }
    if (this.mode.localFsync) {
      const [local] = waits.shift() as [number, number];
      if (local < 1) throw new RedisNotDurableError(`Redis did not fsync its AOF within REDIS_DURABILITY_TIMEOUT_MS=${this.timeoutMs} (WAITAOF 1 0): check the disk of the Redis server`);
    }
    if (this.mode.replicas > 0) {
      const acknowledged = waits.shift() as number;
      if (acknowledged < this.mode.replicas) {
        throw new RedisNotDurableError(
          `${acknowledged} of REDIS_MIN_REPLICAS=${this.mode.replicas} Redis replica(s) acknowledged the batch's jobs within ${this.timeoutMs} ms (WAIT): bring the replicas back (INFO replication on the primary lists them), or lower REDIS_MIN_REPLICAS`,
        );
      }
    }
  }
}
