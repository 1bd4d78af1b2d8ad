import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);
const CONNECT_SCRIPT = 'scripts/services/connect.sh';
const CONNECTOR_TEMPLATE = 'scripts/services/connect/postgres-connector.properties.template';

export interface DebeziumCapture {
  /** The Kafka topic of the table: `<prefix>.<schema>.<table>`. */
  topic: string;
  /** Stops the worker, then drops its replication slot and publication. */
  stop(): Promise<void>;
}

/**
 * Debezium on a Kafka Connect standalone worker of its own (scripts/services/connect.sh, the jars
 * the project's scripts install), capturing one table of the test PostgreSQL into `<prefix>.public.<table>`.
 * The slot, publication and worker are named after `name`, so that runs never share them.
 */
export async function startDebezium(options: { name: string; postgresUrl: string; kafkaBrokers: string; table: string; schemas: boolean }): Promise<DebeziumCapture> {
  const { name, postgresUrl, kafkaBrokers, table, schemas } = options;
  const url = new URL(postgresUrl);
  const slot = name.replace(/[^a-z0-9_]/g, '_');
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const fill: Record<string, string> = {
    NAME: name,
    PG_HOST: url.hostname,
    PG_PORT: url.port || '5432',
    PG_USER: decodeURIComponent(url.username),
    PG_PASSWORD: decodeURIComponent(url.password),
    PG_DATABASE: url.pathname.slice(1) || 'postgres',
    PREFIX: name,
    TABLES: `public.${table}`,
    SLOT: slot,
    PUBLICATION: slot,
  };
  const properties = readFileSync(CONNECTOR_TEMPLATE, 'utf8').replace(/@([A-Z_]+)@/g, (match, key: string) => fill[key] ?? match);
  const file = join(dir, 'connector.properties');
  writeFileSync(file, properties);
  const env = { ...process.env, KAFKA_BROKERS: kafkaBrokers, CONNECT_SCHEMAS_ENABLE: String(schemas) };
  const stop = async () => {
    await run('bash', [CONNECT_SCRIPT, 'stop', name], { env });
    rmSync(dir, { recursive: true, force: true });
    await dropSlotAndPublication(postgresUrl, slot);
  };
  try {
    await run('bash', [CONNECT_SCRIPT, 'start', name, file], { env, timeout: 150_000 });
  } catch (error) {
    await stop().catch(() => undefined);
    const { stderr } = error as { stderr?: string };
    throw new Error(`Debezium did not start: ${stderr ?? (error as Error).message}`);
  }
  return { topic: `${name}.public.${table}`, stop };
}

/** The slot stays active for a moment after its worker exits: dropped once PostgreSQL lets go of it. */
async function dropSlotAndPublication(postgresUrl: string, slot: string): Promise<void> {
  const client = new pg.Client({ connectionString: postgresUrl });
  await client.connect();
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { rows } = await client.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      if (rows.length === 0) break;
      if (!rows[0]?.active) {
        await client.query('SELECT pg_drop_replication_slot($1)', [slot]);
        break;
      }
      if (Date.now() > deadline) throw new Error(`replication slot ${slot} still active 30 s after its worker stopped`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await client.query(`DROP PUBLICATION IF EXISTS "${slot}"`);
  } finally {
    await client.end();
  }
}
