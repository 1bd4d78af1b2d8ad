import type { Admin, Kafka } from 'kafkajs';
import { isUnknownTopic } from '../ingest/kafka.js';

export interface PartitionLag {
  topic: string;
  partition: number;
  /** The group's committed offset; null before it committed any on this partition. */
  committed: string | null;
  /** The offset the next message will get (the high watermark). */
  end: string;
  /** What the group has still to read: end minus committed (from where it would start when none). */
  lag: number;
}

/**
 * Consumer lag per topic and partition, through one admin client kept connected between reads
 * (status --watch and the metrics sampler read it every few seconds); after a failure the next
 * read connects afresh.
 */
export class KafkaLagReader {
  private admin: Promise<Admin> | undefined;

  constructor(private readonly kafka: Kafka) {}

  /**
   * `fromBeginning`: where the group starts on a partition it never committed (KAFKA_FROM_BEGINNING,
   * or a re-index generation): from the earliest offset, whose events it has still to read, or the end.
   */
  async read(groupId: string, topics: readonly string[], fromBeginning: boolean): Promise<PartitionLag[]> {
    try {
      const admin = await this.connected();
      const committed = await admin.fetchOffsets({ groupId, topics: [...topics] });
      const lags: PartitionLag[] = [];
      for (const topic of topics) {
        const done = committed.find((c) => c.topic === topic)?.partitions ?? [];
        for (const { partition, high, low } of await admin.fetchTopicOffsets(topic)) {
          const offset = done.find((p) => p.partition === partition)?.offset;
          const has = offset !== undefined && offset !== '-1';
          const from = has ? BigInt(offset) : fromBeginning ? BigInt(low) : BigInt(high);
          lags.push({ topic, partition, committed: has ? offset : null, end: high, lag: Number(BigInt(high) - from) });
        }
      }
      return lags.sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
    } catch (error) {
      await this.close();
      if (isUnknownTopic(error)) throw new Error(`a topic of ${topics.join(', ')} does not exist on the brokers (check KAFKA_TOPICS and KAFKA_BROKERS)`);
      throw error;
    }
  }

  async close(): Promise<void> {
    const admin = this.admin;
    this.admin = undefined;
    if (admin) await admin.then((a) => a.disconnect()).catch(() => undefined);
  }

  private connected(): Promise<Admin> {
    this.admin ??= (async () => {
      // Few retries: a status screen says "Kafka unreachable" in seconds rather than waiting out kafkajs's default backoff.
      const admin = this.kafka.admin({ retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 1_000 } });
      await admin.connect();
      return admin;
    })();
    return this.admin;
  }
}
