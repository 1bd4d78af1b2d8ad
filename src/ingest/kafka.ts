import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel, type Admin, type LogEntry, type SASLOptions } from 'kafkajs';
import type { Config } from '../config/config.js';
import { IndexerError } from '../core/errors.js';
import type { Logger } from '../observability/logger.js';

type Level = 'error' | 'warn' | 'info' | 'debug';

const LEVELS: Record<number, Level> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/**
 * The broker's answers kafkajs retries on its own (its protocol table marks them retriable), plus
 * the group protocol's routine ones. kafkajs logs each failed request at ERROR even so: on a fresh
 * broker every start logs "The coordinator is loading" and "The group coordinator is not
 * available", which would page someone for nothing. When the retries run out, the consumer's crash
 * is logged (and handled) by the ingest consumer.
 */
const ROUTINE_BROKER_ANSWERS: ReadonlySet<string> = (() => {
  const { errorCodes } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as { errorCodes: { type: string; retriable: boolean; message: string }[] };
  const groupProtocol = new Set(['REBALANCE_IN_PROGRESS', 'MEMBER_ID_REQUIRED', 'UNKNOWN_MEMBER_ID', 'ILLEGAL_GENERATION']);
  return new Set(errorCodes.filter((e) => e.retriable || groupProtocol.has(e.type)).map((e) => e.message));
})();

/** kafkajs's own ERROR lines that announce a retry it is about to make, not a failure. */
const RETRY_NOTICES = [/^Restarting the consumer in/, /^The coordinator is not aware of this member/, /^Failed to connect to seed broker, trying another/, /^Failed to connect to broker, reconnecting/, /^Connection timeout/];

/**
 * The level a kafkajs log line deserves here: a failed request that kafkajs retries is debug, a
 * retry notice is a warning; any other error stays an error and says what to look at.
 */
export function kafkaLogLevel(level: number, message: string, fields: Record<string, unknown>): Level {
  const mapped = LEVELS[level] ?? 'info';
  if (mapped !== 'error') return mapped;
  if (typeof fields.error === 'string' && ROUTINE_BROKER_ANSWERS.has(fields.error)) return 'debug';
  if (ROUTINE_BROKER_ANSWERS.has(message)) return 'debug';
  if (RETRY_NOTICES.some((notice) => notice.test(message))) return 'warn';
  // The ingest consumer logs these itself: a warning while kafkajs restarts it, an error naming
  // the action when it will not (IngestConsumer's crash handler).
  if (/^Crash: |^Error when calling eachBatch/.test(message)) return 'warn';
  return 'error';
}

const KAFKA_ERROR_ACTION = 'kafkajs gives up on this request: check that the brokers in KAFKA_BROKERS are reachable, and the topic, ACLs and credentials (KAFKA_SASL_*); the ingest consumer logs separately when it stops';

/** kafkajs client for any Kafka: TLS and SASL from the config, its logs routed through pino. */
export function createKafka(config: Config['kafka'], logger: Logger): Kafka {
  const sasl: SASLOptions | undefined = config.sasl
    ? ({ mechanism: config.sasl.mechanism, username: config.sasl.username, password: config.sasl.password } as SASLOptions)
    : undefined;
  const kafkaLogger = logger.child({ component: 'kafkajs' });
  return new Kafka({
    clientId: config.clientId,
    brokers: config.brokers,
    ssl: config.ssl,
    sasl,
    // kafkajs is chatty at INFO (every join and rebalance); warnings and errors are what matter.
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log }: LogEntry) => {
        const { message, ...rest } = log;
        const mapped = kafkaLogLevel(level, message, rest);
        if (mapped === 'error') kafkaLogger.error({ ...rest, action: KAFKA_ERROR_ACTION }, message);
        else kafkaLogger[mapped](rest, message);
      },
  });
}

/**
 * Runs `use` with a connected admin client, disconnected afterwards whatever happens. Retried
 * while the broker answers what kafkajs marks retriable: its admin calls (fetchOffsets, setOffsets)
 * do not retry "The coordinator is loading" or "not the correct coordinator" themselves, and a
 * fresh cluster, or a coordinator that moved after a broker restart, answers that for a moment.
 * Every caller's `use` reads, or sets offsets to values it reads first: running it again is safe.
 */
export async function withAdmin<T>(kafka: Kafka, use: (admin: Admin) => Promise<T>, attempts = 8): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const admin = kafka.admin();
    try {
      await admin.connect();
      return await use(admin);
    } catch (error) {
      if (attempt >= attempts || !isRetriableKafkaError(error)) throw error;
      await sleep(Math.min(200 * 2 ** (attempt - 1), 3000));
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }
}

/** The broker does not know the topic (or partition), on the error or anywhere in its causes. */
export function isUnknownTopic(error: unknown): boolean {
  for (let link = error as { type?: unknown; cause?: unknown; originalError?: unknown } | undefined; link; link = (link.cause ?? link.originalError) as typeof link) {
    if (link.type === 'UNKNOWN_TOPIC_OR_PARTITION') return true;
  }
  return false;
}

/** kafkajs marks the broker's passing answers `retriable`, on the error or on one it wraps. */
export function isRetriableKafkaError(error: unknown): boolean {
  for (let e = error as { retriable?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) {
    if (e.retriable === true) return true;
  }
  return false;
}

/**
 * Stops a start on a topic that does not exist, naming it: otherwise every group call answers
 * "This server does not host this topic-partition", which kafkajs marks retriable, and the start
 * fails only after its retries, with a message that names no topic.
 */
export async function ensureTopicsExist(kafka: Kafka, topics: readonly string[]): Promise<void> {
  const existing = new Set(await withAdmin(kafka, (admin) => admin.listTopics()));
  const missing = topics.filter((topic) => !existing.has(topic));
  if (missing.length === 0) return;
  throw new IndexerError(
    'KAFKA_TOPIC_MISSING',
    `Kafka topic ${missing.join(', ')} does not exist on the brokers: fix KAFKA_TOPICS (or KAFKA_BROKERS), or create it (indexer produce --create-topic N, or your Kafka tooling)`,
    { canRetry: false, details: { missing } },
  );
}

/**
 * Deletes a consumer group, best effort: a group without members and commits expires on its own,
 * and the callers never reuse its id.
 */
export async function deleteConsumerGroup(kafka: Kafka, groupId: string): Promise<void> {
  await withAdmin(kafka, (admin) => admin.deleteGroups([groupId])).catch(() => undefined);
}
