/**
 * Adversarial scenarios against the batch job shape, on the real parts (Kafka, Redis, LanceDB).
 * Each test states a claim of docs/ARCHITECTURE.md and drives the scenario that breaks it; a test
 * that fails here is a defect proven, not a flaky test.
 */
import { describe, expect, it } from 'vitest';
import { SinkError } from '../../../src/core/errors.js';
import type { EmbedJobData } from '../../../src/queue/jobs.js';
import { contentHash } from '../../../src/embed/content-hash.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import type { SinkBatch, SinkRecord } from '../../../src/sinks/vector-sink.js';
import { EmbeddingsStub, stubVector } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { interceptedSink } from '../../support/intercepted-sink.js';
import { consumed, HARNESS_DIMENSIONS, HARNESS_MODEL, pipelineHarness, replayGroup, skipped, upsertEvent } from '../../support/pipeline-harness.js';

const DIMENSIONS = HARNESS_DIMENSIONS;
const MODEL = HARNESS_MODEL;
const event = upsertEvent;

describe('adversarial', () => {
  const { cleanups, setup, start } = pipelineHarness('adversarial');
  const servedInputs = (stub: EmbeddingsStub) => stub.served.flatMap((r) => r.inputs);

  it('a payload-only write decided while a newer text waits in the write queue ends at the right vector', async () => {
    const { stub, config, produce } = await setup({ WRITE_BATCH_SIZE: '1', WRITE_CONCURRENCY: '1' });
    const front = await start(config, ['ingest', 'embed']);
    let writer = await start(config, ['write']);
    await produce([event('revert-1', 1, 'text A', { price: 1 })]);
    await waitFor('v1 written', async () => (await writer.sink?.retrieve(['revert-1']))?.[0]?.payload.version === 1);
    await writer.close();

    // The writer is slow (here: down). v2 changes the text to B: bought, waits in the write queue.
    await produce([event('revert-1', 2, 'text B', { price: 2 })]);
    await waitFor('v2 queued for writing', async () => (await front.writeQueue.getWaitingCount()) === 1);
    // v3 reverts the text to A: the state (still v1, hash of A) says the sink holds A's vector,
    // so v3 becomes a payload-only write.
    await produce([event('revert-1', 3, 'text A', { price: 3 })]);
    await waitFor('v3 queued for writing', async () => (await front.writeQueue.getWaitingCount()) === 2);

    writer = await start(config, ['write']);
    await waitFor('v3 written', async () => (await writer.sink?.retrieve(['revert-1']))?.[0]?.payload.version === 3);
    const [stored] = (await writer.sink?.retrieve(['revert-1'], { withVectors: true })) ?? [];
    expect(stored?.payload).toMatchObject({ price: 3, content_hash: contentHash('text A', MODEL, DIMENSIONS) });
    // The item's text is A: its vector must be A's, not B's.
    const a = stubVector('text A', DIMENSIONS, MODEL);
    const b = stubVector('text B', DIMENSIONS, MODEL);
    const vector = Array.from(stored?.vector ?? []);
    const closeTo = (expected: Float32Array) => vector.every((v, i) => Math.abs(v - (expected[i] as number)) < 1e-5);
    expect({ isVectorOfA: closeTo(a), isVectorOfB: closeTo(b) }).toEqual({ isVectorOfA: true, isVectorOfB: false });
    // And the state agrees with the sink on what it holds.
    expect((await front.state.get('revert-1')).contentHash).toBe(contentHash('text A', MODEL, DIMENSIONS));
    expect(servedInputs(stub).filter((t) => t === 'text A').length).toBeGreaterThanOrEqual(1);
  });

  /**
   * Claim: "a replay after a failure runs" / "a change with the same version as the one seen is
   * queued again only when that job no longer waits or runs". An item dead-lettered alone leaves
   * its job; the job lives on for its batch-mates (retried with backoff, deferred, or waiting in a
   * paused queue), and `qj` still names it: the replay of the dead-lettered item is taken for a
   * redelivery of a change still queued and silently dropped (its offset committed).
   */
  it('runs the replay of an item dead-lettered alone while its job still waits for a batch-mate', async () => {
    const { stub, config, produce } = await setup(
      { EMBEDDINGS_BREAKER_FAILURES: '1000', JOB_ATTEMPTS: '2', JOB_BACKOFF_MS: '15000' },
      { rejectMarker: 'POISON', unavailableMarker: 'OVERLOADED' },
    );
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    // One Kafka batch, one embed job: 'dlq-a' is rejected for good, 'dlq-b' keeps its job retrying.
    await produce([event('dlq-a', 1, 'POISON a'), event('dlq-b', 1, 'OVERLOADED b')]);
    await waitFor('dlq-a dead-lettered', async () => (await pipeline.deadLetters.list(100)).some((l) => l.itemId === 'dlq-a'));
    const [job] = await pipeline.embedQueue.getJobs(['delayed', 'waiting', 'active']);
    expect((job?.data as EmbedJobData | undefined)?.changes.map((c) => c.itemId)).toEqual(['dlq-b']);

    // The operator fixes the cause (here: the provider no longer rejects it) and replays the event.
    (stub as unknown as { options: { rejectMarker?: string } }).options.rejectMarker = undefined;
    const replay = await start(replayGroup(config), ['ingest']);
    await waitFor('the replay read', async () => (await consumed(replay)) === 2);
    // Only dlq-b (still carried by its job) may be taken for a redelivery; dlq-a left that job.
    expect(await skipped(replay, 'older_or_queued')).toBe(1);
    // The embed worker is idle (its one job is delayed): a queued replay is embedded at once.
    await waitFor('the replay of dlq-a embedded', () => servedInputs(stub).includes('POISON a'), { timeoutMs: 8_000 });
    await waitFor('dlq-a indexed', async () => (await pipeline.sink?.retrieve(['dlq-a']))?.length === 1, { timeoutMs: 8_000 });
  });

  /**
   * Claim: "A rebalance took the partition away meanwhile: its new owner re-reads from the last
   * commit, and the item state keeps a change still queued from being queued twice." OBSERVE
   * records `qj` before addBulk; a job not added yet reads as "ingest died before addBulk", so the
   * new owner queues the change again while the old owner is between OBSERVE and addBulk.
   */
  it('holds vectors through a sink outage longer than the job attempts, and never pays for them again', async () => {
    const { stub, config, produce } = await setup({ JOB_ATTEMPTS: '2', JOB_BACKOFF_MS: '100' });
    const real = createSink(config.sink, DIMENSIONS);
    let down = true;
    let failedUpserts = 0;
    // Every way the writer can reach the storage fails while it is down.
    const sink = interceptedSink(real, () => {
      if (!down) return;
      failedUpserts++;
      throw new SinkError('SINK_UNAVAILABLE', 'LanceDB could not upsert rows: storage unreachable (injected)', { canRetry: true });
    });
    const pipeline = await start(config, ['ingest', 'embed', 'write'], sink);
    await produce([event('outage-1', 1, 'bought once')]);
    await waitFor('the text bought', () => servedInputs(stub).includes('bought once'));

    // Wait until the outage outlasted the job's attempts: either the writes go on being tried
    // (the vector held), or the item was given up (dead-lettered).
    const given = await waitFor(
      'the outage outlasting the write attempts',
      async () => {
        const letters = (await pipeline.deadLetters.list(100)).filter((l) => l.itemId === 'outage-1');
        if (letters.length > 0) return { deadLettered: letters.map((l) => `${l.stage}:${l.code}`) };
        return failedUpserts > 2 * 5 ? { deadLettered: [] as string[] } : undefined;
      },
      { timeoutMs: 30_000 },
    );
    expect(given.deadLettered).toEqual([]);

    down = false;
    await waitFor('written once the sink is back', async () => (await pipeline.sink?.retrieve(['outage-1']))?.length === 1, { timeoutMs: 15_000 });
    expect(servedInputs(stub).filter((t) => t === 'bought once')).toHaveLength(1);
  });

  /**
   * Claim: "Text bought once is not bought again while it waits ... A change needing a text whose
   * vector waits there reads the vector from that write job instead of paying." The hint is one
   * field per content hash; a second write job holding the same text (another item, reusing the
   * vector) takes the field over, and the first job's writer then deletes it unconditionally
   * (HDEL), although the second job still waits with the vector.
   */
  it('keeps the in-flight hint of a vector that still waits after another write job with the same text was written', async () => {
    const { stub, config, produce } = await setup({ WRITE_BATCH_SIZE: '1', WRITE_CONCURRENCY: '1' });
    const front = await start(config, ['ingest', 'embed']);
    // X and Y share a text (a template, a duplicate product). The writer is behind (here: down).
    await produce([event('twin-x', 1, 'shared text', { n: 1 })]);
    await waitFor('X queued for writing', async () => (await front.writeQueue.getWaitingCount()) === 1);
    await produce([event('twin-y', 1, 'shared text', { n: 1 })]);
    await waitFor('Y queued for writing', async () => (await front.writeQueue.getWaitingCount()) === 2);
    expect(servedInputs(stub).filter((t) => t === 'shared text')).toHaveLength(1);

    // The writer comes back; Y's sink write is slow (held here), X's is done.
    const real = createSink(config.sink, DIMENSIONS);
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let yHeld = false;
    const sink = interceptedSink(real, async (method, arg) => {
      const records = method === 'upsert' ? (arg as SinkRecord[]) : method === 'write' ? (arg as SinkBatch).upserts : [];
      if (records.some((r) => r.itemId === 'twin-y')) {
        yHeld = true;
        await gate;
      }
    });
    const writer = await start(config, ['write'], sink);
    cleanups.push(async () => release());
    await waitFor('X written', async () => (await writer.sink?.retrieve(['twin-x']))?.length === 1);
    await waitFor("Y's write in progress", () => yHeld);

    // A metadata-only change of Y while Y's vector waits in its write job: it must not be bought again.
    await produce([event('twin-y', 2, 'shared text', { n: 2 })]);
    await waitFor('Y v2 queued for writing', async () => (await front.writeQueue.getWaitingCount()) === 1);
    expect(servedInputs(stub).filter((t) => t === 'shared text')).toHaveLength(1);
    release();
    await waitFor('Y v2 written', async () => (await writer.sink?.retrieve(['twin-y']))?.[0]?.payload.version === 2);
  });
});
