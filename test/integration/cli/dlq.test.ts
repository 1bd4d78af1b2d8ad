/**
 * `indexer dlq show|retry|purge` on the real parts (issue 10): dead letters made by the running
 * pipeline are put back where they can succeed (a write with its vector, so no embedding is bought
 * again; an event to its topic; a change to the embed queue) and deleted only then; entries that
 * cannot be replayed are left; purge deletes only what it was asked to.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { retryDeadLetters, type DeadLetterSelection } from '../../../src/cli/dlq.js';
import { loadConfig, type Config } from '../../../src/config/config.js';
import { SinkError } from '../../../src/core/errors.js';
import { DeadLetterStore, MAX_ORIGINAL_BYTES } from '../../../src/deadletter/dead-letter-store.js';
import { createKafka, withAdmin } from '../../../src/ingest/kafka.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { decodeVector, WRITE_QUEUE, type ItemWrite, type QueuedChange, type QueuedWrite, type WriteJobData } from '../../../src/queue/jobs.js';
import { vectorsKey } from '../../../src/queue/write-jobs.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import type { VectorSink } from '../../../src/sinks/vector-sink.js';
import { deletePrefix, services, uniqueName, waitFor } from '../../support/helpers.js';
import { interceptedSink } from '../../support/intercepted-sink.js';
import { consumed, HARNESS_DIMENSIONS, pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const byIds = (...ids: string[]): DeadLetterSelection => ({ ids, filter: {}, all: false });

/** A sink that refuses every write while `refusing` is set, as a sink refuses a record for its content. */
function refusingSink(config: Config): { sink: VectorSink; stopRefusing: () => void } {
  let refusing = true;
  const sink = interceptedSink(createSink(config.sink, HARNESS_DIMENSIONS), () => {
    if (refusing) throw new SinkError('SINK_REJECTED', 'refused by the test sink', { canRetry: false });
  });
  return { sink, stopRefusing: () => (refusing = false) };
}

describe('dlq retry', () => {
  const { cleanups, setup, start } = pipelineHarness('dlq');

  async function redisFor(config: Config): Promise<Redis> {
    const redis = new Redis(config.redis.url);
    cleanups.push(async () => void (await redis.quit()));
    return redis;
  }

  it('turns a write dead letter into a write job holding its vector, written without buying the embedding again', async () => {
    const { stub, config, produce } = await setup();
    const refusing = refusingSink(config);
    const first = await start(config, ['ingest', 'embed', 'write'], refusing.sink);
    await produce([upsertEvent('w-1', 1, 'a write the sink refused once')]);
    const letter = await waitFor('the write dead-lettered', async () => (await first.deadLetters.list(10, { stage: 'write' })).find((l) => l.itemId === 'w-1'));
    expect(letter.code).toBe('SINK_REJECTED');
    await first.close();
    const bought = stub.requests.length;
    expect(bought).toBe(1);
    const original = JSON.parse(letter.original.toString('utf8')) as QueuedWrite;
    expect(original.vector, 'the letter holds the vector, as base64').toEqual(expect.any(String));

    const redis = await redisFor(config);
    const report = await retryDeadLetters(config, redis, byIds(letter.id));
    expect(report.stages.write).toEqual({ retried: 1, superseded: 0, refused: 0 });
    expect(await new DeadLetterStore(redis, config.redis.prefix).get(letter.id)).toBeUndefined();
    const writeQueue = new Queue<WriteJobData>(WRITE_QUEUE, { connection: redis, prefix: config.redis.prefix });
    cleanups.push(() => writeQueue.close());
    const [job, ...others] = await writeQueue.getJobs(['waiting']);
    expect(others).toHaveLength(0);
    const [write] = (job?.data as WriteJobData).writes;
    const { vector: letterVector, ...rest } = original;
    expect(write, 'the vector goes beside the job, in its blob').toEqual({ ...rest, heldBy: job?.id, slot: 0 });
    expect(await redis.getBuffer(vectorsKey(config.redis.prefix, job?.id as string))).toEqual(Buffer.from(letterVector as string, 'base64'));
    expect(job?.id).toMatch(/^w/);
    expect(job?.id).not.toBe(original.heldBy);

    // A worker that could buy embeddings (the embed role runs too) writes it from the job alone.
    const workers = await start(config, ['embed', 'write']);
    const [stored] = await waitFor('w-1 written', async () => {
      const found = await workers.sink?.retrieve(['w-1'], { withVectors: true });
      return found?.length === 1 ? found : undefined;
    });
    expect(stored?.vector).toEqual(Array.from(decodeVector(original.vector as string)));
    expect(stored?.payload).toMatchObject({ version: 1, content_hash: original.contentHash });
    expect(stub.requests.length).toBe(bought);
  });

  it('re-produces an ingest dead letter to its topic, where a fixed event mapping indexes it', async () => {
    const { config, produce } = await setup({}, {}, 1);
    const topic = config.kafka.topics[0] as string;
    // Produced by a system whose id field is "sku": the mapping (EVENT_ID_FIELD=id) cannot read it.
    const value = JSON.stringify({ sku: 'sku-1', version: 3, text: 'an event the mapping could not read' });
    const wrong = await start(config, ['ingest']);
    await produce([value]);
    const [letter] = await waitFor('the event dead-lettered', async () => {
      const letters = await wrong.deadLetters.list(10, { stage: 'ingest' });
      return letters.length === 1 ? letters : undefined;
    });
    expect(letter?.source).toMatch(new RegExp(`^${topic}/0@0$`));
    await wrong.close();

    const redis = await redisFor(config);
    const report = await retryDeadLetters(config, redis, { ids: [], filter: { stage: 'ingest' }, all: false });
    expect(report.stages.ingest).toEqual({ retried: 1, superseded: 0, refused: 0 });
    expect(await new DeadLetterStore(redis, config.redis.prefix).count()).toBe(0);
    const offsets = await withAdmin(createKafka(config.kafka, silentLogger), (admin) => admin.fetchTopicOffsets(topic));
    expect(offsets.map((o) => o.high)).toEqual(['2']);

    // The same consumer group, with the mapping fixed: it reads only the re-produced event.
    const fixed = { ...config, events: { ...config.events, idField: 'sku' } };
    const pipeline = await start(fixed, ['ingest', 'embed', 'write']);
    await waitFor('sku-1 indexed', async () => (await pipeline.sink?.retrieve(['sku-1']))?.length === 1);
    expect(await consumed(pipeline)).toBe(1);
    expect(await pipeline.deadLetters.count()).toBe(0);
  });

  it('queues an embed dead letter again once its cause is fixed; a second retry of it is superseded', async () => {
    const { stub, config, produce } = await setup({}, { rejectMarker: 'POISON' });
    const pipeline = await start(config, ['ingest', 'embed', 'write']);
    await produce([upsertEvent('e-1', 1, 'POISON the provider refuses')]);
    const letter = await waitFor('the change dead-lettered', async () => (await pipeline.deadLetters.list(10, { stage: 'embed' })).find((l) => l.itemId === 'e-1'));
    expect(letter.code).toBe('EMBEDDINGS_REJECTED');
    stub.options.rejectMarker = undefined;

    const redis = await redisFor(config);
    expect((await retryDeadLetters(config, redis, byIds(letter.id))).stages.embed).toEqual({ retried: 1, superseded: 0, refused: 0 });
    await waitFor('e-1 indexed', async () => (await pipeline.sink?.retrieve(['e-1']))?.length === 1);
    expect(await pipeline.deadLetters.count()).toBe(0);

    // The same letter again, as a crash between the enqueue and the delete would leave it: the
    // item state knows the sink holds the change, so nothing is queued or bought.
    const requests = stub.requests.length;
    await pipeline.deadLetters.add([{ stage: 'embed', code: letter.code, reason: letter.reason, itemId: 'e-1', original: letter.original, key: letter.key, source: letter.source }]);
    const [again] = await pipeline.deadLetters.list(1);
    const report = await retryDeadLetters(config, redis, byIds(again?.id as string));
    expect(report.stages.embed).toEqual({ retried: 0, superseded: 1, refused: 0 });
    expect(await pipeline.embedQueue.getJobCounts('waiting', 'active', 'delayed', 'prioritized')).toEqual({ waiting: 0, active: 0, delayed: 0, prioritized: 0 });
    expect(await pipeline.deadLetters.count()).toBe(0);
    expect(stub.requests.length).toBe(requests);
    expect((JSON.parse(letter.original.toString('utf8')) as QueuedChange).itemId).toBe('e-1');
  });

  it('leaves truncated entries, backfill rows and ids it does not hold, saying why', async () => {
    const { config } = await setup();
    const redis = await redisFor(config);
    const store = new DeadLetterStore(redis, config.redis.prefix);
    await store.add([
      { stage: 'ingest', code: 'EVENT_INVALID', reason: 'too big', itemId: undefined, original: Buffer.alloc(MAX_ORIGINAL_BYTES + 1, 'x'), key: null, source: `${config.kafka.topics[0]}/0@7` },
      { stage: 'backfill', code: 'EVENT_INVALID', reason: 'no id', itemId: undefined, original: Buffer.from('{"name":"row"}'), key: null, source: 'backfill:b123/42' },
    ]);
    const [cut, row] = await store.list(10);
    const report = await retryDeadLetters(config, redis, { ids: [], filter: {}, all: true });
    expect(report.refused.map((r) => r.id)).toEqual([cut?.id, row?.id]);
    expect(report.refused[0]?.why).toMatch(/was 262145 bytes and only the first 262144 are kept/);
    expect(report.refused[1]?.why).toMatch(/running its backfill again \(backfill b123/);
    expect(report.stages.ingest).toEqual({ retried: 0, superseded: 0, refused: 1 });
    expect(await store.count()).toBe(2);

    const unknown = await retryDeadLetters(config, redis, byIds('1-1'));
    expect(unknown.missing).toEqual(['1-1']);
    await expect(retryDeadLetters(config, redis, { ids: [], filter: {}, all: false })).rejects.toThrow(/needs dead-letter ids, --stage or --code, or --all/);
  });
});

describe('indexer dlq, as a process', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('lists by stage, shows an entry whole, purges only what it is asked to, and leaves what it cannot retry', async () => {
    const { kafkaBrokers, redisUrl } = services();
    const name = uniqueName('dlq-cli');
    const env = { KAFKA_BROKERS: kafkaBrokers, REDIS_URL: redisUrl, KAFKA_TOPICS: name, KAFKA_GROUP_ID: name, QUEUE_PREFIX: name, LOG_LEVEL: 'warn' };
    const indexer = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'dlq', ...args], { cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, encoding: 'utf8' });
    const redis = new Redis(redisUrl);
    cleanups.push(async () => {
      await deletePrefix(redisUrl, name);
      await redis.quit();
    });
    const store = new DeadLetterStore(redis, loadConfig(env).redis.prefix);
    const binary = Buffer.from([0xff, 0x00, 0xfe, 0x01]);
    await store.add([
      { stage: 'ingest', code: 'EVENT_INVALID', reason: 'not JSON', itemId: undefined, original: Buffer.from('this line is not JSON'), key: Buffer.from('k-1'), source: `${name}/0@0` },
      { stage: 'ingest', code: 'EVENT_INVALID', reason: 'not UTF-8', itemId: undefined, original: binary, key: null, source: `${name}/0@1` },
      { stage: 'write', code: 'SINK_REJECTED', reason: 'refused', itemId: 'w-9', original: Buffer.from('{"itemId":"w-9"}'), key: Buffer.from('w-9'), source: 'write:w1' },
      { stage: 'write', code: 'JOB_STALLED', reason: 'stalled', itemId: 'w-8', original: Buffer.from('{"itemId":"w-8"}'), key: Buffer.from('w-8'), source: 'write:w2' },
    ]);
    const [text, bytes, rejected, stalled] = await store.list(10);

    const listed = indexer('list', '--stage', 'write');
    expect(listed.status).toBe(0);
    expect(listed.stdout.split('\n').filter(Boolean).slice(1).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual([rejected?.id, stalled?.id]);

    const shown = indexer('show', text?.id as string);
    expect(shown.status).toBe(0);
    expect(JSON.parse(shown.stdout)).toEqual({
      id: text?.id, at: text?.at, stage: 'ingest', code: 'EVENT_INVALID', reason: 'not JSON', item_id: null, source: `${name}/0@0`,
      key: 'k-1', key_encoding: 'utf8', original: 'this line is not JSON', original_encoding: 'utf8', original_bytes: 21, truncated: false,
    });
    expect(JSON.parse(indexer('show', bytes?.id as string).stdout)).toMatchObject({ original: binary.toString('base64'), original_encoding: 'base64' });
    expect(indexer('show', '1-1')).toMatchObject({ status: 1, stderr: 'no dead letter 1-1\n' });

    // Nothing selected: refused, nothing deleted.
    const unselected = indexer('purge');
    expect(unselected.status).toBe(1);
    expect(unselected.stderr).toMatch(/purge needs dead-letter ids, --stage or --code, or --all/);
    expect(await store.count()).toBe(4);

    const purged = indexer('purge', '--stage', 'write', '--code', 'SINK_REJECTED');
    expect(purged).toMatchObject({ status: 0, stdout: 'purged 1 dead letters\n' });
    expect((await store.list(10)).map((e) => e.id)).toEqual([text?.id, bytes?.id, stalled?.id]);

    expect(indexer('purge', bytes?.id as string)).toMatchObject({ status: 0, stdout: 'purged 1 dead letters\n' });
    expect((await store.list(10)).map((e) => e.id)).toEqual([text?.id, stalled?.id]);

    // A write whose original is not a write is left where it is, named, and the exit says so.
    const retried = indexer('retry', '--stage', 'write');
    expect(retried.status).toBe(1);
    expect(retried.stdout).toBe(`refused ${stalled?.id} (write): its original is not a write: no version\nwrite: 0 queued for writing with their vectors (no embeddings bought), 1 left in the store\n`);
    expect(await store.count()).toBe(2);
  });
});
