import type { Queue } from 'bullmq';
import { isAfter } from '../core/change-order.js';
import { DeferredError, IndexerError, isRetryable, retryAfterOf } from '../core/errors.js';
import { isolateFailures, MicroBatcher, type Outcome } from '../core/micro-batcher.js';
import { withRetry, type RetryPolicy } from '../core/retry.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { InflightVectors } from '../embed/inflight-vectors.js';
import { decodeVector, newJobId, type defaultJobOptions, type EmbedJobData, type ItemWrite } from '../queue/jobs.js';
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
 * Groups the writes of the write jobs this process holds into sink batches (upserts, payload-only
 * updates and deletes in one sink call).
 * Batches run one at a time per process, and a change is written only when it is newer than what
 * the sink holds for its item, by the Redis state and again inside the sink (version guards):
 * redelivered, superseded and out-of-order changes never overwrite a newer vector or resurrect a
 * deleted item. The state is updated only after the sink acknowledged.
 */
export class WriteStage {
  private readonly batcher: MicroBatcher<ItemWrite, void>;

  constructor(private readonly options: WriteStageOptions) {
    this.batcher = new MicroBatcher({
      maxSize: options.batchSize,
      lingerMs: options.lingerMs,
      run: (items) => this.runBatch(items),
      maxConcurrent: 1,
      // Batches run one at a time: a live write must not wait behind a large batch of backfill rows.
      urgent: (item) => item.backfill === undefined,
      backgroundMaxSize: Math.max(1, Math.floor(options.batchSize / BACKFILL_BATCH_DIVISOR)),
    });
  }

  /** One write job's writes: one outcome per write, in order. */
  async process(writes: ItemWrite[]): Promise<Outcome<void>[]> {
    return (await this.batcher.submitAll(writes)).map((o) => (o.ok ? o : { ok: false, error: deferIfOutage(o.error) }));
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
      if (seen === undefined || !isAfter(items[seen] as ItemWrite, item)) newest.set(item.itemId, i);
    });
    const candidates = [...newest.values()];
    const newer = await state.newerThanWritten(candidates.map((i) => items[i] as ItemWrite));
    const chosen = candidates.filter((_, k) => newer[k]);
    metrics.eventsSkipped.inc({ reason: 'not_newer_than_sink' }, items.length - chosen.length);

    // Items the sink turned out not to hold (a set: a retried or split call may report one twice).
    const missing = new Set<string>();
    const results = await this.write(chosen.map((i) => items[i] as ItemWrite), new Date().toISOString(), missing);
    chosen.forEach((itemIndex, k) => (outcomes[itemIndex] = results[k] as Outcome<void>));

    const lost = chosen.filter((i) => (items[i] as ItemWrite).op === 'payload' && missing.has((items[i] as ItemWrite).itemId));
    if (lost.length > 0) await this.reembed(lost.map((i) => items[i] as ItemWrite));
    const lostSet = new Set(lost);
    const written = chosen.filter((i) => outcomes[i]?.ok && !lostSet.has(i)).map((i) => items[i] as ItemWrite);
    // Upserts written: their vectors no longer wait in the write queue. Issued in this order on
    // one connection, so the state shows the write before the vector in flight is forgotten (the
    // embed stage relies on it not to buy that vector again).
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
   * The batch in one sink call (one commit or one request), retried in process; when the sink
   * refuses it for its content, it is split until the refused record is alone.
   */
  private write(writes: ItemWrite[], indexedAt: string, missing: Set<string>): Promise<Outcome<void>[]> {
    const { sink, metrics, logger } = this.options;
    return isolateFailures(
      writes,
      async (part) => {
        const batch = toSinkBatch(part, indexedAt);
        const result = await withRetry(() => sink.write(batch), {
          policy: this.options.retryPolicy,
          onRetry: ({ attempt, delayMs, error }) => logger.warn({ attempt, delayMs, err: (error as Error).message }, 'sink write failed; retrying'),
        });
        for (const itemId of result.missing) missing.add(itemId);
        for (const [op, n] of [['upsert', batch.upserts.length], ['payload', batch.payloads.length], ['delete', batch.deletes.length]] as const) {
          if (n === 0) continue;
          metrics.batchSize.observe({ stage: `write_${op}` }, n);
          metrics.sinkWrites.inc({ sink: sink.kind, op }, n);
        }
        return part.map(() => undefined);
      },
      // A sink that refuses a batch for its content: split it to find the record it refuses.
      (error) => !isRetryable(error) && error instanceof IndexerError && error.code === 'SINK_REJECTED',
    );
  }
}

function toSinkBatch(writes: ItemWrite[], indexedAt: string): SinkBatch {
  const of = (op: ItemWrite['op']) => writes.filter((w) => w.op === op);
  return {
    upserts: of('upsert').map((w) => toRecord(w, indexedAt)),
    payloads: of('payload').map((w) => ({ itemId: w.itemId, payload: toPayload(w, indexedAt) })),
    deletes: of('delete').map((w) => ({ itemId: w.itemId, version: w.version })),
  };
}

/** Backfill rows are written in batches of WRITE_BATCH_SIZE / this: what a live write may wait behind. */
const BACKFILL_BATCH_DIVISOR = 4;

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
