import type { Config } from '../../config/config.js';
import { BackfillError } from '../../core/errors.js';
import { createKafka } from '../../ingest/kafka.js';
import type { Logger } from '../../observability/logger.js';
import type { BackfillSourceSpec } from '../backfill-job.js';
import { FileSource } from './file-source.js';
import { KafkaSource } from './kafka-source.js';
import { PostgresSource } from './postgres-source.js';
import type { BackfillSource } from './source.js';

/** The source a job names, built with this worker's settings (secrets never travel in job data). */
export function openSource(spec: BackfillSourceSpec, jobId: string, config: Config, logger: Logger): BackfillSource {
  switch (spec.kind) {
    case 'file':
      return new FileSource(spec.path, config.events.maxBytes);
    case 'kafka':
      return new KafkaSource(createKafka(config.kafka, logger), spec.topic, `${config.kafka.groupId}.backfill.${jobId}`);
    case 'postgres':
      if (config.backfill.postgresUrl === undefined) {
        throw new BackfillError('BACKFILL_INVALID', 'a postgres: backfill needs POSTGRES_URL (or POSTGRES_URL_FILE) set on the workers running the backfill role', { canRetry: false });
      }
      return new PostgresSource({ url: config.backfill.postgresUrl, table: spec.table, query: spec.query, keyColumn: spec.keyColumn });
  }
}
