/**
 * Generates the sample catalog (data/sample-catalog.ndjson): realistic outdoor-shop products as
 * change events, deterministic (seeded), so the file in the repo can always be rebuilt:
 *   npx tsx scripts/generate-catalog.ts [items=3000] [out=data/sample-catalog.ndjson]
 * Every item is created (version 1); then some are re-priced (metadata only), some re-described
 * (new text), and a few deleted, as a live catalog would. The generator itself is
 * scripts/catalog-generator.ts (the benchmarks import it).
 */
import { writeFileSync } from 'node:fs';
import { generateCatalogLines } from './catalog-generator.js';

const items = Number(process.argv[2] ?? 3000);
const out = process.argv[3] ?? 'data/sample-catalog.ndjson';

const lines = generateCatalogLines(items);
writeFileSync(out, `${lines.join('\n')}\n`);
process.stdout.write(`wrote ${lines.length} events for ${items} items to ${out}\n`);
