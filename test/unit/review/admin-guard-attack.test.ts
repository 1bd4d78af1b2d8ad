/**
 * Review of issue 11 (the queue dashboard): tricks against the admin server's routing and guard,
 * over real HTTP, with a stand-in board that answers 200 to whatever reaches it; and METRICS_HOST
 * variants that must refuse to start without a password. All of these held.
 */
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { ConfigError } from '../../../src/core/errors.js';
import { AdminServer } from '../../../src/observability/admin-server.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { Metrics } from '../../../src/observability/metrics.js';

const reached: string[] = [];
let server: AdminServer;

/** A raw request: path as given (no normalisation by a client), headers as given (no Host added unless given). */
function raw(method: string, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: server.port, method, path, headers, setHost: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  server = await AdminServer.start({
    host: '127.0.0.1',
    port: 0,
    metrics: new Metrics(),
    pipeline: () => undefined,
    dashboard: {
      credentials: undefined,
      board: {
        handle: (req, res) => {
          reached.push(`${req.method} ${req.url}`);
          res.writeHead(200).end('board');
        },
        close: async () => undefined,
      },
    },
    logger: silentLogger,
  });
});

afterAll(async () => {
  await server.close();
});

describe('review: dashboard guard over HTTP (loopback, no password)', () => {
  const own = () => ({ host: `127.0.0.1:${server.port}` });

  it('held: a mutating request from another origin, a null origin, or a rebinding Host never reaches the board', async () => {
    reached.length = 0;
    const refused: [string, string, Record<string, string>][] = [
      ['PUT', '/queues/api/queues/embed/retry/failed', { ...own(), origin: 'http://evil.example' }],
      ['PUT', '/queues/api/queues/embed/retry/failed', { ...own(), origin: 'null' }],
      ['POST', '/queues/api/queues/embed/pause', { ...own(), 'sec-fetch-site': 'cross-site' }],
      ['DELETE', '/queues/api/queues/embed/clean/failed', { ...own(), origin: `http://127.0.0.1:${server.port + 1}` }],
      ['PUT', '/queues/api/queues/embed/resume', { ...own(), origin: `http://localhost:${server.port}` }],
      ['GET', '/queues', { host: `evil.example:${server.port}` }],
      ['GET', '/queues', { host: `127.0.0.1.nip.io:${server.port}` }],
      ['GET', '/queues', { host: `localhost.evil.com:${server.port}` }],
      ['GET', '/queues', {}],
      ['GET', '/queues/../queues/api/queues', { host: `evil.example:${server.port}` }],
      ['GET', '/metrics/../queues', { host: `evil.example:${server.port}` }],
      ['PUT', '/queues/api/queues/embed/pause', { ...own(), origin: 'http://evil.example', 'x-http-method-override': 'GET' }],
    ];
    for (const [method, path, headers] of refused) {
      const status = await raw(method, path, headers);
      // 400: Node's HTTP parser itself refuses an HTTP/1.1 request without Host.
      expect([400, 401, 403, 404], `${method} ${path} ${JSON.stringify(headers)} -> ${status}`).toContain(status);
    }
    expect(reached).toEqual([]);
  });

  it('held: path tricks do not reach the board outside /queues, nor skip the guard', async () => {
    reached.length = 0;
    for (const path of ['//queues', '/Queues', '/queues%2Fapi', '/%71ueues', '/queues/../metrics']) {
      await raw('GET', path, { host: `evil.example:${server.port}` });
    }
    expect(reached).toEqual([]);
  });

  it('held: the dashboard from loopback names (IPv4, IPv6, localhost) reaches the board', async () => {
    reached.length = 0;
    for (const host of [`127.0.0.1:${server.port}`, `localhost:${server.port}`, `[::1]:${server.port}`, `127.0.0.1`]) {
      expect(await raw('GET', '/queues', { host }), host).toBe(200);
    }
    expect(await raw('PUT', '/queues/api/queues/embed/pause', { ...own(), origin: `http://127.0.0.1:${server.port}` })).toBe(200);
    expect(reached).toHaveLength(5);
  });
});

describe('review: METRICS_HOST variants without DASHBOARD_PASSWORD', () => {
  it('held: every non-loopback bind refuses the config, naming DASHBOARD_PASSWORD', () => {
    for (const host of ['0.0.0.0', '::', '[::]', '0', 'localhost.evil.com', '127.0.0.1.nip.io', '::ffff:0.0.0.0', '10.0.0.5', 'indexer']) {
      let error: unknown;
      try {
        loadConfig({ METRICS_PORT: '9464', METRICS_HOST: host });
      } catch (e) {
        error = e;
      }
      expect(error, host).toBeInstanceOf(ConfigError);
      expect((error as Error).message, host).toContain('DASHBOARD_PASSWORD');
    }
  });

  it('held: loopback binds start without a password', () => {
    for (const host of ['127.0.0.1', '::1', '[::1]', 'localhost', '127.0.0.2']) {
      expect(() => loadConfig({ METRICS_PORT: '9464', METRICS_HOST: host }), host).not.toThrow();
    }
  });
});
