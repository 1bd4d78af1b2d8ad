/** Each provider preset against the stub speaking that server's dialect. */
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { ConfigError, EmbeddingsError } from '../../../src/core/errors.js';
import { createProvider } from '../../../src/embed/create-provider.js';
import { EmbeddingsStub, stubVector, type EmbeddingsStubOptions } from '../../support/embeddings-stub.js';

let stub: EmbeddingsStub | undefined;
afterEach(() => stub?.stop());

async function serve(options: EmbeddingsStubOptions): Promise<string> {
  stub = new EmbeddingsStub({ dimensions: 8, ...options });
  return stub.start();
}

describe('provider presets', () => {
  it('azure: deployment URL with api-version, api-key header, base64', async () => {
    const v1 = await serve({ dialect: 'azure', apiKey: 'azure-key' });
    const endpoint = v1.replace(/\/v1$/, '');
    const provider = createProvider(loadConfig({ EMBEDDINGS_PRESET: 'azure', EMBEDDINGS_BASE_URL: endpoint, EMBEDDINGS_AZURE_DEPLOYMENT: 'emb-small', EMBEDDINGS_API_KEY: 'azure-key', EMBEDDINGS_MODEL: 'emb-small', EMBEDDINGS_DIMENSIONS: '8' }).embeddings);
    const { vectors } = await provider.embed(['azure text']);
    expect(Array.from(vectors[0] as Float32Array)).toEqual(Array.from(stubVector('azure text', 8, 'emb-small')));
    expect(stub?.requests[0]).toMatchObject({ encoding: 'base64', model: 'emb-small' });
    await provider.close();
  });

  it('azure: refuses to start without a deployment', () => {
    expect(() => loadConfig({ EMBEDDINGS_PRESET: 'azure', EMBEDDINGS_BASE_URL: 'https://x.openai.azure.com', EMBEDDINGS_API_KEY: 'k' })).toThrow(ConfigError);
  });

  it('ollama: asks for floats and reads them', async () => {
    const baseUrl = await serve({ dialect: 'ollama' });
    const config = loadConfig({ EMBEDDINGS_PRESET: 'ollama', EMBEDDINGS_BASE_URL: baseUrl, EMBEDDINGS_MODEL: 'nomic-embed-text', EMBEDDINGS_DIMENSIONS: '8' });
    expect(config.embeddings.encoding).toBe('float');
    const provider = createProvider(config.embeddings);
    const { vectors } = await provider.embed(['ollama text']);
    expect(Array.from(vectors[0] as Float32Array)).toEqual(Array.from(stubVector('ollama text', 8, 'nomic-embed-text')));
    await provider.close();
  });

  it('tei: reads its flat error bodies', async () => {
    const baseUrl = await serve({ dialect: 'tei', rejectMarker: 'TOO LONG' });
    const provider = createProvider(loadConfig({ EMBEDDINGS_PRESET: 'tei', EMBEDDINGS_BASE_URL: baseUrl, EMBEDDINGS_MODEL: 'bge-small', EMBEDDINGS_DIMENSIONS: '8' }).embeddings);
    expect((await provider.embed(['fine'])).vectors).toHaveLength(1);
    const error = await provider.embed(['TOO LONG input']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EmbeddingsError);
    expect(error).toMatchObject({ code: 'EMBEDDINGS_REJECTED', canRetry: false });
    expect((error as Error).message).toContain('maximum context length');
    await provider.close();
  });

  it('vllm: the OpenAI wire format with base64', async () => {
    const baseUrl = await serve({ dialect: 'openai' });
    const provider = createProvider(loadConfig({ EMBEDDINGS_PRESET: 'vllm', EMBEDDINGS_BASE_URL: baseUrl, EMBEDDINGS_MODEL: 'intfloat/e5-small', EMBEDDINGS_DIMENSIONS: '8' }).embeddings);
    const { vectors } = await provider.embed(['vllm text']);
    expect(Array.from(vectors[0] as Float32Array)).toEqual(Array.from(stubVector('vllm text', 8, 'intfloat/e5-small')));
    expect(stub?.requests[0]?.encoding).toBe('base64');
    await provider.close();
  });
});
