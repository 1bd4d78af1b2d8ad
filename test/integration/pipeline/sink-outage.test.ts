/**
 * A sink outage of any length: the write queue holds the vectors already bought, up to its byte
 * budget; past it, embed jobs wait in their queue (nothing more is bought, Redis is not filled);
 * the writer reports not ready; and once the sink is back everything is written, nothing
 * dead-lettered, nothing paid twice.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { SinkError } from '../../../src/core/errors.js';
import type { WriteJobData } from '../../../src/queue/jobs.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import type { VectorSink } from '../../../src/sinks/vector-sink.js';
import { waitFor } from '../../support/helpers.js';
import { interceptedSink } from '../../support/intercepted-sink.js';
import { HARNESS_DIMENSIONS, pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

/** A sink whose every write fails as an unreachable server's would, while `down`. */
function switchableSink(real: VectorSink): { sink: VectorSink; setDown: (down: boolean) => void } {
  let down = true;
  const sink = interceptedSink(real, () => {
    if (down) throw new SinkError('SINK_UNAVAILABLE', 'connect ECONNREFUSED 127.0.0.1:6333 (injected)', { canRetry: true });
  });
  return { sink, setDown: (d) => (down = d) };
}

describe('sink outage', () => {
  const { cleanups, setup, start } = pipelineHarness('sink-outage');

  it('holds the write queue within its byte budget, reports not ready, and loses and re-buys nothing', async () => {
    // Small jobs and a small budget: a few write jobs spend it.
    const budget = 64 * 1024;
    const { stub, config, produce } = await setup({
      WRITE_QUEUE_MAX_BYTES: String(budget),
      EMBEDDINGS_BATCH_SIZE: '4',
      EMBED_JOB_MAX_ITEMS: '4',
      EMBED_CONCURRENCY: '2',
      EMBED_BATCH_LINGER_MS: '0',
      JOB_ATTEMPTS: '2',
      JOB_BACKOFF_MS: '100',
    });
    const { sink, setDown } = switchableSink(createSink(config.sink, HARNESS_DIMENSIONS));
    const pipeline = await start(config, ['ingest', 'embed', 'write'], sink);
    // Texts long enough that each write job weighs a few KiB.
    const filler = 'x'.repeat(2000);
    const events = Array.from({ length: 200 }, (_, i) => upsertEvent(`item-${i}`, 1, `product ${i} ${filler}`, { n: i, note: filler }));
    await produce(events);

    const redis = new Redis(config.redis.url);
    cleanups.push(async () => redis.disconnect());
    const writeQueueBytes = async () => {
      const jobs = await pipeline.writeQueue.getJobs(['waiting', 'delayed', 'active', 'prioritized']);
      const sizes = await Promise.all(jobs.map((job) => redis.hstrlen(`${config.redis.prefix}:write:${job.id}`, 'data')));
      return sizes.reduce((a, b) => a + b, 0);
    };

    await waitFor('embed jobs held back by the full write queue', async () => (await pipeline.metrics.jobsDeferred.get()).values.some((v) => v.labels.reason === 'WRITE_QUEUE_FULL'), { timeoutMs: 30_000 });
    await waitFor('the writer reporting the outage (not ready)', async () => !pipeline.readiness().ready, { timeoutMs: 60_000 });
    expect(pipeline.readiness().reasons.join(' ')).toMatch(/sink has been unavailable/);
    // Let the outage go on: the queue stays bounded. The bound: the budget, plus the write jobs
    // of the embeddings requests in flight when it was spent (EMBED_CONCURRENCY jobs, one
    // request each here), each at most one request's writes.
    const oneJob = Math.max(...(await pipeline.writeQueue.getJobs(['waiting', 'delayed', 'active'])).map((j) => JSON.stringify((j.data as WriteJobData).writes).length));
    let peak = 0;
    const boughtAtPeak = stub.served.length;
    for (let i = 0; i < 10; i++) {
      peak = Math.max(peak, await writeQueueBytes());
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(peak, `write queue bytes ${peak} over the budget ${budget} plus two jobs of ${oneJob}`).toBeLessThanOrEqual(budget + 2 * oneJob + 1024);
    expect(stub.served.length - boughtAtPeak, 'embeddings bought while the budget was spent').toBeLessThanOrEqual(2);
    expect(await pipeline.deadLetters.count()).toBe(0);

    setDown(false);
    await waitFor('every item written once the sink is back', async () => (await sink.count()) === events.length, { timeoutMs: 60_000 });
    await waitFor('ready again', async () => pipeline.readiness().ready, { timeoutMs: 10_000 });
    expect(await pipeline.deadLetters.count()).toBe(0);
    const inputs = stub.served.flatMap((r) => r.inputs);
    expect(inputs.length, 'a text was bought twice').toBe(new Set(inputs).size);
  });
});
