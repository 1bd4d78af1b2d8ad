import type { Config } from '../config/config.js';
import { LocalHashProvider } from './local-hash-provider.js';
import { OpenAIProvider } from './openai-provider.js';
import type { EmbeddingProvider } from './provider.js';

export function createProvider(config: Config['embeddings']): EmbeddingProvider {
  if (config.provider === 'local') return new LocalHashProvider(config.model, config.dimensions);
  const azure = config.preset === 'azure' && config.azure ? config.azure : undefined;
  return new OpenAIProvider({
    baseUrl: config.baseUrl,
    url: azure ? `${config.baseUrl}/openai/deployments/${encodeURIComponent(azure.deployment)}/embeddings?api-version=${encodeURIComponent(azure.apiVersion)}` : undefined,
    auth: azure ? 'api-key' : 'bearer',
    apiKey: config.apiKey,
    model: config.model,
    dimensions: config.dimensions,
    sendDimensions: config.sendDimensions,
    encoding: config.encoding,
    timeoutMs: config.timeoutMs,
  });
}
