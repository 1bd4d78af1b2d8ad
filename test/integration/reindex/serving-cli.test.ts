/**
 * After `reindex switch` and `reindex drop-old`, the commands an operator runs, as real `indexer`
 * processes, address the serving generation: backfill and dlq use its prefix; resume resumes every
 * generation's embed queue.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterEach, describe, expect, it } from 'vitest';
import { runningGenerations } from '../../support/backfill-harness.js';
import { loadConfig } from '../../../src/config/config.js';
import { createKafka } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { DeadLetterStore } from '../../../src/deadletter/dead-letter-store.js';
import { EMBED_QUEUE } from '../../../src/queue/jobs.js';
import { configFor } from '../../../src/reindex/generations.js';
import { servingConfig } from '../../../src/reindex/reindex.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { isolatedWorkerEnv } from '../../support/processes.js';
import { upsertEvent } from '../../support/pipeline-harness.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
});

/** Whether `check` holds before the deadline (for asserting that something never happens). */
async function reached(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  return waitFor(what, check, { timeoutMs }).then(
    () => true,
    () => false,
  );
}

describe('operator commands after a switch', () => {
  it('backfill start, resume and dlq list act on the serving generation once generation 1 is dropped', async () => {
    const stub = new EmbeddingsStub({ dimensions: 8 });
    const { env, dir } = await isolatedWorkerEnv(stub, { EMBED_BATCH_LINGER_MS: '20', WRITE_BATCH_LINGER_MS: '20', JOB_BACKOFF_MS: '100', LOG_LEVEL: 'silent' }, cleanups);
    const name = env.KAFKA_TOPICS as string;
    const indexer = (...args: string[]) => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, encoding: 'utf8' });
      return `${r.stdout}${r.stderr}`.trim();
    };
    const config = loadConfig(env);
    const kafka = createKafka(config.kafka, silentLogger);
    await ensureTopic(kafka, name, 2);
    const { reindexer, redis } = await runningGenerations(config, cleanups, ['ingest', 'embed', 'write', 'backfill']);
    const points = async (id: number) => (await reindexer.status()).find((s) => s.generation.id === id)?.points;

    await produceLines(kafka, name, Array.from({ length: 5 }, (_, i) => upsertEvent(`c-${i}`, 1, `catalog item ${i}`)), { idField: 'id' });
    await waitFor('generation 1 indexed', async () => (await points(1)) === 5);
    const g2 = await reindexer.start({ model: 'stub-embedding-v2', dimensions: 16 });
    await waitFor('generation 2 caught up', async () => {
      const s = (await reindexer.status()).find((x) => x.generation.id === 2);
      return s?.caughtUp === true && s.points === 5;
    }, { timeoutMs: 90_000 });
    await reindexer.switchTo();
    expect((await reindexer.dropOld()).map((g) => g.id)).toEqual([1]);
    const serving = (await servingConfig(config, redis)).config;
    expect(serving.redis.prefix).toBe(configFor(config, g2).redis.prefix);

    // 1. A backfill of three new rows: nothing but the workers' generation-2 pipeline could write them.
    const file = join(dir, 'rows.ndjson');
    writeFileSync(file, Array.from({ length: 3 }, (_, i) => upsertEvent(`bf-${i}`, 1, `backfilled row ${i}`)).join('\n'));
    const started = indexer('backfill', 'start', `file:${file}`);
    const backfilled = await reached('the backfill reached the serving collection', async () => (await points(2)) === 8, 30_000);
    expect.soft(backfilled, `\`indexer backfill start\` printed "${started}"; 30 s later the serving generation holds ${await points(2)} points, not 8; \`indexer backfill status\`: "${indexer('backfill', 'status')}"`).toBe(true);

    // 2. The embeddings quota runs out on a live event: the serving generation's embed queue is paused.
    stub.failNext({ status: 429, body: { error: { message: 'You exceeded your current quota', type: 'insufficient_quota', param: null, code: 'insufficient_quota' } } });
    await produceLines(kafka, name, [upsertEvent('q-1', 1, 'arrives when the quota is gone')], { idField: 'id' });
    const servingEmbed = new Queue(EMBED_QUEUE, { connection: redis, prefix: serving.redis.prefix });
    cleanups.push(() => servingEmbed.close());
    await waitFor('the serving embed queue paused for the operator', () => servingEmbed.isPaused());
    const resumed = indexer('resume');
    expect.soft(await servingEmbed.isPaused(), `\`indexer resume\` printed "${resumed}", and the serving generation's embed queue is still paused`).toBe(false);

    // 3. A line that is not JSON becomes a dead letter of the serving generation (the only one running).
    const deadLetters = new DeadLetterStore(redis, serving.redis.prefix);
    await produceLines(kafka, name, ['this line is not JSON'], { idField: 'id' });
    await waitFor('a dead letter in the serving generation', async () => (await deadLetters.count()) === 1);
    const listed = indexer('dlq', 'list');
    expect.soft(listed, 'the serving generation holds 1 dead letter').toMatch(/^1 dead letters/);
  });
});
