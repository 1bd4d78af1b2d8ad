import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort, waitFor } from './helpers.js';

/**
 * A redis-server of a test's own, on its own port and in its own directory, for what the shared
 * Redis must not go through: being stopped and started, or run with other settings. AOF is on
 * (`appendonly yes`, fsync every second) unless `settings` say otherwise, so a stop and a start
 * keep the data, as a production Redis does. `remove()` stops it and deletes its directory.
 */
export class RedisServer {
  private readonly dir = mkdtempSync(join(tmpdir(), 'redis-own-'));
  private process: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private port: number | undefined;

  constructor(private readonly settings: Record<string, string> = {}) {}

  get url(): string {
    if (this.port === undefined) throw new Error('the Redis server was never started');
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts it (again, on the same port and with the same data after a stop) and waits for PONG. */
  async start(): Promise<string> {
    this.port ??= await freePort();
    const settings = { appendonly: 'yes', appendfsync: 'everysec', save: '', 'maxmemory-policy': 'noeviction', ...this.settings };
    const args = ['--bind', '127.0.0.1', '--port', String(this.port), '--dir', this.dir, ...Object.entries(settings).flatMap(([name, value]) => [`--${name}`, value])];
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    this.process = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    await waitFor(`redis-server on port ${this.port} to answer (output: ${output.slice(-500)})`, async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}: ${output.slice(-500)}`);
      return ping(this.url);
    }, { timeoutMs: 20_000 });
    return this.url;
  }

  /** Stops it as an operator or an orchestrator would (SIGTERM: it writes its AOF and exits). */
  async stop(): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null) return;
    child.kill('SIGTERM');
    await this.exited;
  }

  async remove(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function ping(url: string): Promise<boolean> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => undefined); // refused while the server starts: connect() says so
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}
