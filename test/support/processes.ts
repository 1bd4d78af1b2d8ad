import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EmbeddingsStub } from './embeddings-stub.js';
import { deletePrefix, deleteTopics, services, uniqueName } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface WorkerProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * A command run to its end as a child process in the repository, with only PATH and HOME of this
 * process's environment plus `env`; without blocking this process (whose pipeline or workers may
 * hold what the command waits on).
 */
export function runCommand(command: string, args: string[], env: Record<string, string>): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** The `indexer` command line (the sources through tsx), as a user runs it. */
export function runIndexer(env: Record<string, string>, ...args: string[]): Promise<CommandResult> {
  return runCommand(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], env);
}

/** Starts `workers/indexer-worker.ts` as a real process (through tsx), capturing its output. */
export function spawnWorker(roles: string, env: Record<string, string | undefined>): WorkerProcess {
  // WORKER_NODE_ARGS: flags Node refuses in NODE_OPTIONS, e.g. `--cpu-prof --cpu-prof-dir=DIR` to profile the bench's workers.
  const nodeArgs = (process.env.WORKER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'workers/indexer-worker.ts', roles], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => output, exited };
}

/**
 * The environment for worker processes a test spawns: its own topic, group, queue prefix,
 * collection and working directory (LanceDB lives in `<dir>/lancedb`), the given embeddings stub,
 * and `overrides`. Everything it creates, and every worker pushed to `workers`, is removed by the
 * cleanup it registers.
 */
export async function isolatedWorkerEnv(
  stub: EmbeddingsStub,
  overrides: Record<string, string>,
  cleanups: (() => Promise<void>)[],
): Promise<{ env: Record<string, string>; dir: string; workers: WorkerProcess[] }> {
  const { kafkaBrokers, redisUrl } = services();
  const name = uniqueName('proc');
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const env: Record<string, string> = {
    KAFKA_BROKERS: kafkaBrokers,
    REDIS_URL: redisUrl,
    KAFKA_TOPICS: name,
    KAFKA_GROUP_ID: name,
    QUEUE_PREFIX: name,
    COLLECTION: name,
    LANCEDB_URI: join(dir, 'lancedb'),
    EMBEDDINGS_BASE_URL: await stub.start(),
    EMBEDDINGS_MODEL: 'stub-embedding',
    EMBEDDINGS_DIMENSIONS: String(stub.options.dimensions),
    KAFKAJS_NO_PARTITIONER_WARNING: '1',
    ...overrides,
  };
  const workers: WorkerProcess[] = [];
  cleanups.push(async () => {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    await stub.stop();
    await deletePrefix(redisUrl, name);
    await deleteTopics([kafkaBrokers], [name]);
    rmSync(dir, { recursive: true, force: true });
  });
  return { env, dir, workers };
}
