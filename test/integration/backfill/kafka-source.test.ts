/**
 * The kafka: source's cursor: several partitions with an empty one and a resume after
 * a shutdown mid-pass; and a topic written by a transactional producer (exactly-once producers,
 * Kafka Connect, Debezium, Kafka Streams), whose partitions end with a commit marker that is never
 * delivered as a message.
 */
import { describe, expect, it } from 'vitest';
import type { Config } from '../../../src/config/config.js';
import { testKafka, uniqueName, waitFor } from '../../support/helpers.js';
import { backfillControl, backfillEnded } from '../../support/backfill-harness.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

describe('kafka source', () => {
  const { cleanups, setup, start } = pipelineHarness('kafka');

  const control = (config: Config) => backfillControl(config, cleanups);

  /** Sends messages to chosen partitions, in one transaction when `transactional`. */
  async function send(config: Config, messages: { partition: number; value: string; key: string }[], transactional = false): Promise<void> {
    const kafka = testKafka(config.kafka.brokers);
    const producer = transactional ? kafka.producer({ transactionalId: uniqueName('tx'), idempotent: true, maxInFlightRequests: 1 }) : kafka.producer();
    await producer.connect();
    try {
      const topic = config.kafka.topics[0] as string;
      if (transactional) {
        const tx = await producer.transaction();
        await tx.send({ topic, messages });
        await tx.commit();
      } else await producer.send({ topic, messages });
    } finally {
      await producer.disconnect();
    }
  }

  it('resumes a pass over several partitions (one of them empty) at its checkpoint after a shutdown, reading every message exactly once', async () => {
    const { config } = await setup({ BACKFILL_PAGE_SIZE: '10', EMBED_JOB_MAX_ITEMS: '10', BACKFILL_MAX_JOBS_IN_FLIGHT: '2' }, {}, 3);
    const messages = Array.from({ length: 150 }, (_, i) => ({ partition: i % 2, key: `k-${i}`, value: upsertEvent(`k-${i}`, 1, `kafka text ${i}`) }));
    await send(config, messages);
    const c = control(config);
    // Without embed workers the backfill reads a few pages and waits at its bound.
    const first = await start(config, ['backfill']);
    const id = await c.start({ source: { kind: 'kafka', topic: config.kafka.topics[0] as string } });
    await waitFor('the backfill at its bound', async () => ((await c.status(id))?.progress?.read ?? 0) >= 20);
    await first.close();
    const readAtStop = (await c.status(id))?.progress?.read ?? 0;
    expect(readAtStop).toBeLessThan(150);

    const second = await start(config, ['embed', 'write', 'backfill']);
    const done = await waitFor('the backfill completed', async () => {
      const s = await c.status(id);
      return s?.state === 'completed' || s?.state === 'failed' ? s : undefined;
    });
    expect(done.state).toBe('completed');
    expect(done.progress).toMatchObject({ read: 150, failed: 0, enqueued: 150 });
    expect(await second.sink?.count()).toBe(150);
  });

  /**
   * A topic whose partition 0 ends with a transaction's commit marker, and a backfill of it that
   * has read and written its three messages. Until the test ends, a plain message produced after
   * the marker is what lets the pass (and so the pipeline's close) end.
   */
  async function transactionalPass() {
    const { config } = await setup({}, {}, 2);
    await send(config, [0, 1, 2].map((i) => ({ partition: 0, key: `tx-${i}`, value: upsertEvent(`tx-${i}`, 1, `transactional text ${i}`) })), true);
    const pipeline = await start(config, ['embed', 'write', 'backfill']);
    cleanups.push(() => send(config, [{ partition: 0, key: 'unblock', value: upsertEvent('unblock', 1, 'unblock') }]));
    const c = control(config);
    const id = await c.start({ source: { kind: 'kafka', topic: config.kafka.topics[0] as string } });
    await waitFor('the three messages read and written', async () => (await pipeline.sink?.count()) === 3);
    return { c, id };
  }

  it('finishes a pass over a topic written by a transactional producer', async () => {
    const { c, id } = await transactionalPass();
    // The partition's end offset counts the commit marker, never delivered as a message: the pass
    // must end all the same.
    const last = await backfillEnded(c, id, 20_000);
    expect({ state: last.state, phase: last.progress?.phase, read: last.progress?.read }).toEqual({ state: 'completed', phase: 'done', read: 3 });
  });
});
