/**
 * addWriteJob on a Redis of its own: the job and its vectors go in one MULTI, and what a caller
 * sees when Redis forgot its scripts (SCRIPT FLUSH), runs out of memory, or meets a job id again.
 * Kept from the adversarial review of the vectors beside write jobs: the NOSCRIPT and OOM cases
 * failed on the first version (the blob left without its job, and an error retried by nothing).
 */
import { describe, expect, it } from 'vitest';
import { isRetryable } from '../../../src/core/errors.js';
import { newJobId, WRITE_QUEUE } from '../../../src/queue/jobs.js';
import { addWriteJob, removeOrphanedVectors, vectorsKey } from '../../../src/queue/write-jobs.js';
import { waitFor } from '../../support/helpers.js';
import { writeJobRedis } from '../../support/write-job-redis.js';

const DIMENSIONS = 8;
const { queueOn, connection, closeAfter, admin, upsert } = writeJobRedis(DIMENSIONS);

const stored = async (prefix: string, jobId: string) => ({ job: await admin().exists(`${prefix}:${WRITE_QUEUE}:${jobId}`), blob: await admin().exists(vectorsKey(prefix, jobId)) });

describe('addWriteJob', () => {
  it('puts the vectors and the job between one MULTI and its EXEC', async () => {
    const queue = queueOn('atomic');
    await addWriteJob(queue, [upsert('warm')], { jobId: newJobId('w') });
    const monitor = await admin().duplicate().monitor();
    const seen: string[] = [];
    monitor.on('monitor', (_time: string, args: string[]) => seen.push(String(args[0]).toLowerCase() + (String(args[1]).includes('write-vectors') ? ' vectors' : '')));
    closeAfter(async () => monitor.disconnect());
    const jobId = newJobId('w');
    await addWriteJob(queue, [upsert('a'), upsert('b')], { jobId });
    await waitFor('the EXEC seen by MONITOR', async () => seen.includes('exec'));
    const ours = seen.filter((c) => ['multi', 'set vectors', 'evalsha', 'eval', 'exec'].includes(c));
    expect(ours.slice(0, 2)).toEqual(['multi', 'set vectors']);
    expect(['eval', 'evalsha']).toContain(ours[2]);
    expect(ours[3]).toBe('exec');
    expect(await stored('atomic', jobId)).toEqual({ job: 1, blob: 1 });
  });

  it('adds the job and its vectors after Redis forgot the scripts (SCRIPT FLUSH) on a live connection, and the next MULTI works again', async () => {
    const queue = queueOn('noscript');
    await addWriteJob(queue, [upsert('warm')], { jobId: newJobId('w') });
    await admin().script('FLUSH');
    const first = newJobId('w');
    await addWriteJob(queue, [upsert('a')], { jobId: first });
    const second = newJobId('w');
    await addWriteJob(queue, [upsert('b')], { jobId: second });
    expect([await stored('noscript', first), await stored('noscript', second)]).toEqual([
      { job: 1, blob: 1 },
      { job: 1, blob: 1 },
    ]);
  });

  it('writes nothing when Redis is out of memory, and throws the OOM the retry policy retries', async () => {
    const queue = queueOn('oom');
    await addWriteJob(queue, [upsert('warm')], { jobId: newJobId('w') });
    // Far below what Redis holds, not just under it: its used memory moves between a reading and
    // the add (reply buffers, freed clients), and a margin of 1 KiB let the add through once.
    await admin().config('SET', 'maxmemory', '1');
    const jobId = newJobId('w');
    const thrown = await addWriteJob(queue, [upsert('a')], { jobId }).then(() => undefined, (error: unknown) => error);
    await admin().config('SET', 'maxmemory', '0');
    expect((thrown as Error | undefined)?.message).toMatch(/^OOM/);
    expect(isRetryable(thrown)).toBe(true);
    expect(await stored('oom', jobId)).toEqual({ job: 0, blob: 0 });
  });

  it('leaves a job added again with the same id (a retry after a lost reply) as it was, its vectors matching its slots', async () => {
    const queue = queueOn('again');
    const jobId = newJobId('w');
    await addWriteJob(queue, [upsert('a'), upsert('b')], { jobId });
    await addWriteJob(queue, [upsert('a'), upsert('b')], { jobId });
    expect((await queue.getJob(jobId))?.data.writes.map((w) => w.slot)).toEqual([0, 1]);
    expect((await admin().getBuffer(vectorsKey('again', jobId)))?.byteLength).toBe(2 * DIMENSIONS * 4);
    expect(await queue.count()).toBe(1);
  });

  it('counts a connection lost in the middle of a transaction as a passing Redis failure', () => {
    const aborted = Object.assign(new Error('Command aborted due to connection close'), { name: 'AbortError' });
    expect(isRetryable(aborted)).toBe(true);
  });
});

// A write job removed by hand (the dashboard), or failed for good and trimmed by BullMQ after its
// 7 days, left its vectors key behind: a request's vectors, up to a few megabytes each, forever.
describe('removeOrphanedVectors', () => {
  it("removes a vectors key only once its job is gone and it has gone unread for the time given, and no other key", async () => {
    const queue = queueOn('orphans');
    const other = queueOn('others');
    const [kept, removedByHand, fresh, elsewhere] = [newJobId('w'), newJobId('w'), newJobId('w'), newJobId('w')];
    await addWriteJob(queue, [upsert('a')], { jobId: kept });
    await addWriteJob(queue, [upsert('b')], { jobId: removedByHand });
    await addWriteJob(other, [upsert('c')], { jobId: elsewhere });
    await queue.remove(removedByHand);
    expect(await stored('orphans', removedByHand)).toEqual({ job: 0, blob: 1 });
    // What a NOSCRIPT add leaves for a moment: the vectors, set before their job is added apart.
    await admin().set(vectorsKey('orphans', fresh), Buffer.alloc(DIMENSIONS * 4));

    const sweeper = connection('sweeper');
    expect(await removeOrphanedVectors(sweeper, 'orphans', 3600)).toBe(0);
    await waitFor('the orphaned keys idle for a second and removed', async () => (await removeOrphanedVectors(sweeper, 'orphans', 1)) > 0 || undefined, { timeoutMs: 10_000, intervalMs: 250 });

    expect(await stored('orphans', removedByHand)).toEqual({ job: 0, blob: 0 });
    expect(await admin().exists(vectorsKey('orphans', fresh))).toBe(0);
    expect(await stored('orphans', kept)).toEqual({ job: 1, blob: 1 });
    expect(await stored('others', elsewhere)).toEqual({ job: 1, blob: 1 });
  });

  it('stops between pages of its walk once told to, so that a shutdown does not wait for it', async () => {
    const orphans = Array.from({ length: 3000 }, (_, i) => [vectorsKey('stopped', `w${i}`), 'x']).flat();
    await admin().mset(...orphans);
    const sweeper = connection('sweeper');
    const stop = new AbortController();
    stop.abort();
    expect(await removeOrphanedVectors(sweeper, 'stopped', 0, stop.signal)).toBe(0);
    expect(await removeOrphanedVectors(sweeper, 'stopped', 0)).toBe(3000);
  });

  it('keeps a key that is read while its job is gone: the idle time restarts with each read', async () => {
    const queue = queueOn('reread');
    const jobId = newJobId('w');
    await addWriteJob(queue, [upsert('a')], { jobId });
    await queue.remove(jobId);
    const sweeper = connection('sweeper');
    // Redis counts idle time in whole seconds of a clock that ticks once a second: 2 s, so that a
    // tick between the read and the sweep cannot make the key old enough.
    await waitFor('the key idle for 2 s', async () => ((await admin().object('IDLETIME', vectorsKey('reread', jobId))) as number) >= 2 || undefined, { timeoutMs: 10_000, intervalMs: 250 });
    await admin().getBuffer(vectorsKey('reread', jobId));
    expect(await removeOrphanedVectors(sweeper, 'reread', 2)).toBe(0);
    expect(await admin().exists(vectorsKey('reread', jobId))).toBe(1);
  });
});
