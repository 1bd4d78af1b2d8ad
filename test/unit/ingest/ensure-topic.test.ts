import { KafkaJSProtocolError, type Kafka } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ensureTopic } from '../../../src/ingest/produce.js';

/** kafkajs's own error for the reply, as its metadata request throws it. */
const unknownTopic = () => new KafkaJSProtocolError({ message: 'This server does not host this topic-partition', type: 'UNKNOWN_TOPIC_OR_PARTITION', code: 3, retriable: true } as unknown as Error);

/** An admin whose createTopics fails as kafkajs's did against a KRaft broker whose metadata lagged. */
function lagging(metadataReplies: (() => unknown)[], createError: Error = unknownTopic()) {
  const calls = { create: 0, metadata: 0 };
  const admin = {
    connect: async () => undefined,
    disconnect: async () => undefined,
    listTopics: async () => [],
    createTopics: async () => {
      calls.create++;
      throw createError;
    },
    fetchTopicMetadata: async () => {
      const reply = metadataReplies[Math.min(calls.metadata++, metadataReplies.length - 1)] as () => unknown;
      return reply();
    },
  };
  return { kafka: { admin: () => admin } as unknown as Kafka, calls };
}

const partitions = (...leaders: number[]) => () => ({ topics: [{ name: 't', partitions: leaders.map((leader, partitionId) => ({ partitionId, leader })) }] });

describe('ensureTopic', () => {
  it('waits for the leaders itself when the broker did not know the topic it just created', async () => {
    const { kafka, calls } = lagging([
      () => {
        throw unknownTopic();
      },
      partitions(-1, 1),
      partitions(1, 1),
    ]);
    await ensureTopic(kafka, 't', 2);
    expect(calls).toEqual({ create: 1, metadata: 3 });
  });

  it('throws any other failure of the creation as it is', async () => {
    const { kafka } = lagging([partitions(1)], new Error('the broker refused'));
    await expect(ensureTopic(kafka, 't', 1)).rejects.toThrow('the broker refused');
  });
});
