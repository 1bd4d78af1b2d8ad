/**
 * Review of issue 11 (`indexer status`): a pause's recorded reason against the dashboard's own
 * pause and resume buttons, on real Redis queues, through the real bull-board dashboard served by
 * the real admin server. Tests marked "was a defect" failed on the code as first reviewed (fixed since).
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { formatStatus } from '../../../src/cli/status.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { AdminServer } from '../../../src/observability/admin-server.js';
import { createDashboard } from '../../../src/observability/dashboard.js';
import { DeadLetterStore } from '../../../src/deadletter/dead-letter-store.js';
import { KafkaLagReader } from '../../../src/observability/kafka-lag.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { Metrics } from '../../../src/observability/metrics.js';
import { recordPauseReason } from '../../../src/observability/pause-reason.js';
import { gatherStatus } from '../../../src/observability/status-report.js';
import { EMBED_QUEUE } from '../../../src/queue/jobs.js';
import { deletePrefix, services, testConfig } from '../../support/helpers.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

async function setup() {
  const config = testConfig();
  const prefix = config.redis.prefix;
  const redis = new Redis(services().redisUrl);
  // skipMetasUpdate: the read-only test below must see only what status itself writes.
  const queue = new Queue(EMBED_QUEUE, { connection: redis, prefix, skipMetasUpdate: true });
  const lag = new KafkaLagReader(createKafka(config.kafka, silentLogger));
  cleanups.push(async () => {
    await queue.close();
    await lag.close();
    await deletePrefix(services().redisUrl, prefix);
    redis.disconnect();
  });
  const status = async () => {
    const report = await gatherStatus(config, redis, lag);
    return { report, embed: report.generations[0]?.queues.find((q) => q.queue === 'embed') };
  };
  return { config, prefix, redis, queue, status };
}

describe('review: the pause reason', () => {
  // Was a defect (wrong status; fixed): the reason is cleared only by `indexer resume` (src/cli/main.ts). The
  // dashboard, read-write by design, has a resume button (bull-board's PUT
  // /queues/api/queues/<prefix>:embed/resume, which calls queue.resume()); after it the queue runs
  // but `status --json` still reports the quota pause's pauseReason beside paused: false
  // (src/observability/status-report.ts returns it whether or not the queue is paused). And when an
  // operator later pauses the queue from the dashboard for maintenance, `status` shows it "PAUSED
  // since <the old time>: EMBEDDINGS_QUOTA_EXHAUSTED ... Add credit", sending them to the wrong fix.
  it('is gone once the queue is resumed from the dashboard, and a later manual pause is not blamed on it', async () => {
    const { config, prefix, redis, queue, status } = await setup();
    await recordPauseReason(redis, prefix, EMBED_QUEUE, { code: 'EMBEDDINGS_QUOTA_EXHAUSTED', message: 'You exceeded your current quota', fix: 'Add credit or raise the limit, then run `indexer resume`' });
    await queue.pause();
    expect((await status()).embed).toMatchObject({ paused: true, pauseReason: { code: 'EMBEDDINGS_QUOTA_EXHAUSTED' } });

    const dashboard = createDashboard(config, silentLogger);
    const admin = await AdminServer.start({ host: '127.0.0.1', port: 0, metrics: new Metrics(), pipeline: () => undefined, dashboard: { board: dashboard, credentials: undefined }, logger: silentLogger });
    cleanups.push(() => admin.close());
    const base = `http://127.0.0.1:${admin.port}`;
    const press = async (action: 'pause' | 'resume') => {
      const response = await fetch(`${base}/queues/api/queues/${encodeURIComponent(`${prefix}:${EMBED_QUEUE}`)}/${action}`, { method: 'PUT', headers: { origin: base } });
      expect(response.status, `${action}: ${await response.text()}`).toBe(200);
    };

    await press('resume');
    expect(await queue.isPaused()).toBe(false);
    const afterResume = await status();
    expect(afterResume.embed?.paused).toBe(false);
    expect(afterResume.embed?.pauseReason, 'a running queue reported with the old pause reason').toBeNull();

    await press('pause');
    const screen = formatStatus((await status()).report);
    expect(screen, 'a manual pause reported as the old quota pause').not.toContain('EMBEDDINGS_QUOTA_EXHAUSTED');
  });
});

describe('review: dead-letter counts under concurrency', () => {
  it('held: removing the same letters from many clients at once takes each off its count once', async () => {
    const { prefix, redis } = await setup();
    const store = new DeadLetterStore(redis, prefix);
    await store.add(Array.from({ length: 40 }, (_, i) => ({ stage: 'ingest' as const, code: i % 2 ? 'INVALID_EVENT' : 'EVENT_TOO_LARGE', reason: 'x', itemId: `i${i}`, original: Buffer.from('{}'), key: null, source: 't/0@1' })));
    const ids = (await store.list(100)).map((l) => l.id);
    const clients = Array.from({ length: 4 }, () => new Redis(services().redisUrl));
    try {
      // A retry and a purge racing over the same letters: every client removes every id.
      const removed = await Promise.all(clients.map((c) => new DeadLetterStore(c, prefix).remove(ids)));
      expect(removed.reduce((a, b) => a + b, 0)).toBe(40);
    } finally {
      for (const c of clients) c.disconnect();
    }
    expect(await store.count()).toBe(0);
    expect(await store.countsByStageAndCode()).toEqual([]);
    expect(await redis.exists(store.countsKey)).toBe(0);
  });
});

describe('review: status is read-only', () => {
  // Was a defect (fixed: skipMetasUpdate): `indexer status` wrote to Redis. gatherStatus opens a BullMQ Queue per
  // queue (src/observability/status-report.ts, `new Queue(name, { connection: redis, prefix })`),
  // and BullMQ writes `<prefix>:<queue>:meta` on open. A status run with a mistyped QUEUE_PREFIX
  // (or against the wrong Redis) leaves a phantom deployment's keys behind; a look changes state.
  it('leaves no key behind on a prefix nothing uses', async () => {
    const { config, redis } = await setup();
    const lag = new KafkaLagReader(createKafka(config.kafka, silentLogger));
    try {
      await gatherStatus(config, redis, lag);
    } finally {
      await lag.close();
    }
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${config.redis.prefix}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    expect(keys.sort()).toEqual([]);
  });
});
