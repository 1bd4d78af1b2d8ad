/**
 * Review of the writers' hourly sweep of orphaned vectors keys (removeOrphanedVectors), on a Redis
 * of its own. The idle time is forced past the threshold (1 s, the key left unread 2 s), so only the
 * job-hash check in the script stands between the sweep and a live job's vectors: every BullMQ state
 * a write job can wait in must keep its key; only a job that is gone loses it; and a sweep under one
 * prefix never reaches another prefix (another generation, another deployment).
 */
import { DelayedError, Worker, type Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { newJobId, WRITE_QUEUE, type WriteJobData } from '../../../src/queue/jobs.js';
import { addWriteJob, removeOrphanedVectors, vectorsKey } from '../../../src/queue/write-jobs.js';
import { waitFor } from '../../support/helpers.js';
import { writeJobRedis } from '../../support/write-job-redis.js';

const DIMENSIONS = 8;
const { queueOn, connection, closeAfter, admin, upsert } = writeJobRedis(DIMENSIONS);

function workerOn(prefix: string, processor: (job: Job<WriteJobData>, token?: string) => Promise<void>): Worker<WriteJobData> {
  const worker = new Worker<WriteJobData>(WRITE_QUEUE, processor, { connection: connection(`${prefix}-worker`), prefix, concurrency: 1 });
  closeAfter(() => worker.close(true));
  return worker;
}

const never = () => new Promise<void>(() => undefined);
const idleAtLeast = (key: string, seconds: number) => waitFor(`${key} idle for ${seconds} s`, async () => ((await admin().object('IDLETIME', key)) as number) >= seconds || undefined, { timeoutMs: 15_000, intervalMs: 200 });
const stateOf = (prefix: string, id: string) => queueOn(prefix).getJobState(id);

describe('removeOrphanedVectors against every state a live write job waits in', () => {
  it('keeps the vectors of waiting, delayed, prioritized, active, moved-to-delayed, backing-off and failed jobs, idle or not', async () => {
    const live: { prefix: string; id: string; state: string }[] = [];
    const add = async (prefix: string, opts: Record<string, unknown> = {}) => {
      const id = newJobId('w');
      await addWriteJob(queueOn(prefix), [upsert(id)], { jobId: id, ...opts });
      return id;
    };

    live.push({ prefix: 'waiting', id: await add('waiting'), state: 'waiting' });
    live.push({ prefix: 'delayed', id: await add('delayed', { delay: 3_600_000 }), state: 'delayed' });
    live.push({ prefix: 'prioritized', id: await add('prioritized', { priority: 10 }), state: 'prioritized' });

    const activeId = await add('active');
    workerOn('active', never);
    await waitFor('active', async () => (await stateOf('active', activeId)) === 'active' || undefined);
    live.push({ prefix: 'active', id: activeId, state: 'active' });

    // Our deferral: moveToDelayed then DelayedError (atBatchJobBoundary).
    const deferredId = await add('deferred');
    workerOn('deferred', async (job, token) => {
      await job.moveToDelayed(Date.now() + 3_600_000, token);
      throw new DelayedError();
    });
    await waitFor('deferred', async () => (await stateOf('deferred', deferredId)) === 'delayed' || undefined);
    live.push({ prefix: 'deferred', id: deferredId, state: 'delayed' });

    // A retry with backoff (an attempt spent, job back in delayed for an hour).
    const backoffId = await add('backoff', { attempts: 3, backoff: { type: 'fixed', delay: 3_600_000 } });
    workerOn('backoff', async () => {
      throw new Error('sink down');
    });
    await waitFor('backing off', async () => (await stateOf('backoff', backoffId)) === 'delayed' || undefined);
    live.push({ prefix: 'backoff', id: backoffId, state: 'delayed' });

    // Failed for good, still in the failed set (removeOnFail keeps it 7 days): it can be retried.
    const failedId = await add('failed', { attempts: 1, removeOnFail: { age: 7 * 24 * 3600, count: 10_000 } });
    workerOn('failed', async () => {
      throw new Error('dead letters unreachable');
    });
    await waitFor('failed', async () => (await stateOf('failed', failedId)) === 'failed' || undefined);
    live.push({ prefix: 'failed', id: failedId, state: 'failed' });

    for (const { prefix, id } of live) await idleAtLeast(vectorsKey(prefix, id), 2);
    const sweeper = connection('sweeper');
    for (const { prefix, id, state } of live) {
      expect(await stateOf(prefix, id)).toBe(state);
      expect(await removeOrphanedVectors(sweeper, prefix, 1)).toBe(0);
      expect(await admin().exists(vectorsKey(prefix, id))).toBe(1);
    }
  });

  it('removes the vectors once the job is gone: removed by hand, drained, obliterated, failed and cleaned', async () => {
    const gone: { prefix: string; id: string }[] = [];
    for (const prefix of ['removed', 'drained', 'obliterated']) {
      const id = newJobId('w');
      await addWriteJob(queueOn(prefix), [upsert(id)], { jobId: id });
      gone.push({ prefix, id });
    }
    await queueOn('removed').remove(gone[0]!.id);
    await queueOn('drained').drain(true);
    await queueOn('obliterated').obliterate({ force: true });

    const cleanedId = newJobId('w');
    await addWriteJob(queueOn('cleaned'), [upsert(cleanedId)], { jobId: cleanedId, attempts: 1 });
    workerOn('cleaned', async () => {
      throw new Error('for good');
    });
    await waitFor('failed', async () => (await stateOf('cleaned', cleanedId)) === 'failed' || undefined);
    await queueOn('cleaned').clean(0, 100, 'failed');
    gone.push({ prefix: 'cleaned', id: cleanedId });

    const sweeper = connection('sweeper');
    for (const { prefix, id } of gone) {
      expect(await admin().exists(`${prefix}:${WRITE_QUEUE}:${id}`)).toBe(0);
      expect(await admin().exists(vectorsKey(prefix, id))).toBe(1);
      await idleAtLeast(vectorsKey(prefix, id), 2);
      expect(await removeOrphanedVectors(sweeper, prefix, 1)).toBe(1);
      expect(await admin().exists(vectorsKey(prefix, id))).toBe(0);
    }
  });
});

describe('removeOrphanedVectors and other prefixes', () => {
  it("never reaches another generation's or another deployment's vectors keys", async () => {
    // Generation prefixes are `<prefix>:g<id>` (generationPrefix); QUEUE_PREFIX allows [A-Za-z0-9._-].
    const others = ['indexer:g2', 'indexer2', 'indexer-eu', 'indexer.eu', 'indexer_eu', 'indexerx'];
    const blob = Buffer.alloc(DIMENSIONS * 4);
    for (const prefix of others) await admin().set(vectorsKey(prefix, 'wORPHAN'), blob);
    await admin().set(vectorsKey('indexer', 'wORPHAN'), blob);
    await admin().set(vectorsKey('indexer:g2', 'wGEN2'), blob);
    for (const prefix of [...others, 'indexer']) await idleAtLeast(vectorsKey(prefix, 'wORPHAN'), 2);

    const sweeper = connection('sweeper');
    expect(await removeOrphanedVectors(sweeper, 'indexer', 1)).toBe(1);
    expect(await admin().exists(vectorsKey('indexer', 'wORPHAN'))).toBe(0);
    for (const prefix of others) expect(await admin().exists(vectorsKey(prefix, 'wORPHAN'))).toBe(1);
    // And generation 2's own sweep stays within generation 2.
    expect(await removeOrphanedVectors(sweeper, 'indexer:g2', 1)).toBe(2);
    for (const prefix of others.filter((p) => p !== 'indexer:g2')) expect(await admin().exists(vectorsKey(prefix, 'wORPHAN'))).toBe(1);
  });
});

describe('removeOrphanedVectors and idle time', () => {
  it("does not reset a key's idle time itself (a second writer's sweep sees the same age)", async () => {
    const id = newJobId('w');
    await addWriteJob(queueOn('idle'), [upsert(id)], { jobId: id });
    await idleAtLeast(vectorsKey('idle', id), 2);
    const sweeper = connection('sweeper');
    expect(await removeOrphanedVectors(sweeper, 'idle', 3600)).toBe(0);
    expect((await admin().object('IDLETIME', vectorsKey('idle', id))) as number).toBeGreaterThanOrEqual(2);
  });

  it('removes nothing, and does not throw, under an LFU policy (OBJECT IDLETIME refused)', async () => {
    await admin().set(vectorsKey('lfu', 'wORPHAN'), Buffer.alloc(DIMENSIONS * 4));
    await idleAtLeast(vectorsKey('lfu', 'wORPHAN'), 2);
    await admin().config('SET', 'maxmemory-policy', 'allkeys-lfu');
    expect(await removeOrphanedVectors(connection('sweeper'), 'lfu', 1)).toBe(0);
    expect(await admin().exists(vectorsKey('lfu', 'wORPHAN'))).toBe(1);
  });
});
