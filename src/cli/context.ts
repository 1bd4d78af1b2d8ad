import type { Redis } from 'ioredis';
import { loadConfig, type Config } from '../config/config.js';
import { createRedis } from '../queue/connection.js';
import { ConfigError } from '../core/errors.js';
import { createProvider } from '../embed/create-provider.js';
import type { EmbeddingProvider } from '../embed/provider.js';
import { createSink } from '../sinks/create-sink.js';
import { servingConfig } from '../reindex/reindex.js';
import type { VectorSink } from '../sinks/vector-sink.js';

/** Loads the config for a CLI command; a bad setting ends the command with the list of problems. */
export function configOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78);
    }
    throw error;
  }
}

export async function openSink(config: Config): Promise<VectorSink> {
  const sink = createSink(config.sink, config.embeddings.dimensions);
  await sink.open();
  return sink;
}

export function openProvider(config: Config): EmbeddingProvider {
  return createProvider(config.embeddings);
}

/** Runs a command with a Redis connection that is closed afterwards, whatever happens. */
export async function withRedis<T>(config: Config, run: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = createRedis(config.redis.url, 'indexer-cli');
  try {
    return await run(redis);
  } finally {
    await redis.quit();
  }
}

/**
 * The config to read the index with: the serving generation's model, size and collection (the
 * configured ones until a re-index switched generations).
 */
export async function servingConfigOf(config: Config): Promise<Config> {
  return withRedis(config, async (redis) => (await servingConfig(config, redis)).config);
}
