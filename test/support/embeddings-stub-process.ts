import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface StubStats {
  requests: number;
  served: number;
  inputs: number;
  tokens: number;
}

export interface StubProcess {
  url: string;
  stats(): Promise<StubStats>;
  stop(): Promise<void>;
}

/**
 * The embeddings stub in a process of its own (test/support/embeddings-stub-main.ts), for
 * benchmarks: the indexer's process then pays only for its own work, as against a remote API.
 */
export async function startStubProcess(options: { dimensions: number; latencyMs: number }): Promise<StubProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/embeddings-stub-main.ts', String(options.dimensions), String(options.latencyMs)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const firstLine = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the stub process exited (${code}) before it started`)));
  });
  const url = (JSON.parse(firstLine) as { url: string }).url;
  return {
    url,
    stats: async () => (await (await fetch(`${url.replace(/\/v1\/?$/, '')}/_stub/stats`)).json()) as StubStats,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
