/**
 * The embeddings stub as a process of its own, for benchmarks: the indexer process then pays only
 * for its own work, as it would against a remote API. Prints {"url": ...} on its first line;
 * GET <url without /v1>/_stub/stats answers what it served. Stops on SIGTERM.
 *   node --import tsx test/support/embeddings-stub-main.ts [dimensions=384] [latencyMs=0]
 */
import { EmbeddingsStub } from './embeddings-stub.js';

const stub = new EmbeddingsStub({ dimensions: Number(process.argv[2] ?? 384), latencyMs: Number(process.argv[3] ?? 0) });
const url = await stub.start();
process.stdout.write(`${JSON.stringify({ url })}\n`);
process.on('SIGTERM', () => void stub.stop().then(() => process.exit(0)));
