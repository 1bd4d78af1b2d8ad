import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * Every setting the indexer reads, in one table: environment variable, schema, default and the
 * sentence the README shows. `scripts/config-table.ts` prints the README's table from this list and
 * a unit test fails when the README falls behind it.
 */
export interface Setting<T> {
  schema: z.ZodType<T>;
  /** As the user would write it in the environment; undefined means "unset" is valid. */
  default: string | undefined;
  doc: string;
  /** Never logged; may also be read from the file named by `<NAME>_FILE`. */
  secret?: boolean;
  group: string;
}

const bool = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), 'expected true or false')
  .transform((v) => ['true', '1', 'yes'].includes(v));
const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .trim()
    .regex(/^-?\d+$/, 'expected a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
const list = z
  .string()
  .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(z.string()).min(1, 'expected at least one entry'));
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()));
const httpUrl = z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// URL' });
const urlList = z
  .string()
  .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean))
  .pipe(z.array(httpUrl));
const optionalList = z
  .string()
  .optional()
  .transform((v) => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean));
const name = z.string().trim().regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, ".", "_" and "-" only');

/** An address to listen on: an IP (brackets around IPv6 dropped) or a host name. */
const listenHost = z
  .string()
  .trim()
  .transform((v) => v.replace(/^\[(.*)\]$/, '$1'))
  .refine((v) => isIP(v) !== 0 || /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(v), 'expected an IP address (127.0.0.1, 0.0.0.0, ::) or a host name');

function setting<T>(group: string, schema: z.ZodType<T>, defaultValue: string | undefined, doc: string, secret = false): Setting<T> {
  return { group, schema, default: defaultValue, doc, secret };
}

export const SETTINGS = {
  // Kafka ingest
  KAFKA_BROKERS: setting('kafka', list, '127.0.0.1:9092', 'Kafka bootstrap servers, comma-separated host:port.'),
  KAFKA_TOPICS: setting('kafka', list, 'catalog.changes', 'Topics holding change events, comma-separated.'),
  KAFKA_GROUP_ID: setting('kafka', name, 'embedding-indexer', 'Consumer group of the ingest role; replicas share it.'),
  KAFKA_CLIENT_ID: setting('kafka', name, 'embedding-indexer', 'Client id sent to the brokers.'),
  KAFKA_SESSION_TIMEOUT_MS: setting('kafka', int(6000, 300000), '30000', 'How long the brokers wait for an ingest consumer\'s heartbeat before giving its partitions to another (6000 is the brokers\' usual minimum). A batch that waits on Redis longer loses its partition to a rebalance and is read again; nothing is lost.'),
  KAFKA_FETCH_MIN_BYTES: setting('kafka', int(1, 10_485_760), '65536', 'The broker answers an ingest fetch once it holds this many bytes (or KAFKA_FETCH_MAX_WAIT_MS passed): at a modest rate, events then arrive in batches large enough to make embed jobs worth their Redis round trips. 1 answers at once with whatever is there.'),
  KAFKA_FETCH_MAX_WAIT_MS: setting('kafka', int(10, 10_000), '100', 'The longest the broker holds an ingest fetch waiting for KAFKA_FETCH_MIN_BYTES: the most it adds to an event\'s latency, and how often an idle consumer fetches again (below 10 it fetches in a busy loop). At most half of KAFKA_SESSION_TIMEOUT_MS: the consumer heartbeats only between fetches.'),
  KAFKA_PARTITIONS_AT_ONCE: setting('kafka', int(1, 1000), '16', 'Partitions whose batches ingest handles at once. The batches of one fetch handled together are offered to the item state and cut into embed jobs as one round, so at a modest rate over many partitions a job holds several partitions\' events instead of one\'s. Each batch in hand holds up to 1 MiB of events.'),
  KAFKA_FROM_BEGINNING: setting('kafka', bool, 'true', 'A new consumer group starts at the earliest offset (false: only new events).'),
  KAFKA_SSL: setting('kafka', bool, 'false', 'Connect to the brokers over TLS.'),
  KAFKA_SASL_MECHANISM: setting('kafka', z.enum(['none', 'plain', 'scram-sha-256', 'scram-sha-512']), 'none', 'SASL mechanism for the brokers.'),
  KAFKA_SASL_USERNAME: setting('kafka', optionalString, undefined, 'SASL user name.'),
  KAFKA_SASL_PASSWORD: setting('kafka', optionalString, undefined, 'SASL password (or KAFKA_SASL_PASSWORD_FILE).', true),

  // Redis / queues
  REDIS_URL: setting('redis', z.string().regex(/^rediss?:\/\//, 'expected redis://[user:password@]host:port[/db] or rediss://'), 'redis://127.0.0.1:6379', 'Redis holding the queues; a password in the URL is redacted in logs.', true),
  QUEUE_PREFIX: setting('redis', name, 'indexer', 'Prefix of every Redis key the indexer writes; separate deployments on one Redis need different prefixes.'),
  QUEUE_HIGH_WATER: setting('redis', int(1), '64', 'Ingest pauses while the embed and write queues together hold more waiting jobs than this, and resumes below it. Each job is bounded (EMBED_JOB_MAX_ITEMS and EMBED_JOB_MAX_BYTES; a write job holds one embeddings request), so this bounds the Redis memory a backlog takes.'),
  TOMBSTONE_RETENTION_SECONDS: setting('redis', int(1), '604800', 'How long a deleted item\'s tombstone (its delete version) is kept; a late upsert older than the delete is ignored while it lasts. Set it longer than any replay or redelivery delay.'),
  REDIS_MIN_REPLICAS: setting('redis', int(0, 100), '0', 'Replicas that must have received (WAIT) the jobs of a Kafka batch before ingest commits its offsets; until they have, ingest holds the batch and reports not ready. 0: no replica is awaited (the primary\'s own AOF fsync still is, on Redis 7.2+ with appendonly yes, by WAITAOF).'),
  REDIS_DURABILITY_TIMEOUT_MS: setting('redis', int(10, 600000), '5000', 'Longest one WAIT / WAITAOF may block before ingest tries again (the batch stays uncommitted meanwhile).'),
  JOB_ATTEMPTS: setting('redis', int(1, 100), '8', 'Attempts per embed or write job; an item still failing at the last attempt goes to the dead-letter store alone (its batch-mates are not held back).'),
  JOB_BACKOFF_MS: setting('redis', int(1), '1000', 'First retry delay of a job whose items failed; doubles per attempt.'),
  JOB_LOCK_MS: setting('redis', int(1000), '30000', 'How long a job stays locked to a worker that stops renewing the lock (renewed every half of it while the worker lives): after a crash, its jobs are taken over this long later.'),
  JOB_STALL_LIMIT: setting('redis', int(0, 1000), '5', 'Times a job may stall (its worker died or hung past its lock) and run again; past this its items go to the dead-letter store with code JOB_STALLED.'),

  // Change-event mapping
  EVENT_ID_FIELD: setting('events', z.string().min(1), 'id', 'Field holding the item id (dotted paths allowed, e.g. "after.sku").'),
  EVENT_OP_FIELD: setting('events', z.string().min(1), 'op', 'Field holding the operation ("upsert" or "delete"; absent means upsert).'),
  EVENT_VERSION_FIELD: setting('events', z.string().min(1), 'version', 'Field holding the per-item monotonic version (integer).'),
  EVENT_UPDATED_AT_FIELD: setting('events', z.string().min(1), 'updated_at', 'Field holding the change time (ISO 8601); orders events that carry no version.'),
  EVENT_TEXT_FIELD: setting('events', z.string().min(1), 'text', 'Field holding the text to embed, when EVENT_TEXT_TEMPLATE is unset.'),
  EVENT_TEXT_TEMPLATE: setting('events', optionalString, undefined, 'Builds the text from fields instead, e.g. "{fields.title}\\n{fields.description}". A missing field renders as empty.'),
  EVENT_METADATA_FIELD: setting('events', z.string().min(1), 'metadata', 'Field holding the metadata stored as payload beside the vector.'),
  EVENT_MAX_BYTES: setting('events', int(64), '1048576', 'Larger events go to the dead-letter store.'),
  EVENT_FORMAT: setting('events', z.enum(['auto', 'plain', 'debezium']), 'auto', 'How Kafka values are read: "plain" change events; "debezium" envelopes (before/after/op/source, schema-wrapped or not: the row of `after`, or of `before` for a delete, is the event, ordered by source.lsn, else source.ts_ms; null-value tombstones are skipped; a truncate deletes the table\'s items); "auto" tells them apart by shape (an `op` of c/u/d/r/t with `source.connector`). Keys may be the plain id or a struct such as {"id":123}, schema-wrapped or not, except with "plain".'),

  // Embeddings
  EMBEDDINGS_PROVIDER: setting('embeddings', z.enum(['auto', 'openai', 'local']), 'auto', '"openai" (any OpenAI-compatible /v1/embeddings), "local" (offline hashing embedder, lexical only), or "auto": openai when EMBEDDINGS_BASE_URL or EMBEDDINGS_API_KEY is set, else local.'),
  EMBEDDINGS_PRESET: setting('embeddings', z.enum(['openai', 'azure', 'ollama', 'tei', 'vllm']), 'openai', 'Dialect of the OpenAI-compatible server: openai (Bearer key), azure (api-key header, deployment URL, api-version), ollama (float answers), tei (Hugging Face Text Embeddings Inference), vllm.'),
  EMBEDDINGS_AZURE_DEPLOYMENT: setting('embeddings', optionalString, undefined, 'Azure OpenAI deployment name (EMBEDDINGS_PRESET=azure); EMBEDDINGS_BASE_URL is then https://<resource>.openai.azure.com.'),
  EMBEDDINGS_AZURE_API_VERSION: setting('embeddings', z.string().min(1), '2024-10-21', 'Azure OpenAI api-version query parameter.'),
  EMBEDDINGS_BASE_URL: setting('embeddings', httpUrl.optional(), undefined, 'Base URL of the OpenAI-compatible API, up to and including /v1 (default https://api.openai.com/v1 for the openai provider).'),
  EMBEDDINGS_API_KEY: setting('embeddings', optionalString, undefined, 'API key, sent as a Bearer token (or EMBEDDINGS_API_KEY_FILE).', true),
  EMBEDDINGS_MODEL: setting('embeddings', z.string().min(1).optional(), undefined, 'Model name (default text-embedding-3-small for openai, local-hash-v1 for local).'),
  EMBEDDINGS_DIMENSIONS: setting('embeddings', int(1, 65536).optional(), undefined, 'Vector size (default 1536 for openai, 384 for local). Sent to the API as "dimensions" when set explicitly.'),
  EMBEDDINGS_BATCH_SIZE: setting('embeddings', int(1, 2048), '128', 'Most inputs per embeddings request.'),
  EMBEDDINGS_MAX_INPUT_TOKENS: setting('embeddings', int(1, 1_000_000), '8192', 'Longer texts are cut to this many tokens (counted with EMBEDDINGS_TOKENIZER) before hashing and embedding; recorded as truncated in the payload.'),
  EMBEDDINGS_TRUNCATE: setting('embeddings', z.enum(['head', 'head_tail']), 'head', 'What a cut keeps: the start, or the start and the end.'),
  EMBEDDINGS_TOKENIZER: setting('embeddings', z.enum(['cl100k_base', 'o200k_base']), 'cl100k_base', 'Tokenizer used to count and cut (cl100k_base is text-embedding-3 and ada-002\'s).'),
  EMBEDDINGS_MAX_BATCH_TOKENS: setting('embeddings', int(1), '300000', 'Most tokens per embeddings request (OpenAI allows 300k).'),
  EMBEDDINGS_PRICES: setting('embeddings', z.string().regex(/^\s*$|^\s*[^=,]+=\d+(\.\d+)?\s*(,\s*[^=,]+=\d+(\.\d+)?\s*)*$/, 'expected model=price pairs, e.g. "my-model=0.05,other=0.1"').optional(), undefined, 'USD per million tokens by model, over the built-in OpenAI prices; used for the estimated cost in metrics and `indexer usage`.'),
  EMBEDDINGS_TIMEOUT_MS: setting('embeddings', int(100), '60000', 'Timeout of one embeddings request.'),
  EMBEDDINGS_RPM: setting('embeddings', int(1).optional(), undefined, 'Requests per minute to each endpoint, shared by every replica through Redis (token bucket). Unset: the provider\'s x-ratelimit-limit-requests when it sends one, else unlimited.'),
  EMBEDDINGS_TPM: setting('embeddings', int(1).optional(), undefined, 'Tokens per minute to each endpoint, shared by every replica; each request reserves its tokens before it is sent and is corrected from usage. Unset: the provider\'s x-ratelimit-limit-tokens, else unlimited.'),
  EMBEDDINGS_ADAPT_RATE_LIMITS: setting('embeddings', bool, 'true', 'Learn limits and remaining budget from x-ratelimit-* response headers (a limit lower than EMBEDDINGS_RPM/TPM wins). false: only the configured limits, and 429s.'),
  EMBEDDINGS_BREAKER_FAILURES: setting('embeddings', int(1), '5', 'Consecutive failed requests (5xx, timeouts, resets, refused key) that open an endpoint\'s circuit: it is not called for the cool-down, and readiness reports it.'),
  EMBEDDINGS_BREAKER_COOLDOWN_MS: setting('embeddings', int(100), '30000', 'How long an open circuit stays open before one probe request is let through.'),
  EMBEDDINGS_FALLBACK_BASE_URLS: setting('embeddings', urlList.optional(), undefined, 'Other base URLs serving the same model, comma-separated, tried in order when the primary fails or its circuit is open. Never another model: its vectors would not be comparable.'),
  EMBEDDINGS_FALLBACK_API_KEYS: setting('embeddings', optionalList, undefined, 'Keys for the fallbacks, comma-separated in the same order (or EMBEDDINGS_FALLBACK_API_KEYS_FILE). One key is used for every fallback; none reuses EMBEDDINGS_API_KEY. Keys without URLs are fallbacks on the primary URL.', true),
  EMBEDDINGS_ENCODING: setting('embeddings', z.enum(['base64', 'float']), 'base64', 'encoding_format asked of the API; every answer is read by its shape either way.'),

  // Sinks
  SINK: setting('sink', z.enum(['auto', 'qdrant', 'lancedb']), 'auto', 'Vector sink: "auto" is qdrant when QDRANT_URL is set, else lancedb.'),
  COLLECTION: setting('sink', name, 'items', 'Qdrant collection (or alias) / LanceDB table name.'),
  VECTOR_DISTANCE: setting('sink', z.enum(['cosine', 'dot', 'euclid']), 'cosine', 'Distance of the collection; an existing collection with another distance stops the writer.'),
  QDRANT_URL: setting('sink', httpUrl.optional(), undefined, 'Qdrant REST URL, e.g. http://127.0.0.1:6333.'),
  QDRANT_API_KEY: setting('sink', optionalString, undefined, 'Qdrant API key (or QDRANT_API_KEY_FILE).', true),
  QDRANT_TIMEOUT_MS: setting('sink', int(100), '30000', 'Timeout of one Qdrant request.'),
  QDRANT_SERVING_ALIAS: setting('sink', z.string().trim().regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, ".", "_" and "-" only').optional(), undefined, 'Qdrant alias that `indexer reindex switch` points at the serving generation\'s collection, atomically: what your search service should query (unset: no alias is kept).'),
  LANCEDB_URI: setting('sink', z.string().min(1), '.data/lancedb', 'LanceDB database directory (local path or object-store URI).'),
  LANCEDB_READ_AHEAD_MIB: setting('sink', int(1, 2048), '64', 'How far ahead of use a LanceDB scan may read, compactions included (LanceDB\'s LANCE_DEFAULT_IO_BUFFER_SIZE, which it reads at every scan: one value for the whole process). LanceDB\'s own, 256 MiB on a local disk (2 GiB on object stores), let each compaction the writer runs every 100 commits raise its RSS by 150-330 MiB on tables of 200k-600k rows.'),
  LANCEDB_CACHE_MIB: setting('sink', int(1, 65536), '32', 'Bound of each of the two caches (file metadata; indexes) of every LanceDB table the process opens. Under LanceDB\'s own bounds (1 GiB, 6 GiB) the metadata cache of a long-lived writer grows by 6-12 MiB every 100 commits, whatever their size, until it holds 1 GiB.'),

  // Workers
  EMBED_JOB_MAX_ITEMS: setting('workers', int(1, 100000), '512', 'Most changes per embed job: ingest turns each Kafka batch into jobs of at most this many changes.'),
  EMBED_JOB_MAX_BYTES: setting('workers', int(1024), '1048576', 'Most bytes of change data per embed job (texts and metadata as queued).'),
  EMBED_CONCURRENCY: setting('workers', int(1, 10000), '32', 'Embed jobs held at once per process; their changes are grouped into embeddings requests of EMBEDDINGS_BATCH_SIZE.'),
  EMBED_BATCH_LINGER_MS: setting('workers', int(0, 60000), '50', 'How long a partial embeddings batch waits for more jobs.'),
  WRITE_CONCURRENCY: setting('workers', int(1, 10000), '32', 'Write jobs (one per embeddings request) held at once per process; their writes are grouped into sink batches.'),
  WRITE_BATCH_SIZE: setting('workers', int(1, 10000).optional(), undefined, 'Most points per sink write (default 2048 for LanceDB, where every write is a commit whose cost grows with the table more than with the batch, and 256 for Qdrant, which advises 64-256 and caps a request at 32 MB).'),
  WRITE_QUEUE_MAX_BYTES: setting('workers', int(65536), '268435456', 'Most bytes the write queue may hold (its jobs carry vectors): while it holds more, embed jobs wait in their queue instead of buying more vectors, so a long sink outage cannot fill Redis. Each process may overshoot by the write jobs its embeddings requests in flight produce.'),
  WRITE_BATCH_LINGER_MS: setting('workers', int(0, 60000), '50', 'How long a partial sink batch waits for more jobs.'),

  // Backfills
  BACKFILL_PAGE_SIZE: setting('backfill', int(1, 100000), '512', 'Rows a backfill reads from its source at a time; each page becomes embed jobs, and the cursor after it is checkpointed.'),
  BACKFILL_MAX_JOBS_IN_FLIGHT: setting('backfill', int(1, 10000), '8', 'Most unfinished embed and write jobs one backfill keeps queued; it reads on as they finish. Backfill jobs run after every waiting live job (a lower priority), and this bound keeps them from holding every worker slot.'),
  BACKFILL_CONCURRENCY: setting('backfill', int(1, 100), '1', 'Backfill jobs one process runs at once.'),
  BATCH_API_MAX_INPUTS: setting('backfill', int(1, 50000), '50000', 'Most rows a Batch API backfill (`backfill start --batch-api`) puts in one batch; OpenAI allows 50,000 embedding inputs per batch.'),
  BATCH_API_POLL_MS: setting('backfill', int(100), '30000', 'How often a Batch API backfill asks whether its batch has finished.'),
  POSTGRES_URL: setting('backfill', optionalString, undefined, 'PostgreSQL connection URL for `postgres:` backfill sources (or POSTGRES_URL_FILE); a password in it is never logged or stored in a job.', true),

  // Observability
  LOG_LEVEL: setting('observability', z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), 'info', 'pino log level.'),
  METRICS_PORT: setting('observability', int(0, 65535).optional(), undefined, 'Serve Prometheus metrics at /metrics, liveness at /healthz and readiness at /readyz (503 with the reasons while the process cannot do its work: Redis away, the sink unreachable, ingest holding a batch it cannot commit yet or stopped for good, every embeddings circuit open), and the queue dashboard at /queues (DASHBOARD_ENABLED), on this port of METRICS_HOST (unset: off).'),
  METRICS_HOST: setting('observability', listenHost, '127.0.0.1', 'Address the metrics/admin server (METRICS_PORT) binds: 127.0.0.1 keeps it, and the queue dashboard, on this machine; 0.0.0.0 (or ::) serves every interface, as Kubernetes needs for probes and scraping, and then the dashboard needs DASHBOARD_PASSWORD or DASHBOARD_ENABLED=false.'),
  DASHBOARD_ENABLED: setting('observability', bool, 'true', 'Serve the bull-board queue dashboard at /queues on the metrics/admin server (only when METRICS_PORT is set). It is read-write: it retries, removes and promotes jobs, and empties and pauses queues.'),
  DASHBOARD_USER: setting('observability', z.string().trim().regex(/^[^:\s]+$/, 'use no spaces and no ":"'), 'indexer', 'User name of the dashboard\'s Basic auth (asked only when DASHBOARD_PASSWORD is set).'),
  DASHBOARD_PASSWORD: setting('observability', optionalString, undefined, 'Password of the dashboard (or DASHBOARD_PASSWORD_FILE): Basic auth as DASHBOARD_USER, or "Authorization: Bearer <password>" for scripts. Required when METRICS_HOST is not a loopback address; on loopback, unset means no login. /metrics, /healthz and /readyz never ask for it.', true),
} satisfies Record<string, Setting<unknown>>;

export type SettingName = keyof typeof SETTINGS;
export type SettingValues = { [K in SettingName]: z.output<(typeof SETTINGS)[K]['schema']> };

/** Reads `<NAME>_FILE` for secrets (Docker/Kubernetes secrets), trailing newline removed. */
export function rawValue(env: NodeJS.ProcessEnv, key: SettingName): string | undefined {
  const direct = env[key];
  if (direct !== undefined && direct !== '') return direct;
  const file = SETTINGS[key].secret ? env[`${key}_FILE`] : undefined;
  if (file) return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  return SETTINGS[key].default;
}
