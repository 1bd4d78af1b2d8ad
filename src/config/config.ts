import { ConfigError } from '../core/errors.js';
import { parsePrices } from '../embed/usage.js';
import { isLoopbackHost } from '../observability/admin-guard.js';
import { rawValue, SETTINGS, type SettingName, type SettingValues } from './settings.js';

export type Distance = 'cosine' | 'dot' | 'euclid';

/** The compiled configuration every component receives: validated once, defaults resolved. */
export interface Config {
  kafka: {
    brokers: string[];
    topics: string[];
    groupId: string;
    clientId: string;
    fromBeginning: boolean;
    sessionTimeoutMs: number;
    /** The broker holds a fetch until this many bytes are there, or fetchMaxWaitMs passed. */
    fetchMinBytes: number;
    fetchMaxWaitMs: number;
    /** Partitions' batches handled at once, and enqueued together (BatchRounds). */
    partitionsAtOnce: number;
    ssl: boolean;
    sasl: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string; password: string } | undefined;
  };
  redis: { url: string; prefix: string; highWater: number; minReplicas: number; durabilityTimeoutMs: number; jobAttempts: number; jobBackoffMs: number; jobStallLimit: number; jobLockMs: number; tombstoneRetentionSeconds: number };
  events: {
    idField: string;
    opField: string;
    versionField: string;
    updatedAtField: string;
    textField: string;
    textTemplate: string | undefined;
    metadataField: string;
    maxBytes: number;
    format: 'auto' | 'plain' | 'debezium';
  };
  embeddings: {
    provider: 'openai' | 'local';
    preset: 'openai' | 'azure' | 'ollama' | 'tei' | 'vllm';
    /** Azure only: the deployment and api-version that make up its URL. */
    azure: { deployment: string; apiVersion: string } | undefined;
    baseUrl: string;
    apiKey: string | undefined;
    model: string;
    dimensions: number;
    /** Send `dimensions` in the request: only when the user chose it (not every server accepts it). */
    sendDimensions: boolean;
    batchSize: number;
    maxBatchTokens: number;
    maxInputTokens: number;
    truncate: 'head' | 'head_tail';
    tokenizer: 'cl100k_base' | 'o200k_base';
    timeoutMs: number;
    encoding: 'base64' | 'float';
    /** USD per million tokens by model. */
    prices: Record<string, number>;
    /** Same model behind other URLs or keys, tried in order after the primary. */
    fallbacks: { baseUrl: string; apiKey: string | undefined }[];
    rateLimits: { rpm: number | undefined; tpm: number | undefined; adaptToHeaders: boolean };
    breaker: { failures: number; cooldownMs: number };
  };
  sink: {
    kind: 'qdrant' | 'lancedb';
    collection: string;
    distance: Distance;
    qdrant: { url: string; apiKey: string | undefined; timeoutMs: number; servingAlias: string | undefined } | undefined;
    lancedb: { uri: string; readAheadBytes: number; cacheBytes: number };
  };
  workers: {
    embedJobMaxItems: number;
    embedJobMaxBytes: number;
    embedConcurrency: number;
    embedLingerMs: number;
    writeConcurrency: number;
    writeBatchSize: number;
    writeLingerMs: number;
    writeQueueMaxBytes: number;
  };
  backfill: { pageSize: number; maxJobsInFlight: number; concurrency: number; postgresUrl: string | undefined; batchApiMaxInputs: number; batchApiPollMs: number };
  observability: {
    logLevel: string;
    metricsPort: number | undefined;
    /** What the metrics/admin server binds: loopback unless configured otherwise. */
    metricsHost: string;
    /** The bull-board queue dashboard on the admin server; `password` undefined: no login (loopback only). */
    dashboard: { enabled: boolean; user: string; password: string | undefined };
  };
}

export const LOCAL_MODEL = 'local-hash-v1';
export const LOCAL_DIMENSIONS = 384;
export const OPENAI_DEFAULT_MODEL = 'text-embedding-3-small';
export const OPENAI_DEFAULT_BASE_URL = 'https://api.openai.com/v1';
/** Native sizes of well-known models, so the dimension need not be configured for them. */
const KNOWN_DIMENSIONS: Record<string, number> = {
  'text-embedding-3-small': 1536,
  'text-embedding-3-large': 3072,
  'text-embedding-ada-002': 1536,
};

function parseSettings(env: NodeJS.ProcessEnv): SettingValues {
  const problems: { variable: string; message: string }[] = [];
  const values: Record<string, unknown> = {};
  for (const key of Object.keys(SETTINGS) as SettingName[]) {
    let raw: string | undefined;
    try {
      raw = rawValue(env, key);
    } catch (error) {
      problems.push({ variable: `${key}_FILE`, message: `cannot read the file: ${(error as Error).message}` });
      continue;
    }
    const parsed = SETTINGS[key].schema.safeParse(raw);
    if (parsed.success) {
      values[key] = parsed.data;
    } else {
      const shown = SETTINGS[key].secret ? '(secret, not shown)' : JSON.stringify(raw);
      const reason = parsed.error.issues.map((i) => i.message).join('; ');
      const fix = SETTINGS[key].default === undefined ? 'unset it or fix it' : `unset it for the default ${JSON.stringify(SETTINGS[key].default)}`;
      problems.push({ variable: key, message: `${reason}; got ${shown} (${SETTINGS[key].doc} ${fix})` });
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return values as SettingValues;
}

/**
 * Pairs fallback URLs with keys: one key per URL, one key for all, or none (the primary's). Keys
 * alone are the primary URL under other keys (another organisation's quota).
 */
function resolveFallbacks(
  urls: string[],
  keys: string[],
  primaryUrl: string,
  primaryKey: string | undefined,
  problems: { variable: string; message: string }[],
): { baseUrl: string; apiKey: string | undefined }[] {
  if (urls.length === 0) return keys.map((apiKey) => ({ baseUrl: primaryUrl, apiKey }));
  if (keys.length > 1 && keys.length !== urls.length) {
    problems.push({ variable: 'EMBEDDINGS_FALLBACK_API_KEYS', message: `has ${keys.length} keys for ${urls.length} EMBEDDINGS_FALLBACK_BASE_URLS: give one key per URL in the same order, a single key for all, or none to reuse EMBEDDINGS_API_KEY` });
    return [];
  }
  return urls.map((url, i) => ({ baseUrl: url.replace(/\/+$/, ''), apiKey: keys.length === 0 ? primaryKey : keys.length === 1 ? keys[0] : keys[i] }));
}

/** Parses and validates the whole configuration; throws one ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const s = parseSettings(env);
  const problems: { variable: string; message: string }[] = [];

  const provider =
    s.EMBEDDINGS_PROVIDER === 'auto' ? (s.EMBEDDINGS_BASE_URL || s.EMBEDDINGS_API_KEY ? 'openai' : 'local') : s.EMBEDDINGS_PROVIDER;
  const model = s.EMBEDDINGS_MODEL ?? (provider === 'local' ? LOCAL_MODEL : OPENAI_DEFAULT_MODEL);
  const dimensions = s.EMBEDDINGS_DIMENSIONS ?? (provider === 'local' ? LOCAL_DIMENSIONS : KNOWN_DIMENSIONS[model]);
  if (dimensions === undefined) {
    problems.push({ variable: 'EMBEDDINGS_DIMENSIONS', message: `required for model "${model}": set it to the size of its vectors` });
  }
  const baseUrl = (s.EMBEDDINGS_BASE_URL ?? OPENAI_DEFAULT_BASE_URL).replace(/\/+$/, '');
  if (s.EMBEDDINGS_PRESET === 'azure' && (!s.EMBEDDINGS_BASE_URL || !s.EMBEDDINGS_AZURE_DEPLOYMENT)) {
    problems.push({ variable: 'EMBEDDINGS_AZURE_DEPLOYMENT', message: 'EMBEDDINGS_PRESET=azure needs EMBEDDINGS_BASE_URL (https://<resource>.openai.azure.com) and EMBEDDINGS_AZURE_DEPLOYMENT' });
  }
  if (provider === 'openai' && baseUrl === OPENAI_DEFAULT_BASE_URL && !s.EMBEDDINGS_API_KEY) {
    problems.push({ variable: 'EMBEDDINGS_API_KEY', message: 'required for api.openai.com: set it (or EMBEDDINGS_API_KEY_FILE), or set EMBEDDINGS_BASE_URL to your own server' });
  }

  const fallbacks = resolveFallbacks(s.EMBEDDINGS_FALLBACK_BASE_URLS ?? [], s.EMBEDDINGS_FALLBACK_API_KEYS, baseUrl, s.EMBEDDINGS_API_KEY, problems);

  const sinkKind = s.SINK === 'auto' ? (s.QDRANT_URL ? 'qdrant' : 'lancedb') : s.SINK;
  if (sinkKind === 'qdrant' && !s.QDRANT_URL) {
    problems.push({ variable: 'QDRANT_URL', message: 'required when SINK=qdrant: set it to the Qdrant REST URL, e.g. http://127.0.0.1:6333' });
  }

  let sasl: Config['kafka']['sasl'];
  if (s.KAFKA_SASL_MECHANISM !== 'none') {
    if (!s.KAFKA_SASL_USERNAME || !s.KAFKA_SASL_PASSWORD) {
      problems.push({ variable: 'KAFKA_SASL_USERNAME', message: `KAFKA_SASL_MECHANISM=${s.KAFKA_SASL_MECHANISM} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD` });
    } else {
      sasl = { mechanism: s.KAFKA_SASL_MECHANISM, username: s.KAFKA_SASL_USERNAME, password: s.KAFKA_SASL_PASSWORD };
    }
  }
  // kafkajs heartbeats only between fetches: a fetch held past the session timeout drops the consumer from its group on every idle poll.
  if (s.KAFKA_FETCH_MAX_WAIT_MS * 2 > s.KAFKA_SESSION_TIMEOUT_MS) {
    problems.push({ variable: 'KAFKA_FETCH_MAX_WAIT_MS', message: `${s.KAFKA_FETCH_MAX_WAIT_MS} is more than half of KAFKA_SESSION_TIMEOUT_MS=${s.KAFKA_SESSION_TIMEOUT_MS}: the ingest consumer heartbeats only between fetches, and the brokers would drop it from its group while they hold a fetch. Lower KAFKA_FETCH_MAX_WAIT_MS or raise KAFKA_SESSION_TIMEOUT_MS` });
  }
  // The dashboard retries and removes jobs: never served beyond this machine without a login.
  if (s.METRICS_PORT !== undefined && s.DASHBOARD_ENABLED && !s.DASHBOARD_PASSWORD && !isLoopbackHost(s.METRICS_HOST)) {
    problems.push({ variable: 'DASHBOARD_PASSWORD', message: `required when METRICS_HOST=${s.METRICS_HOST} (not a loopback address) serves the read-write queue dashboard: set DASHBOARD_PASSWORD (or DASHBOARD_PASSWORD_FILE), or turn the dashboard off with DASHBOARD_ENABLED=false, or bind METRICS_HOST=127.0.0.1` });
  }
  if (problems.length > 0) throw new ConfigError(problems);

  return {
    kafka: {
      brokers: s.KAFKA_BROKERS,
      topics: s.KAFKA_TOPICS,
      groupId: s.KAFKA_GROUP_ID,
      clientId: s.KAFKA_CLIENT_ID,
      fromBeginning: s.KAFKA_FROM_BEGINNING,
      sessionTimeoutMs: s.KAFKA_SESSION_TIMEOUT_MS,
      fetchMinBytes: s.KAFKA_FETCH_MIN_BYTES,
      fetchMaxWaitMs: s.KAFKA_FETCH_MAX_WAIT_MS,
      partitionsAtOnce: s.KAFKA_PARTITIONS_AT_ONCE,
      ssl: s.KAFKA_SSL,
      sasl,
    },
    redis: {
      url: s.REDIS_URL,
      prefix: s.QUEUE_PREFIX,
      highWater: s.QUEUE_HIGH_WATER,
      minReplicas: s.REDIS_MIN_REPLICAS,
      durabilityTimeoutMs: s.REDIS_DURABILITY_TIMEOUT_MS,
      jobAttempts: s.JOB_ATTEMPTS,
      jobBackoffMs: s.JOB_BACKOFF_MS,
      jobStallLimit: s.JOB_STALL_LIMIT,
      jobLockMs: s.JOB_LOCK_MS,
      tombstoneRetentionSeconds: s.TOMBSTONE_RETENTION_SECONDS,
    },
    events: {
      idField: s.EVENT_ID_FIELD,
      opField: s.EVENT_OP_FIELD,
      versionField: s.EVENT_VERSION_FIELD,
      updatedAtField: s.EVENT_UPDATED_AT_FIELD,
      textField: s.EVENT_TEXT_FIELD,
      textTemplate: s.EVENT_TEXT_TEMPLATE?.replace(/\\n/g, '\n').replace(/\\t/g, '\t'),
      metadataField: s.EVENT_METADATA_FIELD,
      maxBytes: s.EVENT_MAX_BYTES,
      format: s.EVENT_FORMAT,
    },
    embeddings: {
      provider,
      preset: s.EMBEDDINGS_PRESET,
      azure: s.EMBEDDINGS_PRESET === 'azure' ? { deployment: s.EMBEDDINGS_AZURE_DEPLOYMENT as string, apiVersion: s.EMBEDDINGS_AZURE_API_VERSION } : undefined,
      baseUrl,
      apiKey: s.EMBEDDINGS_API_KEY,
      model,
      dimensions: dimensions as number,
      sendDimensions: s.EMBEDDINGS_DIMENSIONS !== undefined,
      batchSize: s.EMBEDDINGS_BATCH_SIZE,
      maxBatchTokens: s.EMBEDDINGS_MAX_BATCH_TOKENS,
      maxInputTokens: s.EMBEDDINGS_MAX_INPUT_TOKENS,
      truncate: s.EMBEDDINGS_TRUNCATE,
      tokenizer: s.EMBEDDINGS_TOKENIZER,
      timeoutMs: s.EMBEDDINGS_TIMEOUT_MS,
      prices: parsePrices(s.EMBEDDINGS_PRICES),
      // Ollama and TEI answer floats only: asking them for base64 would be ignored anyway.
      encoding: s.EMBEDDINGS_PRESET === 'ollama' || s.EMBEDDINGS_PRESET === 'tei' ? 'float' : s.EMBEDDINGS_ENCODING,
      fallbacks,
      rateLimits: { rpm: s.EMBEDDINGS_RPM, tpm: s.EMBEDDINGS_TPM, adaptToHeaders: s.EMBEDDINGS_ADAPT_RATE_LIMITS },
      breaker: { failures: s.EMBEDDINGS_BREAKER_FAILURES, cooldownMs: s.EMBEDDINGS_BREAKER_COOLDOWN_MS },
    },
    sink: {
      kind: sinkKind,
      collection: s.COLLECTION,
      distance: s.VECTOR_DISTANCE,
      qdrant: s.QDRANT_URL ? { url: s.QDRANT_URL.replace(/\/+$/, ''), apiKey: s.QDRANT_API_KEY, timeoutMs: s.QDRANT_TIMEOUT_MS, servingAlias: s.QDRANT_SERVING_ALIAS } : undefined,
      lancedb: { uri: s.LANCEDB_URI, readAheadBytes: s.LANCEDB_READ_AHEAD_MIB * 2 ** 20, cacheBytes: s.LANCEDB_CACHE_MIB * 2 ** 20 },
    },
    workers: {
      embedJobMaxItems: s.EMBED_JOB_MAX_ITEMS,
      embedJobMaxBytes: s.EMBED_JOB_MAX_BYTES,
      embedConcurrency: s.EMBED_CONCURRENCY,
      embedLingerMs: s.EMBED_BATCH_LINGER_MS,
      writeConcurrency: s.WRITE_CONCURRENCY,
      writeBatchSize: s.WRITE_BATCH_SIZE ?? (sinkKind === 'lancedb' ? 2048 : 256),
      writeLingerMs: s.WRITE_BATCH_LINGER_MS,
      writeQueueMaxBytes: s.WRITE_QUEUE_MAX_BYTES,
    },
    backfill: { pageSize: s.BACKFILL_PAGE_SIZE, maxJobsInFlight: s.BACKFILL_MAX_JOBS_IN_FLIGHT, concurrency: s.BACKFILL_CONCURRENCY, postgresUrl: s.POSTGRES_URL, batchApiMaxInputs: s.BATCH_API_MAX_INPUTS, batchApiPollMs: s.BATCH_API_POLL_MS },
    observability: {
      logLevel: s.LOG_LEVEL,
      metricsPort: s.METRICS_PORT,
      metricsHost: s.METRICS_HOST,
      dashboard: { enabled: s.DASHBOARD_ENABLED, user: s.DASHBOARD_USER, password: s.DASHBOARD_PASSWORD },
    },
  };
}

/** The config as it may be shown: secrets replaced, passwords cut out of URLs. */
export function describeConfig(config: Config): Record<string, unknown> {
  return JSON.parse(
    JSON.stringify(config, (key, value: unknown) => {
      if (['apiKey', 'password'].includes(key) && value !== undefined) return '[redacted]';
      if ((key === 'url' || key === 'postgresUrl') && typeof value === 'string') return redactUrl(value);
      return value;
    }),
  ) as Record<string, unknown>;
}

export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, (_m, cred: string) => `//${cred.includes(':') ? `${cred.split(':')[0]}:[redacted]` : '[redacted]'}@`);
}
