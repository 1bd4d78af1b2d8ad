/**
 * Issue 10, "Detect a Redis that lost its data": a consumer group that committed offsets is the
 * witness, outside Redis, that ingest ran; a Redis without the epoch beside it lost the jobs of
 * those events. The worker refuses to start and names the recovery; `indexer recover` resets the
 * group to the earliest retained offsets and recreates the epoch; the worker then re-reads every
 * event. All as real processes.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { createKafka, deleteConsumerGroup, withAdmin } from '../../../src/ingest/kafka.js';
import { ensureTopic, produceLines } from '../../../src/ingest/produce.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { epochKey } from '../../../src/state/epoch.js';
import { EmbeddingsStub } from '../../support/embeddings-stub.js';
import { waitFor } from '../../support/helpers.js';
import { isolatedWorkerEnv, spawnWorker } from '../../support/processes.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('a Redis that lost the indexer\'s data', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('keeps ingest from starting, and `indexer recover` makes it re-read from the earliest offset', async () => {
    const stub = new EmbeddingsStub({ dimensions: 8 });
    const { env, workers } = await isolatedWorkerEnv(stub, { EMBED_BATCH_LINGER_MS: '20', WRITE_BATCH_LINGER_MS: '20' }, cleanups);
    const config = loadConfig(env);
    const topic = config.kafka.topics[0] as string;
    const groupId = config.kafka.groupId;
    const kafka = createKafka(config.kafka, silentLogger);
    cleanups.push(() => deleteConsumerGroup(kafka, groupId));
    const indexer = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, encoding: 'utf8' });
    const committed = () => withAdmin(kafka, async (admin) => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0]?.partitions[0]?.offset);

    await ensureTopic(kafka, topic, 1);
    const events = Array.from({ length: 6 }, (_, i) => JSON.stringify({ id: `lost-${i}`, version: 1, text: `indexed once, then lost with Redis ${i}` }));
    await produceLines(kafka, topic, events, { idField: 'id' });
    // What a run before the loss left behind: the group committed past these events. Redis (this
    // test's fresh prefix) holds nothing of them, and no epoch.
    await withAdmin(kafka, (admin) => admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '6' }] }));

    const refused = spawnWorker('ingest,embed,write', env);
    workers.push(refused);
    expect((await refused.exited).code).toBe(1);
    expect(refused.output()).toMatch(/Redis holds no epoch for QUEUE_PREFIX=\S+ \(key \S+:epoch\), but Kafka consumer group \S+ has committed offsets \(\S+\/0@6\)/);
    expect(refused.output()).toMatch(/run `indexer recover`/);
    expect(stub.requests).toHaveLength(0);

    const recovered = indexer('recover');
    expect(recovered.stderr).toBe('');
    expect(recovered.status).toBe(0);
    expect(recovered.stdout).toContain(`${topic}/0: 6 -> 0`);
    expect(await committed()).toBe('0');
    const redis = new Redis(config.redis.url);
    cleanups.push(async () => void redis.disconnect());
    expect(JSON.parse((await redis.get(epochKey(config.redis.prefix))) as string)).toMatchObject({ by: 'recover' });

    const worker = spawnWorker('ingest,embed,write', env);
    workers.push(worker);
    await waitFor('every event re-read and embedded', () => stub.served.flatMap((r) => r.inputs).length === 6 && stub.served.flatMap((r) => r.inputs).every((text) => text.startsWith('indexed once')), { timeoutMs: 90_000 });
    await waitFor('the offsets committed again', async () => (await committed()) === '6');

    // With a worker in the group, and an epoch in Redis, a second recover refuses.
    const again = indexer('recover');
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/has 1 member\(s\): stop every ingest worker/);

    worker.child.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    const noLoss = indexer('recover');
    expect(noLoss.status).toBe(1);
    expect(noLoss.stderr).toMatch(/Redis still holds the epoch .*nothing needs recovering.*indexer recover --force/);
  });
});
