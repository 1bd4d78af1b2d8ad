import { setTimeout as sleep } from 'node:timers/promises';
import type { Consumer, Kafka } from 'kafkajs';
import { BackfillError, errorMessage } from '../../core/errors.js';
import { deleteConsumerGroup, isUnknownTopic, withAdmin } from '../../ingest/kafka.js';
import type { BackfillSource, SourcePage, SourceRecord } from './source.js';

/** Per partition: the first offset, the end taken when the backfill started, and the next to read. */
interface KafkaCursor {
  low: Record<string, string>;
  end: Record<string, string>;
  next: Record<string, string>;
}

const HEARTBEAT_MS = 3_000;

/**
 * `kafka:TOPIC`: the topic replayed from its first offset up to the end offsets taken when the
 * backfill started (a compacted product topic is the usual source of truth). Those end offsets
 * are part of the cursor, so a resumed backfill stops where the first attempt would have; events
 * produced after the start are the live pipeline's. Reads with a consumer group of its own
 * (`<KAFKA_GROUP_ID>.backfill.<job id>`, deleted at the end) and never commits: the checkpoint is
 * the cursor in Redis, and each start seeks to it.
 */
export class KafkaSource implements BackfillSource {
  private consumer: Consumer | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly topic: string,
    private readonly groupId: string,
  ) {}

  async *pages(cursor: string | undefined, pageSize: number, signal: AbortSignal): AsyncIterable<SourcePage> {
    const position = cursor === undefined ? await this.snapshot() : (JSON.parse(cursor) as KafkaCursor);
    const open = new Set(Object.keys(position.end).filter((p) => BigInt(position.next[p] as string) < BigInt(position.end[p] as string)));
    if (open.size === 0) return;

    const consumer = this.kafka.consumer({ groupId: this.groupId, sessionTimeout: 30_000, heartbeatInterval: HEARTBEAT_MS, maxBytesPerPartition: 1_048_576 });
    this.consumer = consumer;
    // Pages are handed over one at a time: the consumer waits (heartbeating) until the backfill
    // has queued the last one, so it never reads ahead of the checkpoint by more than a batch.
    let handOver: ((page: { page: SourcePage; taken: () => void } | Error) => void) | undefined;
    let waiting: { page: SourcePage; taken: () => void } | Error | undefined;
    const deliver = (item: { page: SourcePage; taken: () => void } | Error) => {
      if (handOver) {
        const give = handOver;
        handOver = undefined;
        give(item);
      } else waiting = item;
    };
    signal.addEventListener('abort', () => deliver(new Error('the backfill was cancelled or its worker is stopping')), { once: true });
    // Every batch, data or not (a transaction's commit marker is a batch without messages), ends
    // with its last offset: a partition whose reads reached the end offset is done.
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      const p = String(payload.partition);
      if (payload.topic !== this.topic || !open.has(p)) return;
      if (BigInt(payload.lastOffset) + 1n < BigInt(position.end[p] as string)) return;
      position.next[p] = position.end[p] as string;
      open.delete(p);
      consumer.pause([{ topic: this.topic, partitions: [payload.partition] }]);
      if (open.size === 0) deliver({ page: { records: [], cursor: JSON.stringify(position), fraction: 1 }, taken: () => undefined });
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => deliver(new BackfillError('BACKFILL_SOURCE_UNAVAILABLE', `reading ${this.topic} failed: ${errorMessage(payload.error)}`, { canRetry: true, cause: payload.error })));

    const fraction = () => {
      let total = 0n;
      let done = 0n;
      for (const p of Object.keys(position.end)) {
        total += BigInt(position.end[p] as string) - BigInt(position.low[p] as string);
        done += BigInt(position.next[p] as string) - BigInt(position.low[p] as string);
      }
      return total === 0n ? 1 : Number(done) / Number(total);
    };

    try {
      await consumer.connect();
      await consumer.subscribe({ topic: this.topic, fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        eachBatch: async ({ batch, heartbeat, isRunning }) => {
          const p = String(batch.partition);
          if (!open.has(p)) return;
          const end = BigInt(position.end[p] as string);
          const messages = batch.messages.filter((m) => BigInt(m.offset) < end && BigInt(m.offset) >= BigInt(position.next[p] as string));
          for (let i = 0; i < messages.length && isRunning(); i += pageSize) {
            const slice = messages.slice(i, i + pageSize);
            const records: SourceRecord[] = slice.map((m) => ({ kind: 'bytes', position: `${this.topic}/${p}@${m.offset}`, key: m.key, value: m.value, timestampMs: Number(m.timestamp) }));
            position.next[p] = (BigInt((slice.at(-1) as { offset: string }).offset) + 1n).toString();
            if (BigInt(position.next[p]) >= end) open.delete(p);
            let taken = false;
            const page: SourcePage = { records, cursor: JSON.stringify(position), fraction: fraction() };
            deliver({ page, taken: () => (taken = true) });
            while (!taken && isRunning() && !signal.aborted) {
              await sleep(50);
              if (!taken) await heartbeat().catch(() => undefined);
            }
          }
          // A message at or past the end: everything below it was read (the rest was compacted away).
          if (batch.messages.some((m) => BigInt(m.offset) >= end) || BigInt(position.next[p] as string) >= end) {
            position.next[p] = end.toString();
            open.delete(p);
          }
          if (!open.has(p)) consumer.pause([{ topic: this.topic, partitions: [batch.partition] }]);
          if (open.size === 0) deliver({ page: { records: [], cursor: JSON.stringify(position), fraction: 1 }, taken: () => undefined });
        },
      });
      for (const p of Object.keys(position.end)) {
        if (open.has(p)) consumer.seek({ topic: this.topic, partition: Number(p), offset: position.next[p] as string });
        else consumer.pause([{ topic: this.topic, partitions: [Number(p)] }]);
      }

      for (;;) {
        const item = waiting ?? (await new Promise<{ page: SourcePage; taken: () => void } | Error>((resolve) => (handOver = resolve)));
        waiting = undefined;
        if (item instanceof Error) throw item;
        if (item.page.records.length > 0) yield item.page;
        item.taken();
        if (open.size === 0) return;
      }
    } finally {
      await consumer.disconnect().catch(() => undefined);
      this.consumer = undefined;
      if (open.size === 0) await deleteConsumerGroup(this.kafka, this.groupId);
    }
  }

  async close(): Promise<void> {
    await this.consumer?.disconnect().catch(() => undefined);
  }

  /** The first and end offsets of every partition, now: the pass reads what was there at its start. */
  private async snapshot(): Promise<KafkaCursor> {
    try {
      const offsets = await withAdmin(this.kafka, (admin) => admin.fetchTopicOffsets(this.topic));
      const cursor: KafkaCursor = { low: {}, end: {}, next: {} };
      for (const o of offsets) {
        cursor.low[o.partition] = o.low;
        cursor.end[o.partition] = o.high;
        cursor.next[o.partition] = o.low;
      }
      return cursor;
    } catch (error) {
      const unknown = isUnknownTopic(error);
      throw new BackfillError(unknown ? 'BACKFILL_INVALID' : 'BACKFILL_SOURCE_UNAVAILABLE', `cannot read the offsets of topic ${this.topic}: ${errorMessage(error)}`, { canRetry: !unknown, cause: error });
    }
  }
}
