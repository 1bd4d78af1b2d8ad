import { setTimeout as sleep } from 'node:timers/promises';
import { BackfillError, errorMessage } from '../core/errors.js';
import { FINISHED, type Batch, type BatchApiClient } from '../embed/batch-api.js';
import { contentHash } from '../embed/content-hash.js';
import type { Tokenizer } from '../embed/tokenizer.js';
import { batchUsageModel, type UsageStore } from '../embed/usage.js';
import { checkVector } from '../embed/vectors.js';
import type { Logger } from '../observability/logger.js';
import { decodeVector, type ItemWrite, type QueuedChange } from '../queue/jobs.js';
import type { ItemState, ItemStateStore } from '../state/item-state.js';

export interface BatchApiEmbedderOptions {
  client: BatchApiClient;
  state: ItemStateStore;
  tokenizer: Tokenizer;
  usage: UsageStore;
  model: string;
  dimensions: number;
  /** Send `dimensions` in each request (as the synchronous path does when it was configured). */
  sendDimensions: boolean;
  pollMs: number;
  logger: Logger;
}

export interface BatchRound {
  /** Upserts whose vectors the batch bought, ready for write jobs. */
  writes: ItemWrite[];
  /** Everything else goes the normal way (embed jobs): deletes, unchanged texts, failed requests. */
  normal: QueuedChange[];
  /** Inputs the batch embedded, and those it failed. */
  bought: number;
  failed: number;
}

/**
 * A backfill's embeddings through OpenAI's Batch API, at half the price: the texts that need a
 * vector are written as a JSONL file (one request per distinct text, its custom_id the content
 * hash), uploaded, run as one batch within its 24 h window, and mapped back by custom_id. Because
 * the ids are content hashes, a backfill that restarts while its batch runs re-reads the same rows
 * and takes the same batch's results (`existing`), without submitting it again. Requests that
 * failed (and texts the batch does not hold) go back to the normal path.
 */
export class BatchApiEmbedder {
  constructor(private readonly options: BatchApiEmbedderOptions) {}

  async embed(
    changes: QueuedChange[],
    control: { existing: string | undefined; created: (batchId: string) => Promise<void>; checkCancelled: () => Promise<void>; label: string },
  ): Promise<BatchRound> {
    const { state, tokenizer, model, dimensions } = this.options;
    const states = await state.getMany(changes.map((c) => c.itemId));
    const texts = new Map<string, { text: string; tokens: number; truncated: boolean }>();
    const wants: { change: QueuedChange; hash: string }[] = [];
    const normal: QueuedChange[] = [];
    changes.forEach((change, i) => {
      if (change.op !== 'upsert') return normal.push(change);
      const prepared = tokenizer.prepare(change.text as string);
      const hash = contentHash(prepared.text, model, dimensions);
      const s = states[i] as ItemState;
      // Text the sink already holds for this model is a payload-only write: free on the normal path.
      if (s.writtenVersion !== undefined && !s.deleted && s.contentHash === hash && s.model === model) return normal.push(change);
      texts.set(hash, prepared);
      wants.push({ change, hash });
    });
    if (wants.length === 0) return { writes: [], normal, bought: 0, failed: 0 };

    const batch = await this.runBatch(texts, control);
    const { vectors, failures, tokens } = await this.results(batch);
    // Best effort, as on the normal path: a refused usage record never costs the vectors.
    if (vectors.size > 0) {
      await this.options.usage.record(batchUsageModel(model), vectors.size, tokens).catch((error: unknown) => this.options.logger.warn({ batch: batch.id, err: (error as Error).message }, 'could not record the batch usage; its vectors go on to be written'));
    }
    if (failures.size > 0) this.options.logger.warn({ batch: batch.id, failed: failures.size, first: [...failures.values()][0] }, 'Batch API requests failed; their items go the normal way');

    const embeddedAt = new Date().toISOString();
    const writes: ItemWrite[] = [];
    for (const { change, hash } of wants) {
      const vector = vectors.get(hash);
      if (vector === undefined) {
        normal.push(change);
        continue;
      }
      const prepared = texts.get(hash) as { tokens: number; truncated: boolean };
      writes.push({
        itemId: change.itemId,
        op: 'upsert',
        version: change.version,
        updatedAt: change.updatedAt,
        acceptedAt: change.acceptedAt,
        metadata: change.metadata,
        contentHash: hash,
        model,
        vector,
        embeddedAt,
        textTokens: prepared.tokens,
        truncated: prepared.truncated,
        ...(change.backfill === undefined ? {} : { backfill: change.backfill }),
      });
    }
    return { writes, normal, bought: vectors.size, failed: texts.size - vectors.size };
  }

  /** Submits the batch (or takes the one submitted before a restart) and waits until it finishes. */
  private async runBatch(texts: Map<string, { text: string }>, control: { existing: string | undefined; created: (batchId: string) => Promise<void>; checkCancelled: () => Promise<void>; label: string }): Promise<Batch> {
    const { client, model, dimensions, sendDimensions, pollMs, logger } = this.options;
    let batchId = control.existing;
    if (batchId === undefined) {
      const lines = [...texts].map(([hash, { text }]) => JSON.stringify({ custom_id: hash, method: 'POST', url: '/v1/embeddings', body: { model, input: text, encoding_format: 'base64', ...(sendDimensions ? { dimensions } : {}) } }));
      const fileId = await client.uploadRequests(`${lines.join('\n')}\n`, `${control.label}.jsonl`);
      const created = await client.createBatch(fileId, { source: 'embedding-indexer', backfill: control.label });
      batchId = created.id;
      await control.created(batchId);
      logger.info({ batch: batchId, inputs: texts.size }, 'Batch API batch submitted');
    } else {
      logger.info({ batch: batchId }, 'waiting for the Batch API batch submitted before the restart');
    }
    for (;;) {
      const batch = await client.getBatch(batchId);
      if (FINISHED.has(batch.status)) {
        logger.info({ batch: batchId, status: batch.status, counts: batch.request_counts }, 'Batch API batch finished');
        return batch;
      }
      await control.checkCancelled();
      await sleep(pollMs);
    }
  }

  /** Vectors by content hash from the output file; the failures from the error file. */
  private async results(batch: Batch): Promise<{ vectors: Map<string, Float32Array>; failures: Map<string, string>; tokens: number }> {
    const { client, dimensions } = this.options;
    const vectors = new Map<string, Float32Array>();
    const failures = new Map<string, string>();
    let tokens = 0;
    if (batch.status === 'failed' && batch.output_file_id === null) {
      const reason = batch.errors?.data?.map((e) => `${e.code}: ${e.message}`).join('; ') ?? 'no reason given';
      throw new BackfillError('BACKFILL_SOURCE_UNAVAILABLE', `the Batch API batch ${batch.id} failed (${reason})`, { canRetry: false });
    }
    for (const line of batch.output_file_id ? await client.resultLines(batch.output_file_id) : []) {
      const hash = line.custom_id ?? '';
      const body = line.response?.body as { data?: { embedding?: unknown }[]; usage?: { total_tokens?: number } } | undefined;
      const embedding = line.response?.status_code === 200 ? body?.data?.[0]?.embedding : undefined;
      try {
        const vector = typeof embedding === 'string' ? decodeVector(embedding) : Array.isArray(embedding) ? Float32Array.from(embedding as number[]) : undefined;
        if (vector === undefined) throw new Error(`no embedding (status ${line.response?.status_code})`);
        checkVector(vector, dimensions);
        vectors.set(hash, vector);
        tokens += body?.usage?.total_tokens ?? 0;
      } catch (error) {
        failures.set(hash, errorMessage(error));
      }
    }
    for (const line of batch.error_file_id ? await client.resultLines(batch.error_file_id) : []) {
      failures.set(line.custom_id ?? '', line.error?.message ?? JSON.stringify(line.response?.body ?? null).slice(0, 300));
    }
    return { vectors, failures, tokens };
  }
}
