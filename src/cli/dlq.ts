/**
 * `indexer dlq list|show|retry|purge`: the dead-letter store for an operator. Retry puts each
 * dead letter back where the pipeline can judge it again (Kafka, the embed queue, the write queue),
 * and deletes an entry only after Redis or Kafka accepted what replaces it: a crash in between
 * leaves the entry, and a second retry of it is absorbed downstream (ingest and the item state drop
 * a change they hold already, the writer skips a version the sink holds), so nothing is lost and
 * nothing is paid for twice.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Message, Producer } from 'kafkajs';
import type { Config } from '../config/config.js';
import { isAfter } from '../core/change-order.js';
import { errorMessage } from '../core/errors.js';
import { DeadLetterStore, type DeadLetterFilter, type DeadLetterStage, type StoredDeadLetter } from '../deadletter/dead-letter-store.js';
import { InflightVectors } from '../embed/inflight-vectors.js';
import { offerChanges, type SizedChange } from '../ingest/ingest-consumer.js';
import { createKafka } from '../ingest/kafka.js';
import { createLogger } from '../observability/logger.js';
import { defaultJobOptions, floatsOf, EMBED_QUEUE, newJobId, WRITE_QUEUE, type EmbedJobData, type ItemWrite, type QueuedChange, type WriteJobData } from '../queue/jobs.js';
import { addWriteJob } from '../queue/write-jobs.js';
import { ItemStateStore } from '../state/item-state.js';
import { configOrExit, servingConfigOf, withRedis } from './context.js';

const STAGES: readonly DeadLetterStage[] = ['ingest', 'backfill', 'embed', 'write'];
const STREAM_ID = /^\d+-\d+$/;
/** Dead letters handled per round: each round's replacements are accepted before its entries are deleted. */
const ROUND = 500;

/** Which entries a retry or a purge is about: ids, filters, or everything (`all`) when nothing narrows it. */
export interface DeadLetterSelection {
  ids: string[];
  filter: DeadLetterFilter;
  all: boolean;
}

/** An entry left in the store, and why. */
export interface Refusal {
  id: string;
  stage: DeadLetterStage | undefined;
  why: string;
}

export interface StageCounts {
  /** Put back: re-produced, or queued. */
  retried: number;
  /** Deleted without being queued: the item state holds a newer change, or the sink holds this one. */
  superseded: number;
  /** Left in the store (see `refused`). */
  refused: number;
}

export interface RetryReport {
  stages: Record<DeadLetterStage, StageCounts>;
  refused: Refusal[];
  /** Ids asked for that the store does not hold. */
  missing: string[];
}

/** Refuses a selection that names nothing: a retry or a purge never takes every entry unasked. */
export function assertSelects(selection: DeadLetterSelection, command: string): void {
  const narrowed = selection.ids.length > 0 || selection.filter.stage !== undefined || selection.filter.code !== undefined;
  if (!narrowed && !selection.all) throw new InvalidArgumentError(`${command} needs dead-letter ids, --stage or --code, or --all`);
}

/**
 * The selected entries, a round at a time: those named by id (and matching the filters, when
 * given), or every entry matching the filters. Ids the store does not hold come back in `missing`.
 */
async function* selectedRounds(store: DeadLetterStore, selection: DeadLetterSelection): AsyncIterable<{ entries: StoredDeadLetter[]; missing: string[] }> {
  if (selection.ids.length === 0) {
    for await (const entries of store.pages(selection.filter, ROUND)) yield { entries, missing: [] };
    return;
  }
  for (let i = 0; i < selection.ids.length; i += ROUND) {
    const ids = selection.ids.slice(i, i + ROUND);
    const found = await Promise.all(ids.map((id) => store.get(id)));
    const entries = found.filter((e): e is StoredDeadLetter => e !== undefined && (selection.filter.stage === undefined || e.stage === selection.filter.stage) && (selection.filter.code === undefined || e.code === selection.filter.code));
    yield { entries, missing: ids.filter((_, k) => found[k] === undefined) };
  }
}

/** Deletes the selected entries; returns how many, and the ids the store did not hold. */
export async function purgeDeadLetters(store: DeadLetterStore, selection: DeadLetterSelection): Promise<{ purged: number; missing: string[] }> {
  assertSelects(selection, 'purge');
  let purged = 0;
  const missing: string[] = [];
  for await (const round of selectedRounds(store, selection)) {
    purged += await store.remove(round.entries.map((e) => e.id));
    missing.push(...round.missing);
  }
  return { purged, missing };
}

/**
 * Retries the selected dead letters of the deployment whose config is given (the serving
 * generation's, as the CLI uses), per stage:
 * - ingest: the original key and value are produced again to the topic they came from, so ingest
 *   judges the event again (after the event mapping was fixed, say);
 * - embed: the change is offered to the item state as ingest offers it, and queued for embedding
 *   when the state says so; a change the state holds a newer one of, or the sink holds already, is
 *   superseded and deleted;
 * - write: the write (its vector included) goes to the write queue as it is: written without
 *   buying its embedding again;
 * - backfill: left, to be retried by re-running the backfill (see refuseBackfillRow).
 * Entries whose original was cut when stored are left too: what is kept is not the whole input.
 */
export async function retryDeadLetters(config: Config, redis: Redis, selection: DeadLetterSelection): Promise<RetryReport> {
  assertSelects(selection, 'retry');
  const retrier = new DeadLetterRetrier(config, redis);
  try {
    const report: RetryReport = { stages: Object.fromEntries(STAGES.map((s) => [s, { retried: 0, superseded: 0, refused: 0 }])) as Record<DeadLetterStage, StageCounts>, refused: [], missing: [] };
    for await (const round of selectedRounds(retrier.store, selection)) {
      report.missing.push(...round.missing);
      await retrier.retryRound(round.entries, report);
    }
    return report;
  } finally {
    await retrier.close();
  }
}

/** Dead-lettered longer ago than this (by the time stored with it, or, failing that, its stream id). */
function olderThan(entry: StoredDeadLetter, ms: number): boolean {
  const at = Date.parse(entry.at) || Number(entry.id.split('-')[0]);
  return Number.isFinite(at) && Date.now() - at > ms;
}

class DeadLetterRetrier {
  readonly store: DeadLetterStore;
  private readonly embedQueue: Queue<EmbedJobData>;
  private readonly writeQueue: Queue<WriteJobData>;
  private readonly state: ItemStateStore;
  private readonly inflight: InflightVectors;
  private readonly jobOptions: ReturnType<typeof defaultJobOptions>;
  private producer: Producer | undefined;

  constructor(
    private readonly config: Config,
    redis: Redis,
  ) {
    const prefix = config.redis.prefix;
    this.store = new DeadLetterStore(redis, prefix);
    this.embedQueue = new Queue<EmbedJobData>(EMBED_QUEUE, { connection: redis, prefix });
    this.writeQueue = new Queue<WriteJobData>(WRITE_QUEUE, { connection: redis, prefix });
    this.state = new ItemStateStore(redis, prefix, config.redis.tombstoneRetentionSeconds);
    this.inflight = new InflightVectors(redis, prefix);
    this.jobOptions = defaultJobOptions(config.redis.jobAttempts, config.redis.jobBackoffMs);
  }

  async retryRound(entries: StoredDeadLetter[], report: RetryReport): Promise<void> {
    const byStage = new Map<DeadLetterStage, StoredDeadLetter[]>(STAGES.map((s) => [s, []]));
    const retentionMs = this.config.redis.tombstoneRetentionSeconds * 1000;
    for (const entry of entries) {
      if (olderThan(entry, retentionMs)) this.refuse(report, entry, `it was dead-lettered more than TOMBSTONE_RETENTION_SECONDS (${this.config.redis.tombstoneRetentionSeconds} s) ago: had its item been deleted since, the tombstone that would stop this old change is gone and the item would come back. Replay the item's latest event from its source (or run a backfill), then purge this entry`);
      else if (entry.truncated) this.refuse(report, entry, `its original was ${entry.originalBytes} bytes and only the first ${entry.original.length} are kept: it cannot be replayed; purge it, and send the input again from its source`);
      else if (!byStage.has(entry.stage)) this.refuse(report, entry, `unknown stage "${entry.stage}"`);
      else byStage.get(entry.stage)?.push(entry);
    }
    await this.reproduce(byStage.get('ingest') ?? [], report);
    await this.requeueChanges(byStage.get('embed') ?? [], report);
    await this.requeueWrites(byStage.get('write') ?? [], report);
    for (const entry of byStage.get('backfill') ?? []) this.refuse(report, entry, refuseBackfillRow(entry));
  }

  /** Ingest: the event goes back to its topic, key and value byte for byte. */
  private async reproduce(entries: StoredDeadLetter[], report: RetryReport): Promise<void> {
    const byTopic = new Map<string, { ids: string[]; messages: Message[] }>();
    for (const entry of entries) {
      const topic = topicOf(entry.source);
      if (topic === undefined) {
        this.refuse(report, entry, `its source "${entry.source ?? ''}" names no topic (expected topic/partition@offset)`);
        continue;
      }
      const group = byTopic.get(topic) ?? { ids: [], messages: [] };
      group.ids.push(entry.id);
      group.messages.push({ key: entry.key, value: entry.original });
      byTopic.set(topic, group);
    }
    for (const [topic, { ids, messages }] of byTopic) {
      await (await this.connectedProducer()).send({ topic, messages, acks: -1 });
      await this.store.remove(ids);
      report.stages.ingest.retried += ids.length;
    }
  }

  /**
   * Embed: offered to the item state as ingest offers a batch (one change per item: the newest;
   * two changes of an item offered together would both be queued). The changes the state keeps
   * are queued; the others are superseded. All are deleted once the jobs are in Redis.
   */
  private async requeueChanges(entries: StoredDeadLetter[], report: RetryReport): Promise<void> {
    const newest = new Map<string, { id: string; sized: SizedChange }>();
    const superseded: string[] = [];
    for (const entry of entries) {
      let change: QueuedChange;
      try {
        change = parseQueuedChange(entry.original);
      } catch (error) {
        this.refuse(report, entry, errorMessage(error));
        continue;
      }
      const held = newest.get(change.itemId);
      if (held !== undefined && !isAfter(change, held.sized.change)) {
        superseded.push(entry.id);
        continue;
      }
      if (held !== undefined) superseded.push(held.id);
      newest.set(change.itemId, { id: entry.id, sized: { change, bytes: entry.original.length } });
    }
    if (newest.size === 0) return;
    const prefix = this.config.redis.prefix;
    const offered = [...newest.values()];
    const { jobs, verdicts, dead } = await offerChanges(
      this.state,
      { jobPrefix: `${prefix}:${EMBED_QUEUE}:`, failedKey: `${prefix}:${EMBED_QUEUE}:failed` },
      offered.map((n) => n.sized),
      { maxItems: this.config.workers.embedJobMaxItems, maxBytes: this.config.workers.embedJobMaxBytes },
      { stage: 'ingest', mapping: this.config.events },
    );
    if (jobs.length > 0) await this.embedQueue.addBulk(jobs.map(({ jobId, changes }) => ({ name: 'dlq-retry', data: { changes }, opts: { ...this.jobOptions, jobId } })));
    // A change the state refuses (its item's versions come from another source) keeps its entry,
    // with the state's reason: a new letter for it would only repeat this one.
    const refusals = new Map(dead.map((letter) => [letter.itemId, letter.reason]));
    const settled = offered.filter((_, i) => typeof verdicts[i] === 'string');
    offered.forEach((n, i) => {
      if (typeof verdicts[i] !== 'string') this.refuse(report, entries.find((e) => e.id === n.id) as StoredDeadLetter, refusals.get(n.sized.change.itemId) ?? 'the item state refused the change');
    });
    await this.store.remove([...settled.map((n) => n.id), ...superseded]);
    const queued = verdicts.filter((v) => v === 'queue').length;
    report.stages.embed.retried += queued;
    report.stages.embed.superseded += settled.length - queued + superseded.length;
  }

  /**
   * Write: the writes as they are, vectors included, in write jobs of at most a request's worth
   * (what the embed stage makes). Announced as in flight first, as the embed stage does, so a
   * change needing the same text meanwhile takes the vector instead of buying it.
   */
  private async requeueWrites(entries: StoredDeadLetter[], report: RetryReport): Promise<void> {
    const parsed: { id: string; write: ItemWrite }[] = [];
    for (const entry of entries) {
      try {
        parsed.push({ id: entry.id, write: parseItemWrite(entry.original, this.config.embeddings.dimensions) });
      } catch (error) {
        this.refuse(report, entry, errorMessage(error));
      }
    }
    const per = this.config.embeddings.batchSize;
    for (let i = 0; i < parsed.length; i += per) {
      const slice = parsed.slice(i, i + per);
      const jobId = newJobId('w');
      const writes = slice.map(({ write }) => ({ ...write, heldBy: jobId }));
      await this.inflight.announce(writes, jobId);
      await addWriteJob(this.writeQueue, writes, { ...this.jobOptions, jobId });
      await this.store.remove(slice.map((p) => p.id));
      report.stages.write.retried += slice.length;
    }
  }

  private refuse(report: RetryReport, entry: StoredDeadLetter, why: string): void {
    report.refused.push({ id: entry.id, stage: entry.stage, why });
    const counts = report.stages[entry.stage];
    if (counts !== undefined) counts.refused += 1;
  }

  private async connectedProducer(): Promise<Producer> {
    if (this.producer === undefined) {
      const kafka = createKafka(this.config.kafka, createLogger(this.config.observability.logLevel));
      const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      this.producer = producer;
    }
    return this.producer;
  }

  async close(): Promise<void> {
    const closing = [this.embedQueue.close(), this.writeQueue.close(), ...(this.producer ? [this.producer.disconnect()] : [])];
    const failed = (await Promise.allSettled(closing)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}

/**
 * Backfill rows are not put back one by one: the row is read fresh from its source by running the
 * backfill again, and a re-run costs nothing for the rows the sink holds already (the item state
 * drops them unembedded). Re-producing a row to a live topic would mix a table's rows into
 * another system's change stream, and would lose what only the backfill knows (its source's
 * record timestamp, its priority below live work).
 */
function refuseBackfillRow(entry: StoredDeadLetter): string {
  const backfill = /^backfill:([^/]+)\//.exec(entry.source ?? '')?.[1];
  return `a backfill row is retried by running its backfill again${backfill ? ` (backfill ${backfill}; see \`indexer backfill status ${backfill}\` for its source)` : ''}: rows already written cost nothing; then purge it`;
}

/** `topic/partition@offset` → topic (a Kafka topic name cannot contain "/"). */
function topicOf(source: string | undefined): string | undefined {
  const match = /^(.+)\/\d+@\d+$/.exec(source ?? '');
  return match?.[1];
}

function parseJsonObject(original: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(original.toString('utf8'));
  } catch (error) {
    throw new Error(`its original is not the JSON of ${what}: ${errorMessage(error)}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`its original is not the JSON of ${what}`);
  return value as Record<string, unknown>;
}

function assertItem(body: Record<string, unknown>, ops: readonly string[], what: string): void {
  if (typeof body.itemId !== 'string' || body.itemId === '') throw new Error(`its original is not ${what}: no itemId`);
  if (typeof body.version !== 'number' || !Number.isFinite(body.version)) throw new Error(`its original is not ${what}: no version`);
  if (typeof body.op !== 'string' || !ops.includes(body.op)) throw new Error(`its original is not ${what}: op is ${JSON.stringify(body.op)}`);
}

/**
 * An embed dead letter's change, as it was queued, without its backfill: the backfill that read it
 * counted it failed already, and a retry is an operator's change, not the backfill's (it must not
 * hold a running backfill back, nor start bookkeeping for one long finished).
 */
export function parseQueuedChange(original: Buffer): QueuedChange {
  const body = parseJsonObject(original, 'a queued change');
  assertItem(body, ['upsert', 'delete'], 'a queued change');
  if (body.op === 'upsert' && typeof body.text !== 'string') throw new Error('its original is not a queued change: an upsert without text');
  const { backfill: _, ...change } = body as unknown as QueuedChange;
  return { ...change, metadata: change.metadata ?? {}, acceptedAt: typeof change.acceptedAt === 'number' ? change.acceptedAt : Date.now() };
}

/** A write dead letter's write, as it was queued; an upsert must still hold its vector. */
export function parseItemWrite(original: Buffer, dimensions?: number): ItemWrite {
  const body = parseJsonObject(original, 'a write');
  assertItem(body, ['upsert', 'delete', 'payload'], 'a write');
  if (body.op === 'upsert' && (typeof body.vector !== 'string' || typeof body.contentHash !== 'string')) {
    throw new Error('its original is an upsert without its vector or content hash: it cannot be written without embedding it again (retry the change through its source)');
  }
  // The letter holds the vector as base64; its slot was in the blob of the job it came from.
  const { vector, slot: _slot, ...write } = body as unknown as Omit<ItemWrite, 'vector'> & { vector?: string };
  if (typeof vector !== 'string') return { ...write, vector: undefined };
  const bytes = Buffer.from(vector, 'base64');
  if (bytes.byteLength === 0 || bytes.byteLength % 4 !== 0) throw new Error(`its vector is not base64 of float32 values (it decodes to ${bytes.byteLength} bytes)`);
  const floats = floatsOf(bytes);
  if (dimensions !== undefined && floats.length !== dimensions) throw new Error(`its vector has ${floats.length} dimensions, the configured model ${dimensions} (EMBEDDINGS_DIMENSIONS): retry it with the configuration it was embedded with, or replay the change from its source`);
  return { ...write, vector: floats };
}

/**
 * An entry whole, for `dlq show`: key and original as UTF-8 when they are text, base64 otherwise
 * (a cut original may end inside a character: that character is left out of the text).
 */
export function describeDeadLetter(entry: StoredDeadLetter): Record<string, unknown> {
  const original = asText(entry.original, entry.truncated);
  const key = entry.key === null ? undefined : asText(entry.key, false);
  return {
    id: entry.id,
    at: entry.at,
    stage: entry.stage,
    code: entry.code,
    reason: entry.reason,
    item_id: entry.itemId ?? null,
    source: entry.source ?? null,
    key: key?.value ?? null,
    key_encoding: key?.encoding ?? null,
    original: original.value,
    original_encoding: original.encoding,
    original_bytes: entry.originalBytes,
    truncated: entry.truncated,
  };
}

function asText(bytes: Buffer, mayEndInsideACharacter: boolean): { value: string; encoding: 'utf8' | 'base64' } {
  try {
    // `stream` holds back an incomplete character at the end instead of failing on it.
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: mayEndInsideACharacter });
    // Control characters other than whitespace: binary that happens to be valid UTF-8.
    if (!/[\u0000-\u0008\u000e-\u001f]/u.test(text)) return { value: text, encoding: 'utf8' };
  } catch {
    // not UTF-8
  }
  return { value: bytes.toString('base64'), encoding: 'base64' };
}

/** One line of `dlq list`: the entry with its original's first 500 characters. */
function listLine(e: StoredDeadLetter): string {
  return JSON.stringify({ id: e.id, at: e.at, stage: e.stage, code: e.code, reason: e.reason, item_id: e.itemId, source: e.source, original: e.original.toString('utf8').slice(0, 500), ...(e.truncated ? { truncated: true, original_bytes: e.originalBytes } : {}) });
}

/** What a retry did, per stage, in words. */
export function retrySummary(report: RetryReport): string[] {
  const lines = report.refused.map((r) => `refused ${r.id} (${r.stage ?? 'unknown stage'}): ${r.why}`);
  lines.push(...report.missing.map((id) => `no dead letter ${id}`));
  const said: Record<DeadLetterStage, (c: StageCounts) => string> = {
    ingest: (c) => `${c.retried} re-produced to Kafka`,
    embed: (c) => `${c.retried} queued for embedding, ${c.superseded} superseded (the item has a newer change, or the sink holds it)`,
    write: (c) => `${c.retried} queued for writing with their vectors (no embeddings bought)`,
    backfill: () => 're-run their backfill to retry them',
  };
  for (const stage of STAGES) {
    const c = report.stages[stage];
    if (c.retried + c.superseded + c.refused === 0) continue;
    lines.push(`${stage}: ${said[stage](c)}${c.refused > 0 ? `, ${c.refused} left in the store` : ''}`);
  }
  if (lines.length === 0) lines.push('no dead letters selected');
  return lines;
}

function streamId(value: string, previous: string[] = []): string[] {
  if (!STREAM_ID.test(value)) throw new InvalidArgumentError(`"${value}" is not a dead-letter id (like 1718000000000-0, from \`dlq list\`)`);
  return [...previous, value];
}

function selectionOf(ids: string[], opts: { stage?: DeadLetterStage; code?: string; all?: boolean }): DeadLetterSelection {
  for (const id of ids) streamId(id);
  return { ids, filter: { stage: opts.stage, code: opts.code }, all: opts.all ?? false };
}

const stageOption = () => new Option('--stage <stage>', 'only entries of this stage').choices(STAGES);
const codeOption = () => new Option('--code <code>', 'only entries with this error code (EVENT_INVALID, SINK_REJECTED, ...)');

/** A subcommand acting on a selection of entries (ids, --stage/--code, or --all; never none). */
function selectingCommand(dlq: Command, name: 'retry' | 'purge', description: string, act: (config: Config, selection: DeadLetterSelection) => Promise<void>): void {
  dlq
    .command(name)
    .description(description)
    .argument('[ids...]', 'dead-letter ids (from list)')
    .addOption(stageOption())
    .addOption(codeOption())
    .option('--all', 'every entry (narrowed by --stage and --code when given)')
    .action(async (ids: string[], opts: { stage?: DeadLetterStage; code?: string; all?: boolean }) => {
      const selection = selectionOf(ids, opts);
      assertSelects(selection, name);
      await act(await servingConfigOf(configOrExit()), selection);
    });
}

/** `indexer dlq list|show|retry|purge`, on the serving generation's store. */
export function dlqCommand(positiveInt: (value: string) => number): Command {
  const dlq = new Command('dlq').description('dead-letter store: the events and jobs that could not be indexed; list, show, retry or purge them');

  dlq
    .command('list')
    .description('the oldest entries, with the first 500 characters of each original')
    .option('--limit <n>', 'how many entries', positiveInt, 20)
    .addOption(stageOption())
    .addOption(codeOption())
    .action(async (opts: { limit: number; stage?: DeadLetterStage; code?: string }) => {
      const config = await servingConfigOf(configOrExit());
      await withRedis(config, async (redis) => {
        const store = new DeadLetterStore(redis, config.redis.prefix);
        const entries = await store.list(opts.limit, { stage: opts.stage, code: opts.code });
        process.stdout.write(`${await store.count()} dead letters\n`);
        for (const e of entries) process.stdout.write(`${listLine(e)}\n`);
      });
    });

  dlq
    .command('show')
    .description('one entry whole, as JSON: its original as UTF-8 when it is text, base64 otherwise')
    .argument('<id>', 'a dead-letter id (from list)', (v) => streamId(v)[0] as string)
    .action(async (id: string) => {
      const config = await servingConfigOf(configOrExit());
      await withRedis(config, async (redis) => {
        const entry = await new DeadLetterStore(redis, config.redis.prefix).get(id);
        if (entry === undefined) {
          process.stderr.write(`no dead letter ${id}\n`);
          process.exitCode = 1;
          return;
        }
        process.stdout.write(`${JSON.stringify(describeDeadLetter(entry), null, 2)}\n`);
      });
    });

  selectingCommand(dlq, 'retry', 'put entries back into the pipeline (ingest: re-produced to their topic; embed: queued for embedding; write: queued for writing with their vectors); each is deleted once that was accepted. Exits 1 when some were left (truncated, backfill rows, too old, unknown ids)', async (config, selection) => {
    const report = await withRedis(config, (redis) => retryDeadLetters(config, redis, selection));
    for (const line of retrySummary(report)) process.stdout.write(`${line}\n`);
    if (report.refused.length > 0 || report.missing.length > 0) process.exitCode = 1;
  });

  selectingCommand(dlq, 'purge', 'delete entries: by id, by --stage and --code, or --all; never everything unasked', async (config, selection) => {
    const { purged, missing } = await withRedis(config, (redis) => purgeDeadLetters(new DeadLetterStore(redis, config.redis.prefix), selection));
    for (const id of missing) process.stdout.write(`no dead letter ${id}\n`);
    process.stdout.write(`purged ${purged} dead letters\n`);
    if (missing.length > 0) process.exitCode = 1;
  });

  return dlq;
}
