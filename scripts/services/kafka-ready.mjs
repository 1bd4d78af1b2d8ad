// Exits 0 when the Kafka broker at argv[2] answers a metadata request (used by kafka.sh).
import { Kafka, logLevel } from 'kafkajs';

const admin = new Kafka({ brokers: [process.argv[2]], logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 2000 }).admin();
try {
  await admin.connect();
  await admin.describeCluster();
  await admin.disconnect();
  process.exit(0);
} catch {
  process.exit(1);
}
