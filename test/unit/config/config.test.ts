import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeConfig, loadConfig, redactUrl } from '../../../src/config/config.js';
import { SETTINGS } from '../../../src/config/settings.js';
import { ConfigError } from '../../../src/core/errors.js';

function problemsOf(env: Record<string, string>): { variable: string; message: string }[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error('expected the config to be refused');
}

describe('loadConfig', () => {
  it('runs on an empty environment with the local defaults', () => {
    const config = loadConfig({});
    expect(config.kafka.brokers).toEqual(['127.0.0.1:9092']);
    expect(config.redis.url).toBe('redis://127.0.0.1:6379');
    expect(config.embeddings).toMatchObject({ provider: 'local', model: 'local-hash-v1', dimensions: 384 });
    expect(config.sink).toMatchObject({ kind: 'lancedb', collection: 'items', distance: 'cosine' });
  });

  it('chooses the OpenAI-compatible provider and Qdrant when their settings are present', () => {
    const config = loadConfig({ EMBEDDINGS_BASE_URL: 'http://127.0.0.1:8080/v1/', QDRANT_URL: 'http://127.0.0.1:6333' });
    expect(config.embeddings).toMatchObject({ provider: 'openai', baseUrl: 'http://127.0.0.1:8080/v1', model: 'text-embedding-3-small', dimensions: 1536, sendDimensions: false });
    expect(config.sink.kind).toBe('qdrant');
  });

  it('names every bad variable with the fix, all at once', () => {
    const problems = problemsOf({ EMBED_CONCURRENCY: 'lots', VECTOR_DISTANCE: 'hamming', KAFKA_FROM_BEGINNING: 'maybe' });
    expect(problems.map((p) => p.variable).sort()).toEqual(['EMBED_CONCURRENCY', 'KAFKA_FROM_BEGINNING', 'VECTOR_DISTANCE']);
    expect(problems.find((p) => p.variable === 'EMBED_CONCURRENCY')?.message).toMatch(/whole number.*"lots".*default "32"/);
  });

  it("bounds LanceDB's read-ahead to 64 MiB unless told otherwise, and refuses 0", () => {
    expect(loadConfig({}).sink.lancedb.readAheadBytes).toBe(64 * 2 ** 20);
    expect(loadConfig({ LANCEDB_READ_AHEAD_MIB: '16' }).sink.lancedb.readAheadBytes).toBe(16 * 2 ** 20);
    expect(problemsOf({ LANCEDB_READ_AHEAD_MIB: '0' })).toEqual([expect.objectContaining({ variable: 'LANCEDB_READ_AHEAD_MIB' })]);
  });

  it("bounds each of LanceDB's caches to 32 MiB unless told otherwise, and refuses 0", () => {
    expect(loadConfig({}).sink.lancedb.cacheBytes).toBe(32 * 2 ** 20);
    expect(loadConfig({ LANCEDB_CACHE_MIB: '4' }).sink.lancedb.cacheBytes).toBe(4 * 2 ** 20);
    expect(problemsOf({ LANCEDB_CACHE_MIB: '0' })).toEqual([expect.objectContaining({ variable: 'LANCEDB_CACHE_MIB' })]);
  });

  it('requires a dimension for a model it does not know', () => {
    expect(problemsOf({ EMBEDDINGS_BASE_URL: 'http://127.0.0.1:1/v1', EMBEDDINGS_MODEL: 'my-model' })).toEqual([
      expect.objectContaining({ variable: 'EMBEDDINGS_DIMENSIONS' }),
    ]);
  });

  it('requires an API key for api.openai.com and QDRANT_URL for SINK=qdrant', () => {
    expect(problemsOf({ EMBEDDINGS_PROVIDER: 'openai', SINK: 'qdrant' }).map((p) => p.variable).sort()).toEqual(['EMBEDDINGS_API_KEY', 'QDRANT_URL']);
  });

  it('never shows a secret in its error, and reads secrets from *_FILE', () => {
    const problems = problemsOf({ REDIS_URL: 'http://user:hunter2@host' });
    expect(JSON.stringify(problems)).not.toContain('hunter2');
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    writeFileSync(join(dir, 'key'), 'sk-from-file\n');
    const config = loadConfig({ EMBEDDINGS_API_KEY_FILE: join(dir, 'key') });
    expect(config.embeddings.apiKey).toBe('sk-from-file');
    expect(config.embeddings.provider).toBe('openai');
    expect(JSON.stringify(describeConfig(config))).not.toContain('sk-from-file');
  });

  it('pairs fallback URLs with keys, and refuses counts that do not match', () => {
    const base = { EMBEDDINGS_BASE_URL: 'http://primary/v1', EMBEDDINGS_API_KEY: 'sk-primary', EMBEDDINGS_MODEL: 'm', EMBEDDINGS_DIMENSIONS: '8' };
    expect(loadConfig({ ...base, EMBEDDINGS_FALLBACK_BASE_URLS: 'http://a/v1/, http://b/v1' }).embeddings.fallbacks).toEqual([
      { baseUrl: 'http://a/v1', apiKey: 'sk-primary' },
      { baseUrl: 'http://b/v1', apiKey: 'sk-primary' },
    ]);
    expect(loadConfig({ ...base, EMBEDDINGS_FALLBACK_API_KEYS: 'sk-other-org' }).embeddings.fallbacks).toEqual([{ baseUrl: 'http://primary/v1', apiKey: 'sk-other-org' }]);
    expect(() => loadConfig({ ...base, EMBEDDINGS_FALLBACK_BASE_URLS: 'http://a/v1,http://b/v1,http://c/v1', EMBEDDINGS_FALLBACK_API_KEYS: 'k1,k2' })).toThrow(/EMBEDDINGS_FALLBACK_API_KEYS: has 2 keys for 3/);
    expect(() => loadConfig({ ...base, EMBEDDINGS_FALLBACK_BASE_URLS: 'ftp://a' })).toThrow(/EMBEDDINGS_FALLBACK_BASE_URLS: expected an http/);
    const described = JSON.stringify(describeConfig(loadConfig({ ...base, EMBEDDINGS_FALLBACK_API_KEYS: 'sk-secret-fallback' })));
    expect(described).not.toContain('sk-secret-fallback');
  });

  it('redacts passwords in URLs', () => {
    expect(redactUrl('redis://default:s3cret@redis:6379/0')).toBe('redis://default:[redacted]@redis:6379/0');
    expect(JSON.stringify(describeConfig(loadConfig({ REDIS_URL: 'redis://u:s3cret@h:6379' })))).not.toContain('s3cret');
  });
});

describe('README', () => {
  it('documents every setting with its default', () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    for (const [name, setting] of Object.entries(SETTINGS)) {
      const row = readme.split('\n').find((line) => line.startsWith(`| \`${name}\` `));
      expect(row, `README lacks a row for ${name} (run: npx tsx scripts/config-table.ts)`).toBeDefined();
      if (setting.default !== undefined) expect(row).toContain(`\`${setting.default}\``);
    }
  });
});

// kafkajs heartbeats only between fetches: a fetch the broker holds longer than the session
// timeout makes the group drop the consumer on every idle poll (measured on the test broker:
// KAFKA_SESSION_TIMEOUT_MS=6000 with KAFKA_FETCH_MAX_WAIT_MS=10000 re-joined the group every 10 s).
// A wait of 0 turns an idle consumer into a busy loop (measured: ~1,000 fetches a second).
describe('KAFKA_FETCH_MAX_WAIT_MS', () => {
  it('is refused when the broker would hold a fetch past half the session timeout, naming both settings', () => {
    const problems = problemsOf({ KAFKA_SESSION_TIMEOUT_MS: '6000', KAFKA_FETCH_MAX_WAIT_MS: '10000' });
    expect(problems.map((p) => p.variable)).toContain('KAFKA_FETCH_MAX_WAIT_MS');
    expect(problems.find((p) => p.variable === 'KAFKA_FETCH_MAX_WAIT_MS')?.message).toContain('KAFKA_SESSION_TIMEOUT_MS');
  });

  it('is refused at 0, which makes an idle consumer fetch in a busy loop', () => {
    expect(problemsOf({ KAFKA_FETCH_MAX_WAIT_MS: '0' }).map((p) => p.variable)).toContain('KAFKA_FETCH_MAX_WAIT_MS');
  });

  it('takes the default and any wait within half the session timeout', () => {
    expect(loadConfig({}).kafka.fetchMaxWaitMs).toBe(100);
    expect(loadConfig({ KAFKA_SESSION_TIMEOUT_MS: '30000', KAFKA_FETCH_MAX_WAIT_MS: '10000' }).kafka.fetchMaxWaitMs).toBe(10_000);
  });
});
