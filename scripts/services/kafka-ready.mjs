// Exits 0 when the Kafka broker at argv[2] answers a metadata request (used by kafka.sh).
// With --groups it also requires the group coordinator to serve every partition of __consumer_offsets
// (creating that topic on a fresh broker): for about a second after the topic appears, group requests
// fail with NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS, which kafkajs's admin.fetchOffsets does not
// retry, so kafka.sh waits that window out once on a fresh broker instead of every client meeting it.
import { Kafka, logLevel } from 'kafkajs';

const [broker, ...flags] = process.argv.slice(2);
const admin = new Kafka({ brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 2000 }).admin();

/** Kafka's coordinator partition for a group: abs(String.hashCode) % partitions, as in Java. */
function offsetsPartitionOf(groupId, partitions) {
  let hash = 0;
  for (const char of groupId) hash = (Math.imul(31, hash) + char.charCodeAt(0)) | 0;
  return (hash === -2147483648 ? 0 : Math.abs(hash)) % partitions;
}

/** One group id per __consumer_offsets partition. The groups are only described, never created. */
function probeGroups(partitions) {
  const byPartition = new Map();
  for (let i = 0; byPartition.size < partitions; i++) {
    const groupId = `kafka-ready-probe-${i}`;
    const partition = offsetsPartitionOf(groupId, partitions);
    if (!byPartition.has(partition)) byPartition.set(partition, groupId);
  }
  return [...byPartition.values()];
}

async function offsetsPartitionCount() {
  const { topics } = await admin.fetchTopicMetadata({ topics: ['__consumer_offsets'] });
  return topics[0].partitions.length;
}

try {
  await admin.connect();
  await admin.describeCluster();
  if (flags.includes('--groups')) {
    // The first describe makes the broker create __consumer_offsets; it throws until the topic is there.
    await admin.describeGroups(['kafka-ready-probe']);
    await admin.describeGroups(probeGroups(await offsetsPartitionCount()));
  }
  await admin.disconnect();
  process.exit(0);
} catch {
  process.exit(1);
}
