import { randomBytes } from 'node:crypto';
import type { Queue } from 'bullmq';
import { isAfter } from '../core/change-order.js';
import { DeferredError, handBackOnShutdown, hasSystemCode, IndexerError, isRetryable, retryAfterOf } from '../core/errors.js';
import { isolateFailures, MicroBatcher, type Outcome } from '../core/micro-batcher.js';
import { withRetry, type RetryPolicy } from '../core/retry.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { InflightVectors } from '../embed/inflight-vectors.js';
import { newJobId, type defaultJobOptions, type EmbedJobData, type ItemWrite } from '../queue/jobs.js';
import { buildPayload, type Payload, type SinkBatch, type SinkRecord, type VectorSink } from '../sinks/vector-sink.js';
import type { ItemStateStore } from '../state/item-state.js';
import { backfillShare } from '../backfill/backfill-job.js';
import type { BackfillStore } from '../backfill/backfill-store.js';

export interface WriteStageOptions {
  sink: VectorSink;
  state: ItemStateStore;
  inflight: InflightVectors;
  /** Where items go back when the sink turns out not to hold the vector a payload write expects. */
  embedQueue: Queue<EmbedJobData>;
  jobOptions: ReturnType<typeof defaultJobOptions>;
  /** Where a backfill counts its jobs in flight: an item of it embedded again counts there too. */
  backfills?: BackfillStore;
  batchSize: number;
  lingerMs: number;
  /**
   * How long an item's write lease lasts without renewal: longer than one sink request can take
   * (it is renewed before every retry), so a writer that still runs never loses it mid-request.
   */
  leaseMs: number;
  /** Aborted when the process stops: no new sink attempt starts (see handBackOnShutdown). */
  stopping?: AbortSignal;
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
  /** Names this writer on the items it leases; no two writers, in any process, share it. */
  private readonly writerId = randomBytes(9).toString('base64url');
  /** Since when the sink has refused every write (through the in-process retries); undefined while it answers. */
  private sinkDownSince: { at: number; reason: string } | undefined;

  constructor(private readonly options: WriteStageOptions) {
    this.batcher = new MicroBatcher({
      maxSize: options.batchSize,
      lingerMs: options.lingerMs,
      run: (items) => this.runBatch(items),
      maxConcurrent: 1,
      // Batches run one at a time: a live write must not wait behind a large batch of backfill rows.
      urgent: (item) => item.backfill === undefined,
      backgroundMaxSize: Math.max(1, Math.min(BACKFILL_BATCH_MAX, Math.floor(options.batchSize / BACKFILL_BATCH_DIVISOR))),
    });
  }

  /** One write job's writes: one outcome per write, in order. */
  async process(writes: ItemWrite[]): Promise<Outcome<void>[]> {
    return (await this.batcher.submitAll(writes)).map((o) => (o.ok ? o : { ok: false, error: deferIfOutage(o.error) }));
  }

  drain(): Promise<void> {
    return this.batcher.drain();
  }

  /** Why this writer cannot write now, if it cannot: the sink has been unavailable since a time. */
  health(): { sinkAvailable: boolean; reason?: string } {
    const down = this.sinkDownSince;
    if (down === undefined) return { sinkAvailable: true };
    return { sinkAvailable: false, reason: `the sink has been unavailable since ${new Date(down.at).toISOString()} (${down.reason}): write jobs wait in the queue` };
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
    // One writer per item at a time: a delete and an older upsert of one item, written by two
    // writers at once, could otherwise cross in the sink (an insert is never guarded) and bring
    // the deleted item back. An item another writer holds waits for its turn.
    const claims = await state.claimForWrite(candidates.map((i) => (items[i] as ItemWrite).itemId), this.writerId, this.options.leaseMs);
    const claimed: number[] = [];
    const chosen: number[] = [];
    // What the sink held at the claim: while this writer keeps the lease, no one else records a
    // write of the item, so the record needs no second read of its state.
    const heldDeleteAtClaim = new Map<number, boolean>();
    let vectorless = 0;
    candidates.forEach((i, k) => {
      const { claimed: mine, written, seen } = claims[k] as (typeof claims)[number];
      const item = items[i] as ItemWrite;
      if (!mine) {
        outcomes[i] = { ok: false, error: new DeferredError('WRITE_ITEM_BUSY', `item ${item.itemId} is being written by another writer; this write waits its turn`, { retryAfterMs: ITEM_BUSY_RECHECK_MS }) };
        return;
      }
      claimed.push(i);
      heldDeleteAtClaim.set(i, written?.op === 'delete');
      if (written !== undefined && !isAfter(item, written)) return;
      // A payload a newer change superseded is not written: the newer one carries newer metadata.
      // An upsert always is: its vector was paid for, and the newer change may need that very text.
      if (item.op === 'payload' && seen !== undefined && isAfter(seen, item)) return;
      // Its job's vectors were removed once its writes were recorded; a job run again after that
      // finds them gone, and only an item that was still not written needs one (never expected).
      if (item.op === 'upsert' && item.vector === undefined) {
        vectorless++;
        outcomes[i] = { ok: false, error: new IndexerError('WRITE_VECTOR_MISSING', `the vector of item ${item.itemId} (version ${item.version}) is no longer beside its write job; replay the change from its source`, { canRetry: false }) };
        return;
      }
      chosen.push(i);
    });
    metrics.eventsSkipped.inc({ reason: 'not_newer_than_sink' }, items.length - chosen.length - vectorless - (candidates.length - claimed.length));

    // Items the sink turned out not to hold (a set: a retried or split call may report one twice).
    const missing = new Set<string>();
    const results = await this.write(chosen.map((i) => items[i] as ItemWrite), new Date().toISOString(), missing);
    chosen.forEach((itemIndex, k) => (outcomes[itemIndex] = results[k] as Outcome<void>));

    const lost = chosen.filter((i) => (items[i] as ItemWrite).op === 'payload' && missing.has((items[i] as ItemWrite).itemId));
    if (lost.length > 0) await this.reembed(lost.map((i) => items[i] as ItemWrite));
    const lostSet = new Set(lost);
    const written = new Set(chosen.filter((i) => outcomes[i]?.ok && !lostSet.has(i)));
    // A write whose outcome is unknown (a timeout, a reset: a remote sink may still apply it) hands
    // the item's lease to no writer until it expires: released now, a delete (of another writer,
    // or of this one in its next batch) could land first and this upsert after it.
    const notWritten = claimed.filter((i) => !written.has(i));
    const unknown = new Set(this.options.sink.remote ? notWritten.filter((i) => outcomeUnknown(outcomes[i] as Outcome<void>)) : []);
    const idsOf = (indexes: number[]) => indexes.map((i) => (items[i] as ItemWrite).itemId);
    const writtenIndexes = [...written];
    const writtenItems = writtenIndexes.map((i) => items[i] as ItemWrite);
    // Upserts written: their vectors no longer wait in the write queue. Issued in this order on
    // one connection, so the state shows the write before the vector in flight is forgotten (the
    // embed stage relies on it not to buy that vector again). The leases go back in the same call.
    await Promise.all([
      state.recordWritten(
        writtenIndexes.map((i) => {
          const item = items[i] as ItemWrite;
          return { itemId: item.itemId, version: item.version, deleted: item.op === 'delete', contentHash: item.contentHash, model: item.model, sinkHeldDelete: heldDeleteAtClaim.get(i) };
        }),
        { writerId: this.writerId, leaseMs: this.options.leaseMs, released: idsOf(notWritten.filter((i) => !unknown.has(i))), uncertain: idsOf([...unknown]) },
      ),
      this.options.inflight.forget(writtenItems.flatMap((item) => (item.op === 'upsert' && item.contentHash && item.heldBy ? [{ hash: item.contentHash, job: item.heldBy }] : []))),
    ]);

    const now = Date.now();
    outcomes.forEach((o, i) => {
      if (o.ok) metrics.eventToSinkSeconds.observe((now - (items[i] as ItemWrite).acceptedAt) / 1000);
    });
    return outcomes;
  }

  /**
   * Before each retry of a sink write: the leases must outlast the request. A
   * writer that lost one (it stalled past the lease, and another writer took the item) must not
   * write: the batch waits and is claimed afresh.
   */
  private async holdLeases(itemIds: string[]): Promise<void> {
    const lost = await this.options.state.renewLeases(itemIds, this.writerId, this.options.leaseMs);
    if (lost > 0) throw new DeferredError('WRITE_ITEM_BUSY', `this writer lost the write lease of ${lost} items (it stalled past its lease); the batch waits and is claimed again`, { retryAfterMs: ITEM_BUSY_RECHECK_MS });
  }

  private noteSinkFailure(error: unknown): void {
    if (error instanceof IndexerError && error.code === 'SINK_UNAVAILABLE' && isRetryable(error)) {
      if (this.sinkDownSince !== undefined) return;
      this.sinkDownSince = { at: Date.now(), reason: error.message };
      this.options.logger.warn({ err: error.message }, 'the sink is unavailable: write jobs are held in the queue until it answers (nothing is dead-lettered)');
    }
  }

  /**
   * The state said the sink held this text's vector, but the sink has no point for it (lost, or
   * holding another text's vector: an edit written meanwhile): the state forgets what it claimed
   * and the change goes back to be embedded, rather than being skipped forever or landing on the
   * wrong vector. This is why payload-only writes carry their text.
   */
  private async reembed(items: ItemWrite[]): Promise<void> {
    const { state, embedQueue, jobOptions, logger } = this.options;
    logger.warn({ items: items.map((i) => i.itemId).slice(0, 20), count: items.length }, 'the sink does not hold the vectors the state recorded; embedding them again');
    await state.forgetWritten(items.map((i) => i.itemId));
    const changes = items.map((item) => ({ itemId: item.itemId, op: 'upsert' as const, version: item.version, versionSource: item.versionSource ?? 'version', updatedAt: item.updatedAt, text: item.text, metadata: item.metadata, source: undefined, acceptedAt: item.acceptedAt, ...(item.backfill === undefined ? {} : { backfill: item.backfill }) }));
    const jobId = newJobId('e');
    // A backfill completes once its jobs are done: one of its items embedded again is still its
    // work. Counted before the job is added, while this write job (counted too) still runs.
    const { backfills, priority } = backfillShare(items);
    if (backfills.length > 0) await this.options.backfills?.addJobs(backfills, [jobId]);
    await embedQueue.add('lost-points', { changes }, { ...jobOptions, ...priority, jobId });
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
        const ids = part.map((w) => w.itemId);
        let result: { missing: string[] };
        try {
          result = await withRetry(
            async (attempt) => {
              // The first attempt follows the claim by moments; a retry may come after a long
              // wait, so the leases are renewed (and checked) before it.
              if (attempt > 1) await this.holdLeases(ids);
              return sink.write(batch);
            },
            {
              policy: this.options.retryPolicy,
              signal: this.options.stopping,
              onRetry: ({ attempt, delayMs, error }) => logger.warn({ attempt, delayMs, err: (error as Error).message }, 'sink write failed; retrying'),
            },
          );
        } catch (error) {
          this.noteSinkFailure(error);
          throw handBackOnShutdown(error, this.options.stopping);
        }
        this.sinkDownSince = undefined;
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

/** Failures that prove the request never reached the server. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * A failed write the sink may still have applied: a retryable failure (a timeout, a reset, a 5xx)
 * other than one proving the request never reached it, or a write that was never tried.
 */
function outcomeUnknown(outcome: Outcome<void>): boolean {
  if (outcome.ok) return false;
  const error = outcome.error;
  if (error instanceof DeferredError && error.code === 'WRITE_ITEM_BUSY') return false;
  return isRetryable(error) && !hasSystemCode(error, NEVER_SENT);
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
/**
 * ...and at most this many: a live write waits behind one such commit at most. On LanceDB, 512
 * raised live p95 during a backfill 2.3x against 1.8x for 256 (npm run bench:backfill).
 */
const BACKFILL_BATCH_MAX = 256;

/** How soon a write waiting for another writer's item lease tries again. */
const ITEM_BUSY_RECHECK_MS = 500;

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
  return { itemId: item.itemId, vector: item.vector as Float32Array, payload: toPayload(item, indexedAt) };
}
