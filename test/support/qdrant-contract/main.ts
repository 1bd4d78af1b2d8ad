/** Runs the Qdrant contract server by hand: `npx tsx test/support/qdrant-contract/main.ts [port]`. */
import { QdrantContractServer } from './contract-server.js';

const server = new QdrantContractServer({ apiKey: process.env.QDRANT_API_KEY || undefined });
const url = await server.start(Number(process.argv[2] ?? 6333));
process.stdout.write(`Qdrant contract server on ${url}\n`);
