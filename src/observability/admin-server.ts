import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readiness } from '../pipeline/pipeline.js';
import { checkDashboardRequest, isLoopbackHost, type DashboardAccess } from './admin-guard.js';
import { DASHBOARD_PATH, type Dashboard } from './dashboard.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

export interface AdminServerOptions {
  host: string;
  /** 0: any free port (tests); see AdminServer.port. */
  port: number;
  metrics: Metrics;
  /** What /readyz reports; undefined while starting or draining. */
  pipeline: () => { readiness(): Readiness } | undefined;
  /** Served under /queues when given; `credentials` undefined means no login (loopback only). */
  dashboard?: { board: Dashboard; credentials: { user: string; password: string } | undefined };
  logger: Logger;
}

/**
 * The worker's admin server, on METRICS_HOST:METRICS_PORT: /metrics for Prometheus, /healthz (the
 * process answers) and /readyz (it can do its work: 503 with the reasons as JSON while starting or
 * stopping, after a fatal error until the exit, while Redis is away, while ingest holds a batch it
 * cannot commit yet, or while every embeddings circuit is open), all three open to anyone who can
 * reach the port (probes and scrapers carry no credentials); and the queue dashboard under /queues,
 * behind the checks of admin-guard.ts. Anything else is 404.
 */
export class AdminServer {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    private readonly dashboard: Dashboard | undefined,
  ) {}

  /** Resolves once listening; rejects (port in use, address not on this machine) naming the settings. */
  static async start(options: AdminServerOptions): Promise<AdminServer> {
    const access: DashboardAccess | undefined = options.dashboard && { credentials: options.dashboard.credentials, loopbackOnly: isLoopbackHost(options.host) };
    const server = createServer((req, res) => route(req, res, options, access));
    await new Promise<void>((resolve, reject) => {
      const failed = (error: NodeJS.ErrnoException) => reject(new Error(`cannot serve metrics on ${options.host}:${options.port} (METRICS_HOST, METRICS_PORT): ${error.code === 'EADDRINUSE' ? 'the port is in use; choose another METRICS_PORT' : error.message}`));
      server.once('error', failed);
      server.listen(options.port, options.host, () => {
        server.off('error', failed);
        resolve();
      });
    });
    const admin = new AdminServer(server, options.dashboard?.board);
    options.logger.info(
      { host: options.host, port: admin.port, dashboard: options.dashboard ? `${DASHBOARD_PATH} (${options.dashboard.credentials ? 'login required' : 'no login: loopback only'})` : 'off' },
      `metrics on /metrics, health on /healthz and /readyz${options.dashboard ? `, queue dashboard on ${DASHBOARD_PATH}` : ''}`,
    );
    return admin;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /**
   * Idempotent. Stops listening and drops every connection (a dashboard tab polls on a keep-alive
   * connection that would hold the exit up), then closes the dashboard's queues. Called last, when
   * the process is about to exit: probes saw 503 throughout the drain.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeAllConnections();
      await Promise.all([closed, this.dashboard?.close()]);
    })();
    return this.closing;
  }
}

function route(req: IncomingMessage, res: ServerResponse, options: AdminServerOptions, access: DashboardAccess | undefined): void {
  const path = new URL(req.url ?? '/', 'http://admin').pathname;
  const json = (status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
  if (path === '/metrics') {
    void options.metrics.registry.metrics().then(
      (body) => {
        res.writeHead(200, { 'content-type': options.metrics.registry.contentType }).end(body);
      },
      (error: unknown) => json(500, { error: (error as Error).message }),
    );
    return;
  }
  if (path === '/healthz') return json(200, { status: 'ok' });
  if (path === '/readyz') {
    const current = options.pipeline();
    const readiness = current ? current.readiness() : { ready: false, reasons: ['not running: starting or draining'], embeddings: undefined };
    return json(readiness.ready ? 200 : 503, readiness);
  }
  if (options.dashboard && access && (path === DASHBOARD_PATH || path.startsWith(`${DASHBOARD_PATH}/`))) {
    return serveDashboard(req, res, options.dashboard.board, access, options.logger);
  }
  json(404, { error: `no such path: ${path} (served here: /metrics, /healthz, /readyz${options.dashboard ? `, ${DASHBOARD_PATH}` : ''})` });
}

function serveDashboard(req: IncomingMessage, res: ServerResponse, board: Dashboard, access: DashboardAccess, logger: Logger): void {
  // No other site may frame it: a framed dashboard could be clicked through from that site.
  res.setHeader('x-frame-options', 'DENY');
  res.setHeader('content-security-policy', "frame-ancestors 'none'");
  const verdict = checkDashboardRequest(req, access);
  if (!verdict.allowed) {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (verdict.status === 401) headers['www-authenticate'] = 'Basic realm="indexer queue dashboard", charset="UTF-8"';
    res.writeHead(verdict.status, headers).end(JSON.stringify({ error: verdict.reason }));
    if (verdict.status === 403) logger.warn({ method: req.method, path: req.url, host: req.headers.host, origin: req.headers.origin, reason: verdict.reason }, 'dashboard request refused');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    // The dashboard changes queues: leave a trace of every change, and of who asked.
    res.once('finish', () => logger.info({ method: req.method, path: req.url, status: res.statusCode, from: req.socket.remoteAddress }, 'dashboard action'));
  }
  board.handle(req, res);
}
