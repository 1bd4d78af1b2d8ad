import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The pipeline's metrics, on a registry of its own (no prom-client globals), so that tests and
 * several pipelines in one process never share counters.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly eventsConsumed = new Counter({ name: 'indexer_events_consumed_total', help: 'Change events read from Kafka', registers: [this.registry] });
  readonly eventsInvalid = new Counter({ name: 'indexer_events_invalid_total', help: 'Change events sent to the dead-letter store at ingest', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly eventsSkipped = new Counter({ name: 'indexer_events_skipped_total', help: 'Changes dropped without work: coalesced in a batch, older than one already seen, superseded before embedding, or not newer than what the sink holds', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly truncations = new Counter({ name: 'indexer_texts_truncated_total', help: 'Texts cut to EMBEDDINGS_MAX_INPUT_TOKENS before embedding', registers: [this.registry] });
  readonly embeddingsAvoided = new Counter({ name: 'indexer_embeddings_avoided_total', help: "Upserts not sent to the embeddings API: the sink already holds their text's vector (in_sink: a payload-only write), or it waits in the write queue (in_flight: taken from there)", labelNames: ['reason'] as const, registers: [this.registry] });
  readonly jobsEnqueued = new Counter({ name: 'indexer_jobs_enqueued_total', help: 'Jobs added to a queue', labelNames: ['queue'] as const, registers: [this.registry] });
  readonly embeddingRequests = new Counter({ name: 'indexer_embedding_requests_total', help: 'Embeddings API requests', labelNames: ['model', 'outcome'] as const, registers: [this.registry] });
  readonly embeddingInputs = new Counter({ name: 'indexer_embedding_inputs_total', help: 'Texts sent to the embeddings API', labelNames: ['model'] as const, registers: [this.registry] });
  readonly embeddingCostUsd = new Counter({ name: 'indexer_embedding_cost_usd_total', help: 'Estimated embeddings cost from usage and EMBEDDINGS_PRICES', labelNames: ['model'] as const, registers: [this.registry] });
  readonly embeddingTokens = new Counter({ name: 'indexer_embedding_tokens_total', help: 'Tokens billed by the embeddings API (from usage)', labelNames: ['model'] as const, registers: [this.registry] });
  readonly endpointRequests = new Counter({ name: 'indexer_embedding_endpoint_requests_total', help: 'HTTP requests to each embeddings endpoint, by outcome (ok or the error code)', labelNames: ['endpoint', 'outcome'] as const, registers: [this.registry] });
  readonly embeddingCircuitState = new Gauge({ name: 'indexer_embedding_circuit_state', help: 'Circuit of each embeddings endpoint: 0 closed, 1 half-open (one probe allowed), 2 open (not called)', labelNames: ['endpoint'] as const, registers: [this.registry] });
  readonly embeddingCircuitOpened = new Counter({ name: 'indexer_embedding_circuit_opened_total', help: 'Times an embeddings endpoint circuit opened after sustained failures', labelNames: ['endpoint'] as const, registers: [this.registry] });
  readonly rateLimit = new Gauge({ name: 'indexer_embedding_rate_limit_per_minute', help: 'Rate limit in force for each endpoint (configured or learned from x-ratelimit headers, the lower; 0: none)', labelNames: ['endpoint', 'kind'] as const, registers: [this.registry] });
  readonly rateLimitWaitSeconds = new Histogram({ name: 'indexer_embedding_rate_limit_wait_seconds', help: 'How long a request waited for its turn in the shared rate limiter', labelNames: ['endpoint'] as const, buckets: [0, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [this.registry] });
  readonly jobsDeferred = new Counter({ name: 'indexer_jobs_deferred_total', help: 'Jobs put back in their queue without spending an attempt (circuit open, queue paused, rate limited)', labelNames: ['stage', 'reason'] as const, registers: [this.registry] });
  readonly sinkWrites = new Counter({ name: 'indexer_sink_points_total', help: 'Points written to or deleted from the sink', labelNames: ['sink', 'op'] as const, registers: [this.registry] });
  readonly deadLettered = new Counter({ name: 'indexer_dead_lettered_total', help: 'Entries added to the dead-letter store', labelNames: ['stage'] as const, registers: [this.registry] });
  readonly batchSize = new Histogram({ name: 'indexer_batch_size', help: 'Items per embeddings request or sink write', labelNames: ['stage'] as const, buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048], registers: [this.registry] });
  readonly backfillRows = new Counter({ name: 'indexer_backfill_rows_total', help: 'Backfill rows by outcome: read from the source, enqueued, unchanged (the sink holds that version or newer), failed (invalid, dead-lettered), skipped (Debezium tombstones and truncate records: no change of an item by themselves), pruned (deletes queued for items the source lacks), truncated (deletes queued for the items of a table a replayed Debezium TRUNCATE emptied)', labelNames: ['outcome'] as const, registers: [this.registry] });
  // Sampled by a timer in every worker process (queue-sampler.ts), not per scrape: a scrape costs no Redis or Kafka call.
  readonly queueJobs = new Gauge({ name: 'indexer_queue_jobs', help: 'Jobs in each queue by state (waiting includes prioritized backfill jobs); queue is embed or write, embed@g<n> / write@g<n> for re-index generation n >= 2', labelNames: ['queue', 'state'] as const, registers: [this.registry] });
  readonly queuePaused = new Gauge({ name: 'indexer_queue_paused', help: '1 while the BullMQ queue is paused (an exhausted quota or a refused key pauses embed until `indexer resume`), else 0', labelNames: ['queue'] as const, registers: [this.registry] });
  readonly kafkaConsumerLag = new Gauge({ name: 'indexer_kafka_consumer_lag', help: "End offset minus the serving generation's consumer group's committed offset, per partition (exported by ingest-role processes)", labelNames: ['topic', 'partition'] as const, registers: [this.registry] });
  readonly eventToSinkSeconds = new Histogram({ name: 'indexer_event_to_sink_seconds', help: 'From ingest to the sink acknowledging the write', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers: [this.registry] });

  withDefaultMetrics(): this {
    collectDefaultMetrics({ register: this.registry, prefix: 'indexer_' });
    return this;
  }
}
