/**
 * Issue 10: what the indexer makes of a Redis's settings at start: an evicting Redis is refused
 * naming the setting and the fix, persistence risks are warned about with the way out, and ingest
 * waits for WAITAOF only where Redis has it (7.2+, AOF on, an fsync policy it can wait for) and for
 * WAIT only when REDIS_MIN_REPLICAS asks for replicas.
 */
import { describe, expect, it } from 'vitest';
import { hasWaitAof, judgeRedis, parseInfo, type RedisFacts } from '../../../src/queue/redis-durability.js';

const debian: RedisFacts = { version: '7.0.15', evictionPolicy: 'noeviction', aofEnabled: true, appendfsync: 'everysec', connectedReplicas: 0 };

describe('judgeRedis', () => {
  it('refuses a Redis that evicts keys, naming maxmemory-policy and noeviction', () => {
    const judged = judgeRedis({ ...debian, evictionPolicy: 'allkeys-lru' }, 0);
    expect(judged.refusal).toMatch(/maxmemory-policy allkeys-lru/);
    expect(judged.refusal).toMatch(/Set maxmemory-policy to noeviction/);
    expect(judgeRedis(debian, 0).refusal).toBeUndefined();
  });

  it('does not hold settings it could not read against the Redis', () => {
    const judged = judgeRedis({ version: undefined, evictionPolicy: undefined, aofEnabled: undefined, appendfsync: undefined, connectedReplicas: undefined }, 0);
    expect(judged.refusal).toBeUndefined();
    expect(judged.warnings).toEqual([]);
    expect(judged.mode).toEqual({ localFsync: false, replicas: 0 });
  });

  it('warns that without AOF a restart loses the jobs of committed offsets', () => {
    const judged = judgeRedis({ ...debian, aofEnabled: false }, 0);
    expect(judged.warnings.join('\n')).toMatch(/no AOF \(appendonly no\).*offsets of those events are already committed.*Set appendonly yes/);
  });

  it('warns that everysec before 7.2 may lose about a second of acknowledged jobs, and how to avoid it', () => {
    const [warning] = judgeRedis(debian, 0).warnings;
    expect(warning).toMatch(/up to about 1 s of jobs/);
    expect(warning).toMatch(/appendfsync always, or Redis 7\.2\+/);
    expect(judgeRedis({ ...debian, appendfsync: 'always' }, 0).warnings).toEqual([]);
    expect(judgeRedis({ ...debian, version: '7.2.4' }, 0).warnings).toEqual([]);
  });

  it('waits for the AOF fsync (WAITAOF) only on 7.2+ with AOF on and an fsync policy that fsyncs', () => {
    expect(judgeRedis(debian, 0).mode.localFsync).toBe(false);
    expect(judgeRedis({ ...debian, version: '7.2.0' }, 0).mode.localFsync).toBe(true);
    expect(judgeRedis({ ...debian, version: '8.0.1' }, 0).mode.localFsync).toBe(true);
    expect(judgeRedis({ ...debian, version: '7.2.0', aofEnabled: false }, 0).mode.localFsync).toBe(false);
    expect(judgeRedis({ ...debian, version: '7.2.0', appendfsync: 'no' }, 0).mode.localFsync).toBe(false);
    // A managed Redis that refuses CONFIG GET: its AOF is on, its fsync policy unknown; WAITAOF says.
    expect(judgeRedis({ ...debian, version: '7.2.0', appendfsync: undefined }, 0).mode.localFsync).toBe(true);
  });

  it('waits for replicas (WAIT) as REDIS_MIN_REPLICAS says, and warns when fewer are connected', () => {
    expect(judgeRedis(debian, 0).mode.replicas).toBe(0);
    const judged = judgeRedis({ ...debian, appendfsync: 'always' }, 1);
    expect(judged.mode.replicas).toBe(1);
    expect(judged.warnings.join('\n')).toMatch(/REDIS_MIN_REPLICAS=1 but Redis has 0 connected replica/);
    expect(judgeRedis({ ...debian, appendfsync: 'always', connectedReplicas: 1 }, 1).warnings).toEqual([]);
  });
});

describe('hasWaitAof and parseInfo', () => {
  it('knows which versions have WAITAOF', () => {
    expect(['6.2.14', '7.0.15', '7.1.0', undefined, ''].map(hasWaitAof)).toEqual([false, false, false, false, false]);
    expect(['7.2.0', '7.2.4', '7.4.1', '8.0.0'].map(hasWaitAof)).toEqual([true, true, true, true]);
  });

  it('reads INFO text', () => {
    const info = parseInfo('# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nmaxmemory_policy:noeviction\r\n# Persistence\r\naof_enabled:1\r\n');
    expect(info.get('redis_version')).toBe('7.0.15');
    expect(info.get('maxmemory_policy')).toBe('noeviction');
    expect(info.get('aof_enabled')).toBe('1');
    expect(info.has('# Server')).toBe(false);
  });
});
