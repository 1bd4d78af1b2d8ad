/**
 * A batch in hand when the worker is asked to stop finishes and commits its offsets, so the next
 * owner of the partition does not read it again (and store its dead letters twice). kafkajs's
 * consumer.commitOffsets commits nothing once disconnect() has begun: this failed before the
 * batch committed through its own payload.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createKafka, withAdmin } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { startPipeline, type Pipeline } from '../../../src/pipeline/pipeline.js';
import type { DeadLetter } from '../../../src/deadletter/dead-letter-store.js';
import { removeTestResources, testConfig, waitFor } from '../../support/helpers.js';
import { upsertEvent } from '../../support/pipeline-harness.js';

describe('ingest at a shutdown', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('commits the batch it holds when close() is called, instead of leaving it to be read again', async () => {
    const config = testConfig();
    cleanups.push(() => removeTestResources(config));
    const topic = config.kafka.topics[0] as string;
    const kafka = createKafka(config.kafka, silentLogger);
    await ensureTopic(kafka, topic, 1);
    const pipeline: Pipeline = await startPipeline(config, { roles: ['ingest'], logger: silentLogger });
    cleanups.push(() => pipeline.close());

    // Hold the batch at its last Redis step before the commit until close() has begun.
    const store = pipeline.deadLetters;
    const add = store.add.bind(store);
    let inHand = false;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    store.add = async (letters: DeadLetter[]) => {
      inHand = true;
      await released;
      return add(letters);
    };

    await produceLines(kafka, topic, [upsertEvent('a', 1, 'held at the shutdown')], { idField: 'id' });
    await waitFor('the batch in hand', () => inHand || undefined);

    const closing = pipeline.close();
    // close() stops the kafkajs runner synchronously; let its first steps run before the batch goes on.
    await new Promise((resolve) => setImmediate(resolve));
    release();
    await closing;

    const [committed] = await withAdmin(createKafka(config.kafka, silentLogger), (admin) => admin.fetchOffsets({ groupId: config.kafka.groupId, topics: [topic] }));
    expect(committed?.partitions.map((p) => p.offset)).toEqual(['1']);
  });
});
