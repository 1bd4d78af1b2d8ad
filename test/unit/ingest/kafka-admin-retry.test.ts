import type { Admin, Kafka } from 'kafkajs';
import { KafkaJSProtocolError } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ensureTopicsExist, isRetriableKafkaError, withAdmin } from '../../../src/ingest/kafka.js';

/** A kafkajs client whose admin calls fail with `failures` in turn, then succeed. */
function kafkaFailing(failures: Error[]): { kafka: Kafka; connects: () => number; disconnects: () => number } {
  let connects = 0;
  let disconnects = 0;
  const kafka = {
    admin: () =>
      ({
        connect: async () => void connects++,
        disconnect: async () => void disconnects++,
        fetchOffsets: async () => {
          const failure = failures.shift();
          if (failure) throw failure;
          return [{ topic: 't', partitions: [{ partition: 0, offset: '5' }] }];
        },
      }) as unknown as Admin,
  } as unknown as Kafka;
  return { kafka, connects: () => connects, disconnects: () => disconnects };
}

const loading = () => Object.assign(new KafkaJSProtocolError("The coordinator is loading and hence can't process requests for this group"), { type: 'GROUP_LOAD_IN_PROGRESS', code: 14, retriable: true });

describe('withAdmin', () => {
  it('runs the call again while the coordinator is loading, each time on a fresh admin client', async () => {
    const { kafka, connects, disconnects } = kafkaFailing([loading(), loading()]);
    const offsets = await withAdmin(kafka, (admin) => admin.fetchOffsets({ groupId: 'g', topics: ['t'] }));
    expect(offsets[0]?.partitions[0]?.offset).toBe('5');
    expect(connects()).toBe(3);
    expect(disconnects()).toBe(3);
  });

  it('gives up on errors that are not retriable, at once', async () => {
    const denied = Object.assign(new KafkaJSProtocolError('Not authorized to access group: Group authorization failed'), { type: 'GROUP_AUTHORIZATION_FAILED', code: 30, retriable: false });
    const { kafka, connects } = kafkaFailing([denied]);
    await expect(withAdmin(kafka, (admin) => admin.fetchOffsets({ groupId: 'g', topics: ['t'] }))).rejects.toThrow('Group authorization failed');
    expect(connects()).toBe(1);
  });

  it('gives up after its attempts', async () => {
    const { kafka, connects } = kafkaFailing([loading(), loading(), loading()]);
    await expect(withAdmin(kafka, (admin) => admin.fetchOffsets({ groupId: 'g', topics: ['t'] }), 2)).rejects.toThrow('loading');
    expect(connects()).toBe(2);
  });

  it('finds the retriable flag on a wrapped cause', () => {
    expect(isRetriableKafkaError(Object.assign(new Error('outer'), { cause: loading() }))).toBe(true);
    expect(isRetriableKafkaError(new Error('plain'))).toBe(false);
  });
});

describe('ensureTopicsExist', () => {
  const kafkaWith = (topics: string[]) => ({ admin: () => ({ connect: async () => undefined, disconnect: async () => undefined, listTopics: async () => topics }) as unknown as Admin }) as unknown as Kafka;

  it('names the missing topic and the settings to fix, instead of kafkajs retrying "does not host this topic-partition"', async () => {
    await expect(ensureTopicsExist(kafkaWith(['products']), ['products', 'prodcuts'])).rejects.toMatchObject({ code: 'KAFKA_TOPIC_MISSING', canRetry: false, message: expect.stringMatching(/topic prodcuts does not exist.*KAFKA_TOPICS/) });
  });

  it('passes when every topic exists', async () => {
    await expect(ensureTopicsExist(kafkaWith(['a', 'b']), ['a', 'b'])).resolves.toBeUndefined();
  });
});
