import { loadConfig, type Config } from '../config/config.js';
import { ConfigError } from '../core/errors.js';
import { createProvider } from '../embed/create-provider.js';
import type { EmbeddingProvider } from '../embed/provider.js';
import { createSink } from '../sinks/create-sink.js';
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
