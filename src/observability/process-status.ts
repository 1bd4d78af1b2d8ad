import { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import { createKafka } from '../ingest/kafka.js';
import type { Role } from '../pipeline/pipeline.js';
import type { GenerationSupervisor } from '../reindex/generation-supervisor.js';
import { KafkaLagReader } from './kafka-lag.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { QueueSampler } from './queue-sampler.js';
import { WorkerHeartbeat } from './worker-heartbeat.js';

export interface StatusPublishers {
  readonly heartbeat: WorkerHeartbeat;
  readonly sampler: QueueSampler;
  /** Stops both and removes this worker's heartbeat. Idempotent. */
  close(): Promise<void>;
}

/**
 * What a worker process publishes for the operator: its heartbeat (`indexer status`) and the
 * queue and lag gauges (Prometheus), on a Redis connection of their own that fails commands
 * fast while Redis is away (the pipeline's connections wait it out; these just skip a beat), so
 * that a drain never waits on them.
 */
export function startStatusPublishers(options: { config: Config; roles: readonly Role[]; metrics: Metrics; supervisor: GenerationSupervisor; logger: Logger }): StatusPublishers {
  const { config, roles, metrics, supervisor, logger } = options;
  const redis = new Redis(config.redis.url, { maxRetriesPerRequest: 1, connectionName: 'indexer-status' });
  // Each publisher reports its own failures, once per outage.
  redis.on('error', () => undefined);
  const heartbeat = new WorkerHeartbeat({ redis, prefix: config.redis.prefix, roles, metrics, snapshot: () => supervisor.snapshot(), logger });
  const lag = roles.includes('ingest') ? new KafkaLagReader(createKafka(config.kafka, logger)) : undefined;
  const sampler = new QueueSampler({ config, redis, metrics, lag, logger });
  heartbeat.start();
  sampler.start();
  let closing: Promise<void> | undefined;
  return {
    heartbeat,
    sampler,
    close: () =>
      (closing ??= (async () => {
        await Promise.allSettled([heartbeat.close(), sampler.close()]);
        redis.disconnect();
      })()),
  };
}
