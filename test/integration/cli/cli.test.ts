/**
 * The `indexer` command as a user runs it: produce NDJSON into Kafka, let a worker index it, then
 * search, export and list dead letters, each a real process.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { startPipeline, type Pipeline } from '../../../src/pipeline/pipeline.js';
import { deletePrefix, deleteTopics, services, uniqueName, waitFor } from '../../support/helpers.js';
import { runIndexer } from '../../support/processes.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'cli-'));
let env: Record<string, string>;
let pipeline: Pipeline;

function indexer(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}


beforeAll(async () => {
  const { kafkaBrokers, redisUrl } = services();
  const name = uniqueName('cli');
  env = { KAFKA_BROKERS: kafkaBrokers, REDIS_URL: redisUrl, KAFKA_TOPICS: name, KAFKA_GROUP_ID: name, QUEUE_PREFIX: name, LANCEDB_URI: join(dir, 'lancedb'), LOG_LEVEL: 'warn', KAFKAJS_NO_PARTITIONER_WARNING: '1' };
});

afterAll(async () => {
  await pipeline?.close();
  await deletePrefix(env.REDIS_URL as string, env.QUEUE_PREFIX as string);
  await deleteTopics([env.KAFKA_BROKERS as string], [env.KAFKA_TOPICS as string]);
  rmSync(dir, { recursive: true, force: true });
});

describe('indexer CLI', () => {
  it('produces, then searches, exports and lists dead letters', async () => {
    const file = join(dir, 'events.ndjson');
    writeFileSync(
      file,
      [
        JSON.stringify({ id: 'tent-1', version: 1, text: 'Four-season mountaineering tent with snow skirts', metadata: { title: 'Summit Tent', price: 499 } }),
        JSON.stringify({ id: 'shoe-1', version: 1, text: 'Waterproof trail running shoe with a rock plate', metadata: { title: 'Trail Shoe', price: 129 } }),
        JSON.stringify({ id: 'lamp-1', version: 1, text: 'Rechargeable headlamp, 400 lumens', metadata: { title: 'Headlamp' } }),
        'this line is not JSON',
      ].join('\n'),
    );
    const produced = indexer('produce', file, '--create-topic', '2');
    expect(produced.stderr).toBe('');
    expect(produced.stdout).toContain(`sent 4 events to ${env.KAFKA_TOPICS}`);

    pipeline = await startPipeline(loadConfig(env), { roles: ['ingest', 'embed', 'write'], logger: silentLogger });
    await waitFor('three items indexed', async () => (await pipeline.sink?.count()) === 3);
    await waitFor('one dead letter', async () => (await pipeline.deadLetters.count()) === 1);
    await pipeline.close();

    const search = indexer('search', 'trail running shoe', '--limit', '2');
    expect(search.status).toBe(0);
    const lines = search.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ 1\. [0-9.]+ {2}shoe-1 {2}Trail Shoe$/);
    expect(lines[1]).toContain('"price":129');

    const exported = indexer('export');
    expect(exported.status).toBe(0);
    const records = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.map((r) => r.item_id).sort()).toEqual(['lamp-1', 'shoe-1', 'tent-1']);
    expect(records.find((r) => r.item_id === 'tent-1')).toMatchObject({ version: 1, model: 'local-hash-v1', content_hash: expect.stringMatching(/^[0-9a-f]{64}$/), metadata: { title: 'Summit Tent', price: 499 } });
    expect(records[0]).not.toHaveProperty('vector');
    const withVectors = JSON.parse(indexer('export', '--vectors').stdout.split('\n')[0] as string) as { vector: number[] };
    expect(withVectors.vector).toHaveLength(384);

    const dlq = indexer('dlq', 'list');
    expect(dlq.stdout).toMatch(/^1 dead letters/);
    expect(dlq.stdout).toContain('this line is not JSON');
    expect(dlq.stdout).toContain('not valid JSON');
  });

  it('backfill start --wait follows a backfill to its end and exits 0, 1 when it fails; status and cancel', async () => {
    pipeline = await startPipeline(loadConfig(env), { roles: ['embed', 'write', 'backfill'], logger: silentLogger });
    const file = join(dir, 'backfill.ndjson');
    writeFileSync(file, ['bf-cli-1', 'bf-cli-2', 'bf-cli-3'].map((id) => JSON.stringify({ id, version: 1, text: `backfilled by the CLI: ${id}` })).join('\n'));

    const started = await runIndexer(env, 'backfill', 'start', `file:${file}`, '--wait');
    expect(started.status).toBe(0);
    const id = started.stdout.split('\n')[0] as string;
    expect(id).toMatch(/^b/);
    expect(started.stderr).toMatch(new RegExp(`${id} completed file:${file}: done, read 3/3, enqueued 3`));
    const status = JSON.parse((await runIndexer(env, 'backfill', 'status', id, '--json')).stdout) as { state: string; progress: { read: number; phase: string } };
    expect(status).toMatchObject({ state: 'completed', progress: { read: 3, phase: 'done' } });
    await waitFor('the three rows written', async () => (await pipeline.sink?.retrieve(['bf-cli-1', 'bf-cli-2', 'bf-cli-3']))?.length === 3);

    const failed = await runIndexer(env, 'backfill', 'start', `file:${join(dir, 'missing.ndjson')}`, '--wait');
    expect(failed.status).toBe(1);
    expect(failed.stderr).toMatch(/failed .*BACKFILL_INVALID: cannot read the backfill file/);
    const unknown = await runIndexer(env, 'backfill', 'cancel', 'no-such-backfill');
    expect(unknown.status).toBe(1);
    expect(unknown.stdout).toContain('no backfill no-such-backfill');
    await pipeline.close();
  });

  it('names a bad setting and exits 78', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'export'], { cwd: ROOT, env: { PATH: process.env.PATH, VECTOR_DISTANCE: 'manhattan' }, encoding: 'utf8' });
    expect(result.status).toBe(78);
    expect(result.stderr).toMatch(/VECTOR_DISTANCE: Invalid option/);
  });
});
