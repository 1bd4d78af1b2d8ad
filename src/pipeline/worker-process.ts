import { describeConfig, loadConfig, type Config } from '../config/config.js';
import { ConfigError } from '../core/errors.js';
import { AdminServer } from '../observability/admin-server.js';
import { createDashboard } from '../observability/dashboard.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { startStatusPublishers } from '../observability/process-status.js';
import { GenerationSupervisor } from '../reindex/generation-supervisor.js';
import type { Readiness, Role } from './pipeline.js';

/**
 * After the first signal, how long a graceful drain may take before the process exits anyway. A
 * request already sent is let finish (abandoning it would pay for its texts again): the drain is
 * bounded by one embeddings request and one sink request, plus time to hand the rest back; no new
 * attempt starts once the signal came (see handBackOnShutdown).
 */
export function shutdownGraceMs(config: Config): number {
  return config.embeddings.timeoutMs + (config.sink.qdrant?.timeoutMs ?? 30_000) + 10_000;
}

/**
 * A long-lived worker process: one signal handler, the first SIGTERM/SIGINT drains (stop consuming,
 * finish in-hand batches, commit), a second signal or the grace timeout forces the exit.
 */
export async function runWorkerProcess(roles: readonly Role[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw error;
  }
  const logger = createLogger(config.observability.logLevel, { service: 'embedding-indexer', roles: roles.join(',') });
  logger.info({ config: describeConfig(config) }, 'starting');
  const metrics = new Metrics().withDefaultMetrics();
  let pipeline: GenerationSupervisor | undefined;
  let draining = false;
  // A role that stopped for good (ingest's consumer crashed past restarting) takes the process
  // down, non-zero, so that Kubernetes or systemd restarts it; until it is gone it is not ready.
  let fatal: Error | undefined;
  let stopForFatal: (() => void) | undefined;
  const onFatal = (error: Error) => {
    if (fatal) return;
    fatal = error;
    stopForFatal?.();
  };
  const current = () => (fatal ? notReadyAfter(fatal) : draining ? undefined : pipeline);
  const metricsServer = await serveAdmin(config, metrics, current, logger);

  try {
    // One pipeline per generation: one normally, two while a re-index fills the next model's.
    const supervisor = new GenerationSupervisor(config, { roles, logger, metrics, onFatal });
    await supervisor.start();
    pipeline = supervisor;
  } catch (error) {
    logger.fatal({ err: (error as Error).message, code: (error as { code?: string }).code }, 'could not start: fix what the error names (a setting, Redis, Kafka or the sink unreachable), then start it again');
    await metricsServer?.close();
    process.exit(1);
  }
  logger.info({ roles }, 'running');
  const running = pipeline;
  // Published until the drain is over: a draining worker still holds jobs.
  const publishers = startStatusPublishers({ config, roles, metrics, supervisor: running, logger });

  let signals = 0;
  const shutdown = (signal: string, exitCode = 0) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    const graceMs = shutdownGraceMs(config);
    logger.info({ signal, graceMs }, 'draining: requests in flight finish, the rest goes back to the queue (send the signal again to force)');
    draining = true;
    setTimeout(() => {
      logger.error({ graceMs }, 'drain took longer than the grace period: exiting; jobs still held are taken over by other workers after JOB_LOCK_MS');
      process.exit(1);
    }, graceMs).unref();
    void running
      .close()
      .then(() => publishers.close())
      .then(async () => {
        await metricsServer?.close();
        logger.info({ exitCode }, 'stopped');
        logger.flush();
        process.exit(exitCode);
      })
      .catch((error: unknown) => {
        logger.error({ err: (error as Error).message }, 'error while stopping: exiting 1; jobs still held are taken over by other workers after JOB_LOCK_MS');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  stopForFatal = () => shutdown('fatal error', 1);
  if (fatal) stopForFatal();
}

/** Readiness while a process that met a fatal error drains and exits. */
function notReadyAfter(fatal: Error): { readiness(): Readiness } {
  return { readiness: () => ({ ready: false, reasons: [`stopping, to exit non-zero: ${fatal.message}`], embeddings: undefined }) };
}

/**
 * The admin server (metrics, probes, the queue dashboard) when METRICS_PORT is set. A port that
 * cannot be had stops the process before it takes any work: probes would fail it anyway.
 */
async function serveAdmin(config: Config, metrics: Metrics, pipeline: () => { readiness(): Readiness } | undefined, logger: Logger): Promise<AdminServer | undefined> {
  const { metricsPort, metricsHost, dashboard } = config.observability;
  if (metricsPort === undefined) return undefined;
  try {
    return await AdminServer.start({
      host: metricsHost,
      port: metricsPort,
      metrics,
      pipeline,
      dashboard: dashboard.enabled ? { board: createDashboard(config, logger.child({ component: 'dashboard' })), credentials: dashboard.password === undefined ? undefined : { user: dashboard.user, password: dashboard.password } } : undefined,
      logger,
    });
  } catch (error) {
    logger.fatal({ err: (error as Error).message }, 'could not start');
    logger.flush();
    process.exit(1);
  }
}
