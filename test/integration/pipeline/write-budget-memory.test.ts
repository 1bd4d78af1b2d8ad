/**
 * The write-queue byte budget bounds what the write queue costs Redis, not only its jobs' data:
 * counting JSON.stringify(writes) alone, a queue of small write jobs (deletes, payload-only
 * updates, low-traffic batches of one item) held 8.5 times WRITE_QUEUE_MAX_BYTES when the budget
 * read "spent" (found by the review of issue 10). No writer runs: the jobs pile up as in a sink
 * outage.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { newJobId, type QueuedChange } from '../../../src/queue/jobs.js';
import { waitFor } from '../../support/helpers.js';
import { pipelineHarness } from '../../support/pipeline-harness.js';

const MAX_BYTES = 65_536;

describe('write-queue byte budget vs Redis memory', () => {
  const h = pipelineHarness('review-budget');
  it('keeps the write queue\'s Redis memory near the budget, however small its jobs', async () => {
    const { config } = await h.setup({ WRITE_QUEUE_MAX_BYTES: String(MAX_BYTES), EMBED_CONCURRENCY: '1' });
    const p = await h.start(config, ['embed']);
    const redis = new Redis(config.redis.url);
    h.cleanups.push(async () => redis.disconnect());
    const prefix = config.redis.prefix;
    // 1500 embed jobs of one delete each (the low-traffic shape: one event per Kafka batch).
    const bulk = [];
    for (let i = 0; i < 1500; i++) {
      const change: QueuedChange = { itemId: `item-${i}`, op: 'delete', version: 1, versionSource: 'version', updatedAt: undefined, text: undefined, metadata: {}, source: undefined, acceptedAt: Date.now() };
      bulk.push({ name: "changes", data: { changes: [change] }, opts: { jobId: newJobId("e"), attempts: 8, removeOnComplete: true } });
    }
    await p.embedQueue.addBulk(bulk);
    const ledgerKey = `${prefix}:write:bytes`;
    const ledgerBytes = async () => (await redis.hvals(ledgerKey)).reduce((s, v) => s + Number(v), 0);
    await waitFor('the budget reads spent (embed jobs deferred)', async () => (await p.metrics.jobsDeferred.get()).values.some((v) => v.labels.reason === 'WRITE_QUEUE_FULL'), { timeoutMs: 60_000 });
    let memory = 0;
    let jobs = 0;
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:write:*`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        memory += Number((await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
        if (/:write:w/.test(key)) jobs += 1;
      }
    } while (cursor !== '0');
    const counted = await ledgerBytes();
    expect(counted).toBeGreaterThanOrEqual(MAX_BYTES);
    console.log(`budget ${MAX_BYTES} B; ledger counts ${counted} B over ${jobs} write jobs; Redis holds ${memory} B under ${prefix}:write:* (${(memory / counted).toFixed(1)}x)`);
    expect(memory, 'Redis memory of the write queue stays within 2x the budget').toBeLessThanOrEqual(2 * MAX_BYTES);
  }, 120_000);
});
