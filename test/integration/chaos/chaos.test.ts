/**
 * Issue 10's chaos test: a few thousand change events with a known final state, produced in
 * bursts, indexed by two real worker processes (all roles) while, spread over the run and partly
 * overlapping:
 *   - one worker is SIGKILLed every few seconds and restarted at once;
 *   - the workers' Redis (a private redis-server with AOF) is killed and started again on the
 *     same port and directory;
 *   - the sink (the Qdrant contract server, in process) refuses connections for 30 s;
 *   - the embeddings API answers 503 to every request for 30 s.
 * Then: the sink holds exactly the newest state of every item (no lost update, no stale vector,
 * no resurrected delete), the dead-letter store holds exactly the malformed events, and nothing
 * was paid for twice beyond the batches in flight when a process died: in total (at most a batch
 * per fault), and purchase by purchase (each text bought again follows an earlier purchase of it
 * that a fault lost).
 *
 * Reproduce a stream with CHAOS_SEED=<n> (the seed is printed). CHAOS_LOG_DIR=<dir> keeps every
 * worker's log, the figures, every embeddings request and the stream there (nothing is written
 * otherwise); CHAOS_LOG_LEVEL sets the workers' LOG_LEVEL (info by default).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { Message } from 'kafkajs';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { isAfter } from '../../../src/core/change-order.js';
import { DeadLetterStore, type StoredDeadLetter } from '../../../src/deadletter/dead-letter-store.js';
import { contentHash } from '../../../src/embed/content-hash.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { ROLES } from '../../../src/pipeline/pipeline.js';
import { EMBED_QUEUE, WRITE_QUEUE } from '../../../src/queue/jobs.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import type { StoredRecord, VectorSink } from '../../../src/sinks/vector-sink.js';
import { EmbeddingsStub, stubVector } from '../../support/embeddings-stub.js';
import { deletePrefix, services, testKafka, waitFor } from '../../support/helpers.js';
import { OutageFront, type FrontRequest } from '../../support/outage-front.js';
import { isolatedWorkerEnv, spawnWorker, type WorkerProcess } from '../../support/processes.js';
import { QdrantContractServer } from '../../support/qdrant-contract/contract-server.js';
import { RedisServer } from '../../support/redis-server.js';
import { eventValue, expectedState, type ScriptedEvent } from '../../support/stream.js';

const SEED = Number(process.env.CHAOS_SEED ?? 20261120);
const ITEMS = 300;
const MALFORMED_COUNT = 20;
const TOTAL_EVENTS = 3000;
const PARTITIONS = 4;
const WORKERS = 2;
const DIMENSIONS = 8;
const MODEL = 'stub-embedding';
/**
 * Small, so that the paid-twice bound below means something. With EMBED_CONCURRENCY=1 and
 * EMBED_JOB_MAX_ITEMS=BATCH_SIZE a worker holds one embed job of at most BATCH_SIZE changes, so
 * it has at most one embeddings request of at most BATCH_SIZE inputs in flight.
 */
const BATCH_SIZE = 16;

/**
 * The fault schedule, in seconds after both workers run. The stub answers in 0.6-1 s, so that
 * every fault meets work in flight (the timeline printed at the end shows it). Kills pause during
 * most of the sink outage: a worker started while the sink is unreachable exits ("could not
 * start", exit code 1, restarted a second later by the supervisor below), so after two kills in
 * the outage no worker would run at all, and the Redis restart in it would meet an idle pipeline.
 * One kill lands in the outage; the other worker (not killed within 5 s before it: a worker still
 * starting when the sink goes away exits too) runs through it.
 */
const SCHEDULE = {
  bursts: [
    { at: 0, share: 0.4 },
    { at: 45, share: 0.15 },
    { at: 55, share: 0.15 },
    { at: 65, share: 0.15 },
    { at: 78, share: 0.15 },
  ],
  killWaves: [
    [4, 54],
    [64, 64],
    [94, 114],
  ] as const,
  killEvery: 5,
  embeddingsDown: [15, 45] as const,
  sinkDown: [60, 90] as const,
  redisRestartAt: 72,
  /** How long the private Redis stays down before it is started again. */
  redisDownFor: 3,
};
const STUB_LATENCY_MS = 600;
const STUB_LATENCY_JITTER_MS = 400;
/** Once the last fault is over, how long the pipeline may take to converge. */
const CONVERGE_TIMEOUT_MS = 120_000;

// ---------------------------------------------------------------------------------------------
// The stream: a known final state, with duplicates, out-of-order versions, deletes, reverts
// (A -> B -> A), equal-version delete/upsert pairs, and a known set of malformed events.
// ---------------------------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so that a failing stream can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ['waterproof', 'trail', 'running', 'shoe', 'rock plate', 'gusseted tongue', 'merino', 'wool', 'sock', 'lightweight', 'shell', 'jacket', 'down', 'insulated', 'vest', 'carbon', 'pole', 'headlamp', 'rechargeable', 'tent', 'two-person', 'ultralight', 'stove', 'titanium', 'mug'];

interface Produced {
  key: string | null;
  value: string;
  /** Set for the malformed events. */
  malformed?: string;
  event?: ScriptedEvent;
}

interface Stream {
  /** In production order, malformed events among them. */
  messages: Produced[];
  /** The valid events (what the final state is computed from). */
  events: ScriptedEvent[];
  malformed: Produced[];
  figures: { deletes: number; reverts: number; metadataOnly: number; equalVersionPairs: number; swapped: number; duplicates: number; finallyDeleted: number };
}

function generateStream(seed: number): Stream {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const figures = { deletes: 0, reverts: 0, metadataOnly: 0, equalVersionPairs: 0, swapped: 0, duplicates: 0, finallyDeleted: 0 };
  const perItem: ScriptedEvent[][] = [];
  for (let i = 0; i < ITEMS; i++) {
    const id = `chaos-${String(i).padStart(3, '0')}`;
    const history: ScriptedEvent[] = [];
    const texts: string[] = [];
    let version = 0;
    let live = false;
    let text = '';
    let revision = 0;
    const newText = () => `${id} rev ${++revision}: ${Array.from({ length: 3 + Math.floor(rand() * 6) }, () => pick(WORDS)).join(' ')}`;
    const metadata = (step: number) => ({ category: `cat-${i % 7}`, price: Math.round(rand() * 20000) / 100, rev: step });
    const steps = 5 + Math.floor(rand() * 8);
    for (let step = 0; step < steps; step++) {
      version += 1 + (rand() < 0.2 ? Math.floor(rand() * 3) : 0);
      const r = rand();
      if (live && step > 0 && r < 0.1) {
        history.push({ id, op: 'delete', version });
        figures.deletes++;
        live = false;
        continue;
      }
      if (!live) {
        // Created, or re-created after a delete: with a new text or the one it had.
        text = text !== '' && rand() < 0.5 ? text : newText();
      } else if (r < 0.25 && texts.length >= 2 && texts[texts.length - 2] !== text) {
        text = texts[texts.length - 2] as string; // A -> B -> A
        figures.reverts++;
      } else if (r < 0.5) {
        figures.metadataOnly++; // the same text, new metadata
      } else {
        text = newText();
      }
      if (texts[texts.length - 1] !== text) texts.push(text);
      const upsert: ScriptedEvent = { id, op: 'upsert', version, text, metadata: metadata(step) };
      live = true;
      if (rand() < 0.04) {
        // A delete at the same version: the delete wins, in whichever order the two arrive.
        const del: ScriptedEvent = { id, op: 'delete', version };
        history.push(...(rand() < 0.5 ? [upsert, del] : [del, upsert]));
        figures.equalVersionPairs++;
        live = false;
      } else {
        history.push(upsert);
      }
    }
    if (live && rand() < 0.15) {
      history.push({ id, op: 'delete', version: version + 1 });
      figures.deletes++;
    }
    // Out of order: neighbours swapped (an older version produced after a newer one).
    for (let j = 0; j + 1 < history.length; j++) {
      if (rand() < 0.12) {
        [history[j], history[j + 1]] = [history[j + 1] as ScriptedEvent, history[j] as ScriptedEvent];
        figures.swapped++;
        j++;
      }
    }
    perItem.push(history);
  }
  // Duplicates: a copy of one of an item's events, later in its sequence (up to after its last
  // event: a stale upsert replayed after a delete must not resurrect the item), until the stream
  // holds TOTAL_EVENTS events with the malformed ones.
  let count = perItem.reduce((n, h) => n + h.length, 0);
  if (count > TOTAL_EVENTS - MALFORMED_COUNT) throw new Error(`the generator made ${count} events, over ${TOTAL_EVENTS - MALFORMED_COUNT}`);
  while (count < TOTAL_EVENTS - MALFORMED_COUNT) {
    const history = pick(perItem);
    const from = Math.floor(rand() * history.length);
    const at = from + 1 + Math.floor(rand() * (history.length - from));
    history.splice(at, 0, { ...(history[from] as ScriptedEvent) });
    figures.duplicates++;
    count++;
  }
  // Interleave the items, each keeping its own order (they share a key, hence a partition).
  const cursors = perItem.map(() => 0);
  const pending = perItem.map((_, i) => i);
  const messages: Produced[] = [];
  let remaining = count;
  while (remaining > 0) {
    // Weighted by what each item has left, so every item's events spread over the whole stream.
    let r = Math.floor(rand() * remaining);
    let k = 0;
    for (; k < pending.length; k++) {
      const i = pending[k] as number;
      const left = (perItem[i] as ScriptedEvent[]).length - (cursors[i] as number);
      if (r < left) break;
      r -= left;
    }
    const i = pending[k] as number;
    const event = (perItem[i] as ScriptedEvent[])[cursors[i] as number] as ScriptedEvent;
    cursors[i] = (cursors[i] as number) + 1;
    if (cursors[i] === (perItem[i] as ScriptedEvent[]).length) pending.splice(k, 1);
    messages.push({ key: event.id, value: eventValue(event), event });
    remaining--;
  }
  const events = messages.map((m) => m.event as ScriptedEvent);
  const state = expectedState(events);
  figures.finallyDeleted = ITEMS - state.size;

  // The malformed events: clearly invalid, each byte-unique. Some carry a real item's id (and
  // key): they must change nothing about that item. None relies on updated_at.
  const realId = (n: number) => `chaos-${String((n * 37) % ITEMS).padStart(3, '0')}`;
  const malformed: Produced[] = [
    { key: null, value: '{"id": "chaos-bad-1", "op": "upsert", "version": 1, "text": "unterminated', malformed: 'bad JSON' },
    { key: null, value: 'not JSON at all #2', malformed: 'bad JSON' },
    { key: null, value: '{"id":"chaos-bad-3","version":3,}', malformed: 'bad JSON' },
    { key: null, value: '[1, 2, #4', malformed: 'bad JSON' },
    { key: realId(5), value: `{"id":"${realId(5)}","version":5,"text":"bad escape \\q #5"}`, malformed: 'bad JSON' },
    { key: null, value: '{"op":"upsert","version":1,"text":"no id and no key #6","metadata":{}}', malformed: 'missing id' },
    { key: null, value: '{"op":"delete","version":7}', malformed: 'missing id' },
    { key: null, value: '{"id":null,"version":8,"text":"a null id #8"}', malformed: 'missing id' },
    { key: null, value: '{"id":"","version":9,"text":"an empty id #9"}', malformed: 'missing id' },
    { key: realId(10), value: `{"id":"${realId(10)}","op":"upsert","version":"seven","text":"a word for a version #10","metadata":{}}`, malformed: 'wrong version type' },
    { key: realId(11), value: `{"id":"${realId(11)}","op":"upsert","version":1.5,"text":"a fractional version #11","metadata":{}}`, malformed: 'wrong version type' },
    { key: realId(12), value: `{"id":"${realId(12)}","op":"delete","version":-3}`, malformed: 'wrong version type' },
    { key: realId(13), value: `{"id":"${realId(13)}","op":"upsert","version":true,"text":"a boolean version #13"}`, malformed: 'wrong version type' },
    { key: realId(14), value: `{"id":"${realId(14)}","op":"delete","version":{"n":14}}`, malformed: 'wrong version type' },
    { key: realId(15), value: `{"id":"${realId(15)}","op":"merge","version":1000,"text":"an unknown op #15"}`, malformed: 'invalid op' },
    { key: realId(16), value: `{"id":"${realId(16)}","op":"DELETE","version":1000}`, malformed: 'invalid op' },
    { key: realId(17), value: `{"id":"${realId(17)}","op":"upsert","version":1000,"metadata":{"note":"no text #17"}}`, malformed: 'missing text' },
    { key: realId(18), value: `{"id":"${realId(18)}","op":"upsert","version":1000,"text":18}`, malformed: 'text not a string' },
    { key: realId(19), value: `{"id":"${realId(19)}","op":"upsert","version":1000,"text":"metadata is a list #19","metadata":[1,2]}`, malformed: 'metadata not an object' },
    { key: realId(20), value: `{"id":"${realId(21)}","op":"upsert","version":1000,"text":"key and id differ #20"}`, malformed: 'key differs from id' },
  ];
  if (malformed.length !== MALFORMED_COUNT || new Set(malformed.map((m) => m.value)).size !== MALFORMED_COUNT) throw new Error('the malformed events must be MALFORMED_COUNT distinct values');
  for (const m of malformed) messages.splice(Math.floor(rand() * (messages.length + 1)), 0, m);
  return { messages, events, malformed, figures };
}

/**
 * How many times a fault-free pipeline may legitimately buy each text: once per run of that text
 * in the item's history in version order (a run ends when another text, or a delete, takes the
 * item's place in the sink: A -> B -> A may buy A twice). Texts carry their item's id, so no two
 * items share one.
 */
function purchasesNeeded(events: ScriptedEvent[]): Map<string, number> {
  const byItem = new Map<string, ScriptedEvent[]>();
  for (const e of events) byItem.set(e.id, [...(byItem.get(e.id) ?? []), e]);
  const needed = new Map<string, number>();
  for (const history of byItem.values()) {
    const ordered = [...history].sort((a, b) => (isAfter(a, b) ? 1 : isAfter(b, a) ? -1 : 0));
    let held: string | undefined;
    for (const e of ordered) {
      if (e.op === 'delete') held = undefined;
      else if (e.text !== held) {
        needed.set(e.text as string, (needed.get(e.text as string) ?? 0) + 1);
        held = e.text;
      }
    }
  }
  return needed;
}

interface Comparison {
  lost: string[];
  stale: string[];
  resurrected: string[];
  first: string | undefined;
}

/**
 * The sink against the expected state, item by item: `lost` (a live item missing), `stale` (held
 * at another version, or with another text's hash or vector, another model or other metadata),
 * `resurrected` (a deleted item, or one no valid event created, still held).
 */
async function compareSink(sink: VectorSink, events: ScriptedEvent[]): Promise<Comparison> {
  const expected = expectedState(events);
  const held = new Map<string, StoredRecord>();
  for await (const record of sink.scan({ withVectors: true })) held.set(record.itemId, record);
  const result: Comparison = { lost: [], stale: [], resurrected: [], first: undefined };
  const note = (list: string[], id: string, why: string) => {
    list.push(id);
    result.first ??= `${id}: ${why}`;
  };
  for (const [id, want] of expected) {
    const got = held.get(id);
    if (!got) {
      note(result.lost, id, `missing, want version ${want.version}`);
      continue;
    }
    const p = got.payload;
    const vector = stubVector(want.text, DIMENSIONS, MODEL);
    if (p.version !== want.version) note(result.stale, id, `at version ${String(p.version)}, want ${want.version}`);
    else if (p.content_hash !== contentHash(want.text, MODEL, DIMENSIONS)) note(result.stale, id, `holds the hash of another text (version ${want.version})`);
    else if (p.model !== MODEL) note(result.stale, id, `model ${String(p.model)}, want ${MODEL}`);
    else if (Object.entries(want.metadata).some(([k, v]) => JSON.stringify(p[k]) !== JSON.stringify(v))) note(result.stale, id, `metadata ${JSON.stringify(p)}, want ${JSON.stringify(want.metadata)}`);
    else if (!got.vector || got.vector.length !== DIMENSIONS || got.vector.some((x, i) => Math.abs(x - (vector[i] as number)) > 1e-5)) note(result.stale, id, 'vector differs from its text\'s');
  }
  for (const [id, got] of held) if (!expected.has(id)) note(result.resurrected, id, `should be absent, held at version ${String(got.payload.version)}`);
  return result;
}

const converged = (c: Comparison) => c.lost.length === 0 && c.stale.length === 0 && c.resurrected.length === 0;

// ---------------------------------------------------------------------------------------------

describe('chaos', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch((error: unknown) => console.error('cleanup failed:', error));
  });

  it(
    'converges to the known final state through worker kills, a Redis restart, a sink outage and an embeddings outage',
    async () => {
      const stream = generateStream(SEED);
      const { kafkaBrokers } = services();

      // The workers' Redis: a private redis-server (the shared one on 6379 must not be restarted:
      // other test files use it in parallel), with AOF and `appendfsync always`. Why always: with
      // `everysec`, Redis 7.0 (Debian's) acknowledges a write before it is on disk, so a crash may
      // lose up to a second of writes the indexer already acted on (jobs added, then the Kafka
      // offset committed; a write recorded in the item state); the indexer cannot wait for the
      // fsync itself without WAITAOF, which came in 7.2. (A SIGKILL of redis-server alone, as
      // below, loses nothing either way: the AOF is written before the reply, and the kernel keeps
      // it; `always` is what a deployment needs for a host crash, and what the test runs with.)
      const redisServer = new RedisServer({ appendonly: 'yes', appendfsync: 'always' });
      let prefix: string | undefined;
      cleanups.push(async () => {
        if (prefix !== undefined) await deletePrefix(redisServer.url, prefix).catch(() => undefined);
        await redisServer.remove();
      });
      const redisUrl = await redisServer.start();

      // The sink: the Qdrant contract server, in process; stop() and start(port) keep its collections.
      const contract = new QdrantContractServer();
      cleanups.push(() => contract.stop());
      const qdrantUrl = await contract.start();
      const qdrantPort = Number(new URL(qdrantUrl).port);

      // The Kafka consumer group is deleted after the workers are gone (cleanups run in reverse).
      let groupId: string | undefined;
      cleanups.push(async () => {
        if (groupId === undefined) return;
        const admin = testKafka([kafkaBrokers]).admin();
        await admin.connect();
        try {
          // Refused while the killed workers' members are still in it (until their sessions time out).
          const gone = (error: unknown) => ((error as { groups?: { error?: { type?: string } }[] }).groups ?? []).every((g) => g.error?.type === 'GROUP_ID_NOT_FOUND');
          await waitFor(`the consumer group ${groupId} deleted`, () => admin.deleteGroups([groupId as string]).then(() => true, (error: unknown) => {
            if (gone(error)) return true;
            throw error;
          }), { timeoutMs: 45_000, intervalMs: 1000 });
        } finally {
          await admin.disconnect();
        }
      });

      const stub = new EmbeddingsStub({ dimensions: DIMENSIONS, latencyMs: STUB_LATENCY_MS, latencyJitterMs: STUB_LATENCY_JITTER_MS });
      const front = new OutageFront();
      cleanups.push(() => front.stop());
      const { env, workers } = await isolatedWorkerEnv(
        stub,
        {
          REDIS_URL: redisUrl,
          SINK: 'qdrant',
          QDRANT_URL: qdrantUrl,
          // The write lease is twice this: an item leased by a killed writer is free 10 s later.
          QDRANT_TIMEOUT_MS: '5000',
          EMBEDDINGS_BATCH_SIZE: String(BATCH_SIZE),
          EMBED_JOB_MAX_ITEMS: String(BATCH_SIZE),
          EMBED_CONCURRENCY: '1',
          EMBEDDINGS_TIMEOUT_MS: '10000',
          EMBEDDINGS_BREAKER_COOLDOWN_MS: '5000',
          // A killed worker's jobs are taken over 5 s later (30 s by default).
          JOB_LOCK_MS: '5000',
          EMBED_BATCH_LINGER_MS: '20',
          WRITE_BATCH_LINGER_MS: '20',
          LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'info',
          // A SIGKILLed worker never leaves the Kafka group: its partitions (and, through the
          // rebalance, the whole group's) wait until its session times out. At the default 30 s,
          // kills every 5 s would hold ingest for the whole run; 6 s is the brokers' minimum.
          KAFKA_SESSION_TIMEOUT_MS: '6000',
        },
        cleanups,
      );
      // The workers reach the stub through the front, which answers 503 while the API is "down".
      env.EMBEDDINGS_BASE_URL = await front.start(env.EMBEDDINGS_BASE_URL as string);
      prefix = env.QUEUE_PREFIX as string;
      groupId = env.KAFKA_GROUP_ID as string;
      const topic = env.KAFKA_TOPICS as string;
      const config = loadConfig(env);
      await ensureTopic(createKafka(config.kafka, silentLogger), topic, PARTITIONS);

      const redis = new Redis(redisUrl, { maxRetriesPerRequest: null });
      // Refused connections while the private Redis is down are expected: not printed.
      redis.on('error', () => undefined);
      const sink = createSink(config.sink, DIMENSIONS);
      const queues = [new Queue(EMBED_QUEUE, { connection: redis, prefix }), new Queue(WRITE_QUEUE, { connection: redis, prefix })];
      for (const q of queues) q.on('error', () => undefined);
      cleanups.push(async () => {
        await Promise.all(queues.map((q) => q.close()));
        await sink.close();
        redis.disconnect();
      });
      const deadLetters = new DeadLetterStore(redis, prefix);

      // ---- the workers, a supervisor that restarts any that exits, and the killer ----
      let stopping = false;
      cleanups.push(async () => {
        stopping = true;
      });
      const slots: { worker: WorkerProcess; killed: boolean }[] = [];
      // Each worker process has an API key of its own, so that every embeddings request names its
      // buyer (the stub checks no key); and when each one started and ended.
      const lives = new Map<string, { index: number; startedAt: number; endedAt: number | undefined; killed: boolean }>();
      const unexpectedExits: { slot: number; code: number | null; signal: string | null; at: number; tail: string }[] = [];
      let t0 = Date.now();
      const now = () => (Date.now() - t0) / 1000;
      const launch = (slot: number) => {
        const index = workers.length;
        const worker = spawnWorker(ROLES.join(','), { ...env, EMBEDDINGS_API_KEY: `sk-chaos-worker-${index}` });
        workers.push(worker);
        const entry = { worker, killed: false };
        slots[slot] = entry;
        const life = { index, startedAt: Date.now(), endedAt: undefined as number | undefined, killed: false };
        lives.set(`Bearer sk-chaos-worker-${index}`, life);
        void worker.exited.then(({ code, signal }) => {
          life.endedAt = Date.now();
          life.killed = entry.killed;
          if (stopping || entry.killed || slots[slot] !== entry) return;
          // Not ours: as an orchestrator would, start it again (after a second).
          unexpectedExits.push({ slot, code, signal, at: now(), tail: worker.output().slice(-3000) });
          setTimeout(() => {
            if (!stopping && slots[slot] === entry) launch(slot);
          }, 1000);
        });
      };
      for (let slot = 0; slot < WORKERS; slot++) launch(slot);
      // The clock starts once both workers run (a worker that cannot start at all fails here, not
      // after four minutes of restarts).
      try {
        await waitFor('both workers running', () => {
          // Not thrown inside the check (waitFor would retry until its deadline): seen after it.
          if (unexpectedExits.length > 0) return 'exited';
          return slots.every((e) => e.worker.output().includes('"msg":"running"')) ? 'running' : undefined;
        }, { timeoutMs: 60_000, intervalMs: 200 }).then((outcome) => {
          if (outcome === 'exited') throw new Error(`a worker exited while starting (code ${unexpectedExits[0]?.code}):\n${unexpectedExits[0]?.tail}`);
        });
      } catch (error) {
        stopping = true;
        throw error;
      }
      t0 = Date.now();

      let kills = 0;
      let redisRestarts = 0;
      let redisDown = false;
      const redisOutage = { from: Number.POSITIVE_INFINITY, to: Number.NEGATIVE_INFINITY };
      const killTimes: number[] = [];
      const faultEnds: number[] = [];
      const at = (seconds: number) => sleep(Math.max(0, t0 + seconds * 1000 - Date.now()));

      const produceBurst = async (messages: Produced[]) => {
        const producer = testKafka([kafkaBrokers]).producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
        await producer.connect();
        try {
          for (let i = 0; i < messages.length; i += 500) {
            await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 500).map((m): Message => ({ key: m.key, value: m.value })) });
          }
        } finally {
          await producer.disconnect();
        }
      };
      const bursts: Produced[][] = [];
      let from = 0;
      SCHEDULE.bursts.forEach(({ share }, i) => {
        const to = i === SCHEDULE.bursts.length - 1 ? stream.messages.length : from + Math.round(share * stream.messages.length);
        bursts.push(stream.messages.slice(from, to));
        from = to;
      });

      const producing = (async () => {
        for (const [i, burst] of bursts.entries()) {
          await at((SCHEDULE.bursts[i] as { at: number }).at);
          await produceBurst(burst);
        }
      })();
      const killing = (async () => {
        let slot = 0;
        const times = SCHEDULE.killWaves.flatMap(([first, last]) => Array.from({ length: Math.floor((last - first) / SCHEDULE.killEvery) + 1 }, (_, k) => first + k * SCHEDULE.killEvery));
        for (const t of times) {
          await at(t);
          const entry = slots[slot] as { worker: WorkerProcess; killed: boolean };
          // A worker the supervisor is about to restart is not killed again.
          if (entry.worker.child.exitCode === null && entry.worker.child.signalCode === null) {
            entry.killed = true;
            entry.worker.child.kill('SIGKILL');
            await entry.worker.exited;
            launch(slot);
            kills++;
            killTimes.push(Number(now().toFixed(1)));
          }
          slot = (slot + 1) % WORKERS;
        }
        faultEnds.push(now());
      })();
      const embeddingsOutage = (async () => {
        await at(SCHEDULE.embeddingsDown[0]);
        front.down = true;
        await at(SCHEDULE.embeddingsDown[1]);
        front.down = false;
        faultEnds.push(now());
      })();
      const sinkOutage = (async () => {
        await at(SCHEDULE.sinkDown[0]);
        await contract.stop();
        await at(SCHEDULE.sinkDown[1]);
        await contract.start(qdrantPort);
        faultEnds.push(now());
      })();
      const redisRestart = (async () => {
        await at(SCHEDULE.redisRestartAt);
        // SIGKILL, not SIGTERM: no shutdown save, no goodbye to clients; what the AOF holds is all there is.
        const info = await redis.info('server');
        const pid = Number(/process_id:(\d+)/.exec(info)?.[1]);
        process.kill(pid, 'SIGKILL');
        redisOutage.from = Date.now();
        redisDown = true;
        await redisServer.stop(); // waits for the exit of the killed process
        await sleep(SCHEDULE.redisDownFor * 1000);
        await redisServer.start();
        redisOutage.to = Date.now();
        redisDown = false;
        redisRestarts++;
        faultEnds.push(now());
      })();
      // What the pipeline was doing through the faults, every 3 s: inputs bought, jobs queued.
      const timeline: string[] = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const counts = await Promise.race([
            Promise.all(queues.map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'prioritized'))).then((cs) => cs.map((c) => `${(c.waiting ?? 0) + (c.prioritized ?? 0)}w/${c.active ?? 0}a/${c.delayed ?? 0}d`).join(' ')),
            sleep(1000).then(() => 'redis n/a'),
          ]).catch(() => 'redis n/a');
          const inputs = stub.served.reduce((n, r) => n + r.inputs.length, 0);
          const up = slots.filter((e) => e.worker.child.exitCode === null && e.worker.child.signalCode === null).length;
          const faults = [front.down ? 'EMB-DOWN' : '', now() >= SCHEDULE.sinkDown[0] && now() < SCHEDULE.sinkDown[1] ? 'SINK-DOWN' : '', redisDown ? 'REDIS-DOWN' : ''].filter(Boolean).join(',');
          timeline.push(`t=${now().toFixed(0).padStart(3)}s inputs=${String(inputs).padStart(4)} refused=${String(front.refused).padStart(3)} kills=${String(kills).padStart(2)} up=${up} embed/write=${counts} ${faults}`);
          await sleep(3000);
        }
      })();
      await Promise.all([producing, killing, embeddingsOutage, sinkOutage, redisRestart]);
      const lastFaultAt = Math.max(...faultEnds);
      const sinkOutageSeconds = SCHEDULE.sinkDown[1] - SCHEDULE.sinkDown[0];
      const embeddingsOutageSeconds = SCHEDULE.embeddingsDown[1] - SCHEDULE.embeddingsDown[0];

      // ---- convergence ----
      const malformedValues = new Set(stream.malformed.map((m) => m.value));
      let comparison: Comparison | undefined;
      let letters: StoredDeadLetter[] = [];
      let convergedAt: number | undefined;
      let failure: unknown;
      try {
        await waitFor(
          'the sink to hold the expected state and the dead-letter store every malformed event',
          async () => {
            comparison = await compareSink(sink, stream.events);
            letters = await deadLetters.list(10_000);
            const lettered = new Set(letters.map((l) => l.original.toString('utf8')));
            const missingLetters = [...malformedValues].filter((v) => !lettered.has(v)).length;
            if (converged(comparison) && missingLetters === 0) return true;
            // Thrown, not returned: waitFor reports the last error when the deadline passes.
            throw new Error(`lost ${comparison.lost.length}, stale ${comparison.stale.length}, resurrected ${comparison.resurrected.length} (first: ${comparison.first}); ${missingLetters} malformed events not dead-lettered`);
          },
          { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 1000 },
        );
        convergedAt = now();
        // Quiet: no job left to run, so what was bought is all that will be.
        await waitFor(
          'the embed and write queues to drain',
          async () => {
            const counts = await Promise.all(queues.map((q) => q.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children')));
            return counts.every((c) => Object.values(c).every((n) => n === 0));
          },
          { timeoutMs: 30_000, intervalMs: 500 },
        );
        comparison = await compareSink(sink, stream.events);
        letters = await deadLetters.list(10_000);
      } catch (error) {
        failure = error;
      }
      sampling = false;
      await sampler;

      // ---- what was paid twice ----
      // Each text may be bought once per run in its item's history (purchasesNeeded); anything
      // beyond is a text bought again. A fault-free pipeline buys nothing twice: vectors wait in
      // write jobs until written (a sink outage re-buys nothing), redelivered and duplicated changes
      // find their vector in flight or in the sink, and a failed embeddings request is not paid.
      // What a fault may cost: a worker SIGKILLed holds at most one embeddings request (one embed
      // job of at most BATCH_SIZE changes, EMBED_CONCURRENCY=1), whose answer may be paid and lost
      // before its write job is queued: that job is run again and its texts bought again. A Redis
      // restart may cost each running worker the same (its job's lock lapses while Redis is away,
      // and another worker runs it again); so may a worker that exits on its own (counted).
      const needed = purchasesNeeded(stream.events);
      const servedPerText = new Map<string, number>();
      for (const request of stub.served) for (const text of request.inputs) servedPerText.set(text, (servedPerText.get(text) ?? 0) + 1);
      let excess = 0;
      const boughtTwice: string[] = [];
      for (const [text, n] of servedPerText) {
        const over = n - (needed.get(text) ?? 0);
        if (over > 0) {
          excess += over;
          boughtTwice.push(`${JSON.stringify(text)} x${n} (needed ${needed.get(text) ?? 0})`);
        }
      }
      // When the texts bought beyond need were bought (s after the start, inputs): to set beside
      // the kill times and the Redis restart.
      const boughtAt = new Map<string, number[]>();
      const excessAt: string[] = [];
      const seconds = (ms: number) => ((ms - t0) / 1000).toFixed(1);
      for (const request of [...stub.served].sort((a, b) => a.at - b.at)) {
        const earlier = new Set<string>();
        let over = 0;
        for (const text of request.inputs) {
          const times = boughtAt.get(text) ?? [];
          if (times.length >= (needed.get(text) ?? 0)) {
            over++;
            for (const t of times) earlier.add(seconds(t));
          }
          boughtAt.set(text, [...times, request.at]);
        }
        if (over > 0) excessAt.push(`${seconds(request.at)} s: ${over} inputs (bought before at ${[...earlier].join(', ')} s)`);
      }
      // And each purchase beyond need must follow a purchase of the same text that a fault could
      // have lost: its buyer died (killed, or exited) while the request was in flight or within
      // LOST_WINDOW_MS of its answer (before its vectors were queued for writing), or Redis went
      // down in that time. One lost purchase explains one purchase again. Anything else is a text
      // bought twice by a pipeline that lost nothing: invariant 2, whatever the bound above allows.
      const LOST_WINDOW_MS = 5000;
      const lost = (p: FrontRequest) => {
        const buyer = p.authorization === undefined ? undefined : lives.get(p.authorization);
        const until = p.answeredAt + LOST_WINDOW_MS;
        const buyerDied = buyer?.endedAt !== undefined && buyer.endedAt >= p.sentAt && buyer.endedAt <= until;
        return buyerDied || (redisOutage.from <= until && redisOutage.to >= p.sentAt);
      };
      const describePurchase = (p: FrontRequest) => {
        const buyer = p.authorization === undefined ? undefined : lives.get(p.authorization);
        const fate = buyer?.endedAt === undefined ? 'alive at the end' : `${buyer.killed ? 'killed' : 'exited'} at ${seconds(buyer.endedAt)} s`;
        return `${seconds(p.sentAt)}-${seconds(p.answeredAt)} s by worker ${buyer?.index ?? '?'} (${fate})`;
      };
      const unexplained: string[] = [];
      const purchasesOf = new Map<string, FrontRequest[]>();
      for (const purchase of front.forwarded.filter((r) => r.status === 200).sort((a, b) => a.sentAt - b.sentAt)) {
        for (const text of purchase.inputs) purchasesOf.set(text, [...(purchasesOf.get(text) ?? []), purchase]);
      }
      for (const [text, purchases] of purchasesOf) {
        let credits = 0;
        purchases.forEach((purchase, k) => {
          if (k >= (needed.get(text) ?? 0)) {
            if (credits > 0) credits--;
            else unexplained.push(`${JSON.stringify(text)} bought ${purchases.length} times, needed ${needed.get(text) ?? 0}: ${purchases.map(describePurchase).join('; ')}`);
          }
          if (lost(purchase)) credits++;
        });
      }
      const unknownTexts = [...servedPerText.keys()].filter((t) => !needed.has(t));
      const excessBound = (kills + redisRestarts * WORKERS + unexpectedExits.length) * BATCH_SIZE;

      const lettersByValue = new Map<string, StoredDeadLetter[]>();
      for (const l of letters) lettersByValue.set(l.original.toString('utf8'), [...(lettersByValue.get(l.original.toString('utf8')) ?? []), l]);
      const foreignLetters = letters.filter((l) => !malformedValues.has(l.original.toString('utf8')));
      const duplicateLetters = [...lettersByValue.entries()].filter(([v, ls]) => malformedValues.has(v) && ls.length > 1);

      const figures = {
        seed: SEED,
        events: stream.messages.length,
        validEvents: stream.events.length,
        malformedEvents: stream.malformed.length,
        items: ITEMS,
        itemsFinallyDeleted: stream.figures.finallyDeleted,
        streamShape: stream.figures,
        kills,
        workerExitsNotOurs: unexpectedExits.map((e) => `slot ${e.slot} at ${e.at.toFixed(1)} s: code ${e.code} signal ${e.signal}`),
        redisRestarts,
        sinkOutageSeconds,
        embeddingsOutageSeconds,
        embeddingsRequestsRefusedDuringOutage: front.refused,
        lost: comparison?.lost.length,
        stale: comparison?.stale.length,
        resurrected: comparison?.resurrected.length,
        firstDifference: comparison?.first,
        deadLetters: letters.length,
        deadLettersForeign: foreignLetters.length,
        deadLettersDuplicated: duplicateLetters.length,
        embeddingsRequestsServed: stub.served.length,
        inputsServed: [...servedPerText.values()].reduce((a, b) => a + b, 0),
        distinctTextsServed: servedPerText.size,
        purchasesNeeded: [...needed.values()].reduce((a, b) => a + b, 0),
        paidTwiceExcessInputs: excess,
        paidTwiceBound: excessBound,
        paidTwiceAt: excessAt,
        paidTwiceWithoutAFaultToLoseTheFirst: unexplained.length,
        killTimes,
        redisKilledAt: SCHEDULE.redisRestartAt,
        lastFaultEndedAtSeconds: Number(lastFaultAt.toFixed(1)),
        convergedAtSeconds: convergedAt === undefined ? 'never' : Number(convergedAt.toFixed(1)),
        timeToConvergeAfterLastFaultSeconds: convergedAt === undefined ? `not within ${CONVERGE_TIMEOUT_MS / 1000} s` : Number((convergedAt - lastFaultAt).toFixed(1)),
      };
      console.log(`\n==== chaos test figures ====\n${JSON.stringify(figures, null, 2)}\ntimeline:\n  ${timeline.join('\n  ')}\n============================`);

      const failed = failure !== undefined || !comparison || !converged(comparison) || foreignLetters.length > 0 || letters.length !== MALFORMED_COUNT || excess > excessBound || unknownTexts.length > 0 || unexplained.length > 0;
      if (failed) {
        console.log(`bought again with no fault to lose the earlier purchase (first 20):\n  ${unexplained.slice(0, 20).join('\n  ')}`);
        console.log(`bought beyond need (first 20): ${boughtTwice.slice(0, 20).join('\n  ')}`);
        console.log(`dead letters not among the malformed events (first 10): ${JSON.stringify(foreignLetters.slice(0, 10).map((l) => ({ stage: l.stage, code: l.code, reason: l.reason, itemId: l.itemId, source: l.source })), null, 2)}`);
        console.log(`malformed events dead-lettered more than once: ${JSON.stringify(duplicateLetters.map(([v, ls]) => ({ value: v, sources: ls.map((l) => l.source) })))}`);
        for (const e of unexpectedExits) console.log(`---- worker exit not ours (slot ${e.slot}, at ${e.at.toFixed(1)} s, code ${e.code}, signal ${e.signal}); log tail:\n${e.tail}`);
        for (const [slot, entry] of slots.entries()) console.log(`---- worker slot ${slot}, the running one, log tail:\n${entry.worker.output().slice(-4000)}`);
      }
      if (process.env.CHAOS_LOG_DIR) {
        mkdirSync(process.env.CHAOS_LOG_DIR, { recursive: true });
        workers.forEach((w, i) => writeFileSync(join(process.env.CHAOS_LOG_DIR as string, `worker-${i}.log`), w.output()));
        writeFileSync(join(process.env.CHAOS_LOG_DIR, 'figures.json'), JSON.stringify({ figures, boughtTwice, foreignLetters: foreignLetters.map((l) => ({ ...l, original: l.original.toString('utf8') })), duplicateLetters }, null, 2));
        // Every embeddings request served (s after the start, inputs), and the stream, for tracing a text bought twice.
        writeFileSync(join(process.env.CHAOS_LOG_DIR, 'served.json'), JSON.stringify({ t0, served: stub.served.map((r) => ({ at: Number(seconds(r.at)), inputs: r.inputs })), needed: Object.fromEntries(needed) }));
        writeFileSync(join(process.env.CHAOS_LOG_DIR, 'stream.ndjson'), stream.messages.map((m) => m.value).join('\n'));
      }

      if (failure !== undefined) throw failure;
      expect(comparison?.first, 'the sink differs from the expected state').toBeUndefined();
      expect(foreignLetters.map((l) => `${l.stage} ${l.code} ${l.itemId}: ${l.reason}`), 'dead letters that are not malformed events').toEqual([]);
      expect(duplicateLetters.map(([v, ls]) => `${v} at ${ls.map((l) => l.source).join(', ')}`), 'malformed events dead-lettered more than once').toEqual([]);
      expect(letters.length).toBe(MALFORMED_COUNT);
      for (const l of letters) expect(l.stage).toBe('ingest');
      expect(unknownTexts, 'texts bought that no event carries').toEqual([]);
      expect(excess, `inputs bought beyond need: ${boughtTwice.slice(0, 10).join('; ')}`).toBeLessThanOrEqual(excessBound);
      expect(unexplained, 'texts bought again although no fault lost the earlier purchase').toEqual([]);
    },
    300_000,
  );
});
