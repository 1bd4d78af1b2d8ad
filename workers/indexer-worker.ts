/**
 * Process entrypoint of a worker: `node workers/indexer-worker.js [ingest,embed,write,backfill]`.
 * Roles come from the first argument or INDEXER_ROLES; all four by default.
 */
import { ROLES, type Role } from '../src/pipeline/pipeline.js';
import { runWorkerProcess } from '../src/pipeline/worker-process.js';

const requested = (process.argv[2] ?? process.env.INDEXER_ROLES ?? ROLES.join(','))
  .split(',')
  .map((r) => r.trim())
  .filter(Boolean);
const unknown = requested.filter((r) => !(ROLES as readonly string[]).includes(r));
if (unknown.length > 0) {
  process.stderr.write(`unknown role(s) ${unknown.join(', ')}: use ${ROLES.join(', ')}\n`);
  process.exit(64);
}
await runWorkerProcess(requested as Role[]);
