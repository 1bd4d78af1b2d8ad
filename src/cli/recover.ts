/**
 * `indexer recover`: after Redis lost the indexer's data (the worker refuses to start and says
 * so), re-sync from the source. Ingest's consumer group goes back to the earliest offsets Kafka
 * still retains, and the epoch is created again, so the next ingest re-reads every retained
 * event into the empty Redis. Kafka keeps only what its retention keeps: when that is not every
 * item's latest event, a backfill from the catalog with --prune fills the rest and removes what
 * the catalog no longer has.
 */
import { Command } from 'commander';
import type { Kafka } from 'kafkajs';
import type { Config } from '../config/config.js';
import { createKafka, withAdmin } from '../ingest/kafka.js';
import { createLogger } from '../observability/logger.js';
import { epochKey, writeEpoch } from '../state/epoch.js';
import { configOrExit, withRedis } from './context.js';

/** Partitions and the offsets the group was set to. */
type Reset = { topic: string; partitions: { partition: number; offset: string; was: string }[] };

export function recoverCommand(): Command {
  return new Command('recover')
    .description("after Redis lost the indexer's data: reset ingest's consumer group to the earliest retained offsets and recreate the epoch (stop every ingest worker first)")
    .option('--force', 're-read from the earliest offsets even though Redis still holds its epoch (it lost nothing)')
    .action(async (opts: { force?: boolean }) => {
      const config = configOrExit();
      const logger = createLogger(config.observability.logLevel === 'info' ? 'warn' : config.observability.logLevel);
      const kafka = createKafka(config.kafka, logger);
      const refusal = await refusalToRecover(config, kafka, opts.force === true);
      if (refusal) {
        process.stderr.write(`${refusal}\n`);
        process.exit(1);
      }
      const resets = await resetToEarliest(kafka, config.kafka.groupId, config.kafka.topics);
      await withRedis(config, (redis) => writeEpoch(redis, config.redis.prefix, 'recover', 'always'));
      for (const { topic, partitions } of resets) {
        for (const p of partitions) process.stdout.write(`${topic}/${p.partition}: ${p.was} -> ${p.offset}\n`);
      }
      process.stdout.write(
        `consumer group ${config.kafka.groupId} reset to the earliest retained offsets; epoch ${epochKey(config.redis.prefix)} created.\n` +
          'Start the workers: ingest re-reads every event Kafka retains (items whose item state was lost are embedded again).\n' +
          "If Kafka does not retain every item's latest event (retention by time or size rather than compaction), also run `indexer backfill start SOURCE --prune` from the catalog.\n",
      );
    });
}

/**
 * Why not to recover now, if anything: ingest workers still in the group (Kafka refuses to move
 * the offsets of a group with members, and they would go on from the old ones), or an epoch still
 * in Redis (nothing was lost: re-reading everything would only cost embeddings) without --force.
 */
async function refusalToRecover(config: Config, kafka: Kafka, force: boolean): Promise<string | undefined> {
  const { groups } = await withAdmin(kafka, (admin) => admin.describeGroups([config.kafka.groupId]));
  const members = groups[0]?.members.length ?? 0;
  if (members > 0) return `consumer group ${config.kafka.groupId} has ${members} member(s): stop every ingest worker (indexer worker with the ingest role) first, then run indexer recover again`;
  if (force) return undefined;
  const epoch = await withRedis(config, (redis) => redis.get(epochKey(config.redis.prefix)));
  if (epoch !== null) {
    return `Redis still holds the epoch ${epochKey(config.redis.prefix)} (${epoch}): it did not lose the indexer's data, and nothing needs recovering. To re-read every retained event anyway, run indexer recover --force`;
  }
  return undefined;
}

/** Sets the group's committed offset of every partition of the topics to the earliest Kafka retains. */
async function resetToEarliest(kafka: Kafka, groupId: string, topics: string[]): Promise<Reset[]> {
  return withAdmin(kafka, async (admin) => {
    const committed = await admin.fetchOffsets({ groupId, topics });
    const resets: Reset[] = [];
    for (const topic of topics) {
      const earliest = await admin.fetchTopicOffsets(topic);
      const was = new Map((committed.find((c) => c.topic === topic)?.partitions ?? []).map((p) => [p.partition, p.offset]));
      const partitions = earliest.map(({ partition, low }) => ({ partition, offset: low, was: was.get(partition) ?? '-1' }));
      await admin.setOffsets({ groupId, topic, partitions: partitions.map(({ partition, offset }) => ({ partition, offset })) });
      resets.push({ topic, partitions });
    }
    return resets;
  });
}
