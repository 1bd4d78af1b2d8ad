/**
 * The batch job shape on the real parts (Kafka, Redis, LanceDB, worker processes): jobs carry many
 * changes with per-item outcomes, replays run, redeliveries of changes still queued do not, a job
 * that keeps stalling reaches the dead-letter store, and text bought once is never bought again
 * while its vector waits in the write queue.
 */
import { describe, expect, it } from 'vitest';
import { contentHash } from '../../../src/embed/content-hash.js';
import { DEFAULT_RETRY_POLICY } from '../../../src/core/retry.js';
import { stubVector } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { consumed, HARNESS_DIMENSIONS, HARNESS_MODEL, pipelineHarness, queuedChanges, queuedJobs, replayGroup, skipped, upsertEvent } from '../../support/pipeline-harness.js';
import { spawnWorker, type WorkerProcess } from '../../support/processes.js';
import type { EmbedJobData } from '../../../src/queue/jobs.js';

const DIMENSIONS = HARNESS_DIMENSIONS;
const MODEL = HARNESS_MODEL;
const event = upsertEvent;

describe('batch jobs', () => {
  const { cleanups, setup, start } = pipelineHarness('batch-jobs');

  it('runs a replay of an event whose job failed, instead of meeting the failed job', async () => {
    const { stub, config, produce } = await setup();
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    stub.failNext({ kind: 'wrong_dimensions' });
    await produce([event('replayed-1', 1, 'first try gets a short vector')]);
    const letter = await waitFor('the bad vector dead-lettered', async () => (await pipeline.deadLetters.list(100)).find((l) => l.itemId === 'replayed-1'));
    expect(letter.code).toBe('VECTOR_INVALID');
    expect(await pipeline.sink?.retrieve(['replayed-1'])).toHaveLength(0);

    // The same event again (the README's advice after a repair): it is processed this time.
    await produce([event('replayed-1', 1, 'first try gets a short vector')]);
    await waitFor('the replay indexed', async () => (await pipeline.sink?.retrieve(['replayed-1']))?.length === 1);
  });

  it('does not queue a redelivered change while its job is still queued, and a replay after it was written costs nothing', async () => {
    const { stub, config, produce } = await setup();
    const ingest = await start(config, ['ingest']);
    const lines = Array.from({ length: 20 }, (_, i) => event(`redelivered-${i}`, 1, `redelivered text ${i}`));
    await produce(lines);
    await waitFor('every event ingested', async () => (await consumed(ingest)) === 20);
    expect(await queuedChanges(ingest)).toBe(20);

    const redelivery = await start(replayGroup(config), ['ingest']);
    await waitFor('the redelivery read', async () => (await consumed(redelivery)) === 20);
    expect(await skipped(redelivery, 'older_or_queued')).toBe(20);
    expect(await queuedChanges(ingest)).toBe(20);

    const workers = await start(config, ['embed', 'write']);
    const ids = lines.map((_, i) => `redelivered-${i}`);
    await waitFor('every item indexed', async () => (await workers.sink?.retrieve(ids))?.length === 20);
    expect(stub.served.flatMap((r) => r.inputs)).toHaveLength(20);

    // A replay once everything is written: ingest sees the sink holds these versions and queues nothing.
    const replay = await start(replayGroup(config), ['ingest']);
    await waitFor('the replay read', async () => (await consumed(replay)) === 20);
    expect(await skipped(replay, 'not_newer_than_sink')).toBe(20);
    expect(await queuedChanges(replay)).toBe(0);
    expect(stub.served.flatMap((r) => r.inputs)).toHaveLength(20);
  });

  it.each([
    ['the process that bought it (from its memory)', false],
    ['another process (read back from the waiting write job)', true],
  ])('never pays twice for a text whose vector waits in the write queue (a metadata-only change right after a new text), taken by %s', async (_who, restartFront) => {
    const { stub, config, produce } = await setup();
    let front = await start(config, ['ingest', 'embed']);
    let writer = await start(config, ['write']);
    await produce([event('pending-1', 1, 'text A', { price: 1 })]);
    await waitFor('v1 written', async () => (await writer.sink?.retrieve(['pending-1']))?.[0]?.payload.version === 1);
    await writer.close();

    // The writer is down: v2's new text B is bought and waits in the write queue; v3 changes only
    // the price, so it needs B's vector too: it is taken from the waiting job, not bought again.
    await produce([event('pending-1', 2, 'text B', { price: 2 })]);
    await waitFor('v2 bought', () => stub.served.flatMap((r) => r.inputs).includes('text B'));
    await waitFor('v2 queued for writing', async () => (await front.writeQueue.getWaitingCount()) === 1);
    if (restartFront) {
      await front.close();
      front = await start(config, ['ingest', 'embed']);
    }
    await produce([event('pending-1', 3, 'text B', { price: 3 })]);
    await waitFor('v3 queued for writing', async () => (await front.writeQueue.getWaitingCount()) === 2);

    writer = await start(config, ['write']);
    await waitFor('v3 written', async () => (await writer.sink?.retrieve(['pending-1']))?.[0]?.payload.version === 3);
    const [stored] = (await writer.sink?.retrieve(['pending-1'], { withVectors: true })) ?? [];
    expect(stored?.payload).toMatchObject({ price: 3, content_hash: contentHash('text B', MODEL, DIMENSIONS) });
    const expected = stubVector('text B', DIMENSIONS, MODEL);
    stored?.vector?.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 5));
    expect(stub.served.flatMap((r) => r.inputs).sort()).toEqual(['text A', 'text B']);
  });

  it('dead-letters an item that failed for good alone, retries the retryable ones in their job, and completes the rest', async () => {
    const { stub, config, produce } = await setup(
      { EMBEDDINGS_BATCH_SIZE: '2', EMBEDDINGS_BREAKER_FAILURES: '1000', JOB_ATTEMPTS: '2', JOB_BACKOFF_MS: '100', EMBED_BATCH_LINGER_MS: '200' },
      { unavailableMarker: 'OVERLOADED', rejectMarker: 'POISON' },
      1,
    );
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    // One Kafka batch, one embed job, three requests of two: [ok, ok], [OVERLOADED, ok-but-unlucky], [POISON, ok].
    await produce([event('b-0', 1, 'fine 0'), event('b-1', 1, 'fine 1'), event('b-2', 1, 'OVERLOADED 2'), event('b-3', 1, 'unlucky 3'), event('b-4', 1, 'POISON 4'), event('b-5', 1, 'fine 5')]);
    await waitFor('the good items indexed', async () => (await pipeline.sink?.retrieve(['b-0', 'b-1', 'b-5']))?.length === 3);
    const letters = await waitFor('three items dead-lettered', async () => {
      const all = (await pipeline.deadLetters.list(100)).filter((l) => l.itemId?.startsWith('b-'));
      return all.length === 3 ? all : undefined;
    });
    expect(Object.fromEntries(letters.map((l) => [l.itemId, l.code]))).toEqual({ 'b-2': 'EMBEDDINGS_UNAVAILABLE', 'b-3': 'EMBEDDINGS_UNAVAILABLE', 'b-4': 'EMBEDDINGS_REJECTED' });
    // Each letter holds its own change, not the whole job.
    expect(JSON.parse(letters.find((l) => l.itemId === 'b-4')?.original.toString('utf8') ?? '{}')).toMatchObject({ itemId: 'b-4', text: 'POISON 4' });
    // The job's retry carried only the two items that could still succeed: each job attempt made
    // its in-process retries of that one request, and nothing written was sent again.
    const overloaded = stub.requests.filter((r) => r.status === 503);
    expect(overloaded).toHaveLength(2 * DEFAULT_RETRY_POLICY.attempts);
    expect(overloaded.every((r) => [...r.inputs].sort().join() === 'OVERLOADED 2,unlucky 3')).toBe(true);
    expect(stub.served.flatMap((r) => r.inputs).sort()).toEqual(['fine 0', 'fine 1', 'fine 5']);
    expect(await pipeline.sink?.retrieve(['b-2', 'b-3', 'b-4'])).toHaveLength(0);
  });

  it('dead-letters the items of a job that keeps stalling (its worker killed each time), never leaving them in a failed set', async () => {
    const { stub, config, produce } = await setup({ JOB_LOCK_MS: '1000', JOB_STALL_LIMIT: '1', EMBEDDINGS_TIMEOUT_MS: '600000' });
    stub.failNext({ kind: 'hang' }, { kind: 'hang' }, { kind: 'hang' });
    const ingest = await start(config, ['ingest']);
    const env = {
      KAFKA_BROKERS: config.kafka.brokers.join(','),
      REDIS_URL: config.redis.url,
      KAFKA_TOPICS: config.kafka.topics.join(','),
      KAFKA_GROUP_ID: config.kafka.groupId,
      QUEUE_PREFIX: config.redis.prefix,
      EMBEDDINGS_BASE_URL: config.embeddings.baseUrl,
      EMBEDDINGS_MODEL: MODEL,
      EMBEDDINGS_DIMENSIONS: String(DIMENSIONS),
      EMBEDDINGS_TIMEOUT_MS: '600000',
      JOB_LOCK_MS: '1000',
      JOB_STALL_LIMIT: '1',
      LOG_LEVEL: 'warn',
    };
    const processes: WorkerProcess[] = [];
    cleanups.push(async () => {
      for (const p of processes) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    });
    await produce([event('stall-0', 1, 'hangs 0'), event('stall-1', 1, 'hangs 1'), event('stall-2', 1, 'hangs 2')]);
    await waitFor('ingested', async () => (await consumed(ingest)) === 3);

    // Twice: a worker takes the job, its request hangs, the worker is killed.
    for (let run = 1; run <= 2; run++) {
      const worker = spawnWorker('embed', env);
      processes.push(worker);
      await waitFor(`request ${run} sent`, () => stub.requests.length === run, { timeoutMs: 30_000 });
      worker.child.kill('SIGKILL');
      await worker.exited;
    }
    // The third run finds the job stalled twice, over the limit of one: its items are dead-lettered.
    processes.push(spawnWorker('embed', env));
    const letters = await waitFor('the stalled items dead-lettered', async () => {
      const all = await ingest.deadLetters.list(100);
      return all.length === 3 ? all : undefined;
    });
    expect(letters.map((l) => [l.itemId, l.stage, l.code]).sort()).toEqual([
      ['stall-0', 'embed', 'JOB_STALLED'],
      ['stall-1', 'embed', 'JOB_STALLED'],
      ['stall-2', 'embed', 'JOB_STALLED'],
    ]);
    expect(stub.requests).toHaveLength(2);
    expect(await ingest.embedQueue.getFailedCount()).toBe(0);
    await waitFor('the job completed', async () => (await ingest.embedQueue.count()) === 0 && (await ingest.embedQueue.getActiveCount()) === 0);
  });

  it('gathers events produced one at a time into one embed job while the broker holds the fetch (KAFKA_FETCH_MIN_BYTES)', async () => {
    // The broker answers a fetch once it holds 10 MiB or 3 s passed: events produced one at a
    // time meanwhile reach ingest in one batch, and make one job, not a job each.
    const { config, produce } = await setup({ KAFKA_FETCH_MIN_BYTES: '10485760', KAFKA_FETCH_MAX_WAIT_MS: '3000' }, {}, 1);
    const ingest = await start(config, ['ingest']);
    await produce([event('first', 1, 'the consumer is fetching once this is read')]);
    await waitFor('the first event ingested', async () => (await consumed(ingest)) === 1, { timeoutMs: 20_000 });
    const ids = Array.from({ length: 10 }, (_, i) => `one-at-a-time-${i}`);
    for (const id of ids) await produce([event(id, 1, `text of ${id}`)]);
    await waitFor('the ten events ingested', async () => (await consumed(ingest)) === 11, { timeoutMs: 20_000 });
    const jobs = await ingest.embedQueue.getJobs(['waiting', 'prioritized', 'delayed', 'active']);
    const holding = jobs.filter((job) => (job.data as EmbedJobData).changes.some((c) => ids.includes(c.itemId)));
    expect(holding.map((job) => (job.data as EmbedJobData).changes.length), 'the ten events were split over several jobs: the fetch was answered before they were all there').toEqual([10]);
  });

  it('enqueues the batches of several partitions fetched together as one round: one embed job, not one per partition', async () => {
    // As above, the broker holds the fetch while events arrive one at a time, now over four
    // partitions: kafkajs hands ingest one batch per partition, and they make one job together.
    const { config, produce } = await setup({ KAFKA_FETCH_MIN_BYTES: '10485760', KAFKA_FETCH_MAX_WAIT_MS: '3000' }, {}, 4);
    const ingest = await start(config, ['ingest']);
    await produce([event('first', 1, 'the consumer is fetching once this is read')]);
    await waitFor('the first event ingested', async () => (await consumed(ingest)) === 1, { timeoutMs: 20_000 });
    const ids = Array.from({ length: 16 }, (_, i) => `spread-${i}`);
    for (const id of ids) await produce([event(id, 1, `text of ${id}`)]);
    await waitFor('the sixteen events ingested', async () => (await consumed(ingest)) === 17, { timeoutMs: 20_000 });
    const holding = (await queuedJobs(ingest)).filter((job) => job.changes.some((c) => ids.includes(c.itemId)));
    const partitions = new Set(holding.flatMap((job) => job.changes.map((c) => c.source?.split('@')[0])));
    expect(partitions.size, 'the events should have spread over several partitions').toBeGreaterThan(1);
    expect(holding.map((job) => job.changes.length), 'each partition\'s batch made its own job').toEqual([16]);
  });
});
