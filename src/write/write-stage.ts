import type { Queue } from 'bullmq';
import { DeferredError, IndexerError, isRetryable, retryAfterOf } from '../core/errors.js';
import { isolateFailures, MicroBatcher, type Outcome } from '../core/micro-batcher.js';
import { withRetry, type RetryPolicy } from '../core/retry.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { InflightVectors } from '../embed/inflight-vectors.js';
import { decodeVector, newJobId, type defaultJobOptions, type EmbedJobData, type ItemWrite, type WriteJobData } from '../queue/jobs.js';
import { buildPayload, type Payload, type SinkBatch, type SinkRecord, type VectorSink } from '../sinks/vector-sink.js';
import type { ItemStateStore } from '../state/item-state.js';

export interface WriteStageOptions {
  sink: VectorSink;
  state: ItemStateStore;
  inflight: InflightVectors;
  /** Where items go back when the sink turns out to have lost their point. */
  embedQueue: Queue<EmbedJobData>;
  jobOptions: ReturnType<typeof defaultJobOptions>;
  batchSize: number;
  lingerMs: number;
  logger: Logger;
  metrics: Metrics;
  retryPolicy?: RetryPolicy;
}

/**
 * Groups the writes of the write jobs this process holds into sink batches (upserts, payload-only updates, deletes: one call each).
 * Batches run one at a time per process, and a change is written only when it is newer than what
 * the sink holds for its item, by the Redis state and again inside the sink (version guards):
 * redelivered, superseded and out-of-order changes never overwrite a newer vector or resurrect a
 * deleted item. The state is updated only after the sink acknowledged.
 */
export class WriteStage {
  private readonly batcher: MicroBatcher<ItemWrite, void>;

  constructor(private readonly options: WriteStageOptions) {
    this.batcher = new MicroBatcher({ maxSize: options.batchSize, lingerMs: options.lingerMs, run: (items) => this.runBatch(items), maxConcurrent: 1 });
  }

  /** One write job's writes: one outcome per write, in order. */
  async process(writes: ItemWrite[]): Promise<Outcome<void>[]> {
    const settled = await Promise.allSettled(writes.map((write) => this.batcher.submit(write)));
    return settled.map((s) => (s.status === 'fulfilled' ? { ok: true, value: undefined } : { ok: false, error: deferIfOutage(s.reason) }));
  }

  drain(): Promise<void> {
    return this.batcher.drain();
  }

  private async runBatch(items: ItemWrite[]): Promise<Outcome<void>[]> {
    const { state, metrics } = this.options;
    const outcomes: Outcome<void>[] = items.map(() => ({ ok: true, value: undefined }));
    // Two changes of one item in one batch: only the newest is written (the other is superseded).
    const newest = new Map<string, number>();
    items.forEach((item, i) => {
      const seen = newest.get(item.itemId);
      if (seen === undefined || (items[seen] as ItemWrite).version <= item.version) newest.set(item.itemId, i);
    });
    const candidates = [...newest.values()];
    const newer = await state.newerThanWritten(candidates.map((i) => items[i] as ItemWrite));
    const chosen = candidates.filter((_, k) => newer[k]);
    metrics.eventsSkipped.inc({ reason: 'not_newer_than_sink' }, items.length - chosen.length);

    const indexedAt = new Date().toISOString();
    const of = (op: ItemWrite['op']) => chosen.filter((i) => (items[i] as ItemWrite).op === op);
    const upserts = of('upsert');
    const payloads = of('payload');
    const deletes = of('delete');

    const batch: SinkBatch = {
      upserts: upserts.map((i) => toRecord(items[i] as ItemWrite, indexedAt)),
      payloads: payloads.map((i) => ({ itemId: (items[i] as ItemWrite).itemId, payload: toPayload(items[i] as ItemWrite, indexedAt) })),
      deletes: deletes.map((i) => ({ itemId: (items[i] as ItemWrite).itemId, version: (items[i] as ItemWrite).version })),
    };
    // Items the sink turned out not to hold (a set: a retried or split call may report one twice).
    const missing = new Set<string>();
    const combined = await this.writeCombined(batch);
    if (combined.ok) {
      for (const itemId of combined.value) missing.add(itemId);
    } else if (combined.error !== undefined) {
      for (const i of chosen) outcomes[i] = { ok: false, error: combined.error };
    } else {
      const upserted = await this.write('upsert', batch.upserts, (part) => this.options.sink.upsert(part));
      const updated = await this.write('payload', batch.payloads, async (part) => {
        for (const itemId of (await this.options.sink.updatePayload(part)).missing) missing.add(itemId);
      });
      const deleted = await this.write('delete', batch.deletes, (part) => this.options.sink.delete(part));
      upserts.forEach((itemIndex, k) => (outcomes[itemIndex] = upserted[k] as Outcome<void>));
      payloads.forEach((itemIndex, k) => (outcomes[itemIndex] = updated[k] as Outcome<void>));
      deletes.forEach((itemIndex, k) => (outcomes[itemIndex] = deleted[k] as Outcome<void>));
    }

    const lost = payloads.filter((i) => missing.has((items[i] as ItemWrite).itemId));
    if (lost.length > 0) await this.reembed(lost.map((i) => items[i] as ItemWrite));
    const lostSet = new Set(lost);
    const written = chosen.filter((i) => outcomes[i]?.ok && !lostSet.has(i)).map((i) => items[i] as ItemWrite);
    // Upserts written: their vectors no longer wait in the write queue.
    await Promise.all([
      state.recordWritten(written.map((item) => ({ itemId: item.itemId, version: item.version, deleted: item.op === 'delete', contentHash: item.contentHash, model: item.model }))),
      this.options.inflight.forget(written.flatMap((item) => (item.op === 'upsert' && item.contentHash && item.heldBy ? [{ hash: item.contentHash, job: item.heldBy }] : []))),
    ]);

    const now = Date.now();
    outcomes.forEach((o, i) => {
      if (o.ok) metrics.eventToSinkSeconds.observe((now - (items[i] as ItemWrite).acceptedAt) / 1000);
    });
    return outcomes;
  }

  /**
   * The state said the sink held this text's vector, but the sink has no point: the state forgets
   * what it claimed and the change goes back to be embedded, rather than being skipped forever.
   */
  private async reembed(items: ItemWrite[]): Promise<void> {
    const { state, embedQueue, jobOptions, logger } = this.options;
    logger.warn({ items: items.map((i) => i.itemId).slice(0, 20), count: items.length }, 'the sink lost points the state recorded; re-embedding them');
    await state.forgetWritten(items.map((i) => i.itemId));
    const changes = items.map((item) => ({ itemId: item.itemId, op: 'upsert' as const, version: item.version, versionSource: 'version' as const, updatedAt: item.updatedAt, text: item.text, metadata: item.metadata, source: undefined, acceptedAt: item.acceptedAt }));
    await embedQueue.add('lost-points', { changes }, { ...jobOptions, jobId: newJobId('e') });
  }

  /**
   * The whole batch in one sink call where the sink offers one (fewer commits and round trips).
   * ok: written, with the items the sink did not hold for a payload update. An error: every item
   * fails with it (a retryable one after the in-process retries). Neither: the sink refused
   * something in the batch, or has no combined call; the batch goes op by op, which isolates the
   * refused record.
   */
  private async writeCombined(batch: SinkBatch): Promise<Outcome<string[]> | { ok: false; error: undefined }> {
    const { sink, metrics, logger } = this.options;
    if (!sink.write || batch.upserts.length + batch.payloads.length + batch.deletes.length === 0) return { ok: false, error: undefined };
    const write = sink.write.bind(sink);
    try {
      const { missing } = await withRetry(() => write(batch), {
        policy: this.options.retryPolicy,
        onRetry: ({ attempt, delayMs, error }) => logger.warn({ op: 'batch', attempt, delayMs, err: (error as Error).message }, 'sink write failed; retrying'),
      });
      for (const [op, n] of [['upsert', batch.upserts.length], ['payload', batch.payloads.length], ['delete', batch.deletes.length]] as const) {
        if (n > 0) {
          metrics.batchSize.observe({ stage: `write_${op}` }, n);
          metrics.sinkWrites.inc({ sink: sink.kind, op }, n);
        }
      }
      return { ok: true, value: missing };
    } catch (error) {
      if (error instanceof IndexerError && error.code === 'SINK_REJECTED') return { ok: false, error: undefined };
      return { ok: false, error };
    }
  }

  private write<T>(op: 'upsert' | 'payload' | 'delete', entries: T[], call: (batch: T[]) => Promise<void>): Promise<Outcome<void>[]> {
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

/** How often a write job held by a sink outage tries again. */
const SINK_OUTAGE_RECHECK_MS = 5_000;

/**
 * A sink that stays unavailable through the in-process retries holds the write job (delayed,
 * without spending an attempt) instead of failing it: the vectors in it were paid for, and an
 * outage of any length must not dead-letter them. A write the sink refuses (SINK_REJECTED) still
 * fails, alone.
 */
function deferIfOutage(error: unknown): unknown {
  if (!(error instanceof IndexerError) || error.code !== 'SINK_UNAVAILABLE' || !isRetryable(error)) return error;
  return new DeferredError('SINK_UNAVAILABLE', `${error.message}; the write job waits for the sink`, { retryAfterMs: Math.max(SINK_OUTAGE_RECHECK_MS, retryAfterOf(error) ?? 0) });
}

function toPayload(item: ItemWrite, indexedAt: string): Payload {
  return buildPayload(item.metadata, {
    item_id: item.itemId,
    version: item.version,
    content_hash: item.contentHash as string,
    model: item.model as string,
    source_updated_at: item.updatedAt ?? null,
    // Empty on payload-only writes: the sink keeps the stored vector's embedded_at.
    embedded_at: item.embeddedAt ?? '',
    indexed_at: indexedAt,
    text_tokens: item.textTokens ?? 0,
    truncated: item.truncated ?? false,
  });
}

function toRecord(item: ItemWrite, indexedAt: string): SinkRecord {
  return { itemId: item.itemId, vector: decodeVector(item.vector as string), payload: toPayload(item, indexedAt) };
}
