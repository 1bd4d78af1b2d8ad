import { IndexerError, isRetryable } from '../core/errors.js';
import { isolateFailures, MicroBatcher, type Outcome } from '../core/micro-batcher.js';
import { withRetry, type RetryPolicy } from '../core/retry.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { decodeVector, type WriteJobData } from '../queue/jobs.js';
import { buildPayload, type SinkRecord, type VectorSink } from '../sinks/vector-sink.js';
import type { ItemStateStore } from './item-state.js';

export interface WriteStageOptions {
  sink: VectorSink;
  state: ItemStateStore;
  batchSize: number;
  lingerMs: number;
  logger: Logger;
  metrics: Metrics;
  retryPolicy?: RetryPolicy;
}

/**
 * Groups write jobs into sink batches: upserts in one call, deletes in another. Batches run one
 * at a time per process, and a change is written only when it is newer than what the sink holds
 * for its item: redelivered, superseded and out-of-order changes never overwrite a newer vector
 * or resurrect a deleted item.
 */
export class WriteStage {
  private readonly batcher: MicroBatcher<WriteJobData, void>;

  constructor(private readonly options: WriteStageOptions) {
    this.batcher = new MicroBatcher({ maxSize: options.batchSize, lingerMs: options.lingerMs, run: (items) => this.runBatch(items), maxConcurrent: 1 });
  }

  process(data: WriteJobData): Promise<void> {
    return this.batcher.submit(data);
  }

  drain(): Promise<void> {
    return this.batcher.drain();
  }

  private async runBatch(items: WriteJobData[]): Promise<Outcome<void>[]> {
    const outcomes: Outcome<void>[] = items.map(() => ({ ok: true, value: undefined }));
    // Two changes of one item in one batch: only the newest is written (the other is superseded).
    const newest = new Map<string, number>();
    items.forEach((item, i) => {
      const seen = newest.get(item.itemId);
      if (seen === undefined || (items[seen] as WriteJobData).version <= item.version) newest.set(item.itemId, i);
    });
    const candidates = [...newest.values()];
    const newer = await this.options.state.newerThanWritten(candidates.map((i) => items[i] as WriteJobData));
    const chosen = candidates.filter((_, k) => newer[k]);
    const upserts = chosen.filter((i) => (items[i] as WriteJobData).op === 'upsert');
    const deletes = chosen.filter((i) => (items[i] as WriteJobData).op === 'delete');

    const indexedAt = new Date().toISOString();
    const records = upserts.map((i) => toRecord(items[i] as WriteJobData, indexedAt));
    const [upserted, deleted] = await Promise.all([
      this.write('upsert', records, (batch) => this.options.sink.upsert(batch)),
      this.write('delete', deletes.map((i) => (items[i] as WriteJobData).itemId), (batch) => this.options.sink.delete(batch)),
    ]);
    upserts.forEach((itemIndex, k) => (outcomes[itemIndex] = upserted[k] as Outcome<void>));
    deletes.forEach((itemIndex, k) => (outcomes[itemIndex] = deleted[k] as Outcome<void>));
    // Only what the sink acknowledged is recorded as written.
    await this.options.state.recordWritten(
      chosen
        .filter((i) => outcomes[i]?.ok)
        .map((i) => {
          const item = items[i] as WriteJobData;
          return { itemId: item.itemId, version: item.version, deleted: item.op === 'delete', contentHash: item.contentHash, model: item.model };
        }),
    );

    const now = Date.now();
    outcomes.forEach((o, i) => {
      if (o.ok) this.options.metrics.eventToSinkSeconds.observe((now - (items[i] as WriteJobData).acceptedAt) / 1000);
    });
    return outcomes;
  }

  private write<T>(op: 'upsert' | 'delete', entries: T[], call: (batch: T[]) => Promise<void>): Promise<Outcome<void>[]> {
    const { sink, metrics, logger } = this.options;
    return isolateFailures(
      entries,
      async (batch) => {
        metrics.batchSize.observe({ stage: `write_${op}` }, batch.length);
        await withRetry(() => call(batch), {
          policy: this.options.retryPolicy,
          onRetry: ({ attempt, delayMs, error }) => logger.warn({ op, attempt, delayMs, err: (error as Error).message }, 'sink write failed; retrying'),
        });
        metrics.sinkWrites.inc({ sink: sink.kind, op }, batch.length);
        return batch.map(() => undefined);
      },
      // A sink that refuses a batch for its content: split it to find the record it refuses.
      (error) => !isRetryable(error) && error instanceof IndexerError && error.code === 'SINK_REJECTED',
    );
  }
}

function toRecord(item: WriteJobData, indexedAt: string): SinkRecord {
  return {
    itemId: item.itemId,
    vector: decodeVector(item.vector as string),
    payload: buildPayload(item.metadata, {
      item_id: item.itemId,
      version: item.version,
      content_hash: item.contentHash as string,
      model: item.model as string,
      source_updated_at: item.updatedAt ?? null,
      embedded_at: item.embeddedAt as string,
      indexed_at: indexedAt,
    }),
  };
}
