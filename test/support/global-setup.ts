import { spawnSync } from 'node:child_process';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string;
    redisUrl: string;
    postgresUrl: string;
  }
}

/**
 * Starts Redis, Kafka and PostgreSQL through the project's own scripts (or reuses the ones REDIS_URL and
 * KAFKA_BROKERS point at). Services stay up after the run: the next run reuses them, and every
 * test uses its own topics, groups and queue prefixes, so no state carries over.
 */
export default function setup(project: TestProject): void {
  const result = spawnSync('bash', ['scripts/services/up.sh', 'redis', 'kafka', 'postgres'], { stdio: 'inherit', env: process.env });
  if (result.status !== 0) throw new Error('could not start Redis, Kafka and PostgreSQL (scripts/services/up.sh failed; see above)');
  project.provide('kafkaBrokers', process.env.KAFKA_BROKERS ?? '127.0.0.1:9092');
  project.provide('redisUrl', process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  project.provide('postgresUrl', process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:54320/postgres');
}
