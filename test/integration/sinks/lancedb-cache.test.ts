import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { createSink } from '../../../src/sinks/create-sink.js';
import type { LanceDbSink } from '../../../src/sinks/lancedb/lancedb-sink.js';
import type { SinkRecord } from '../../../src/sinks/vector-sink.js';

// LanceDB keeps what it reads of each commit's files in a metadata cache whose own bound is 1 GiB:
// in a writer it grew by 6-12 MiB every 100 commits, whatever their size, and the RSS with it. The
// sink opens its table in a session bounded by LANCEDB_CACHE_MIB.
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const DIMENSIONS = 8;
const COMMITS = 100;

function record(itemId: string, version: number): SinkRecord {
  const now = new Date().toISOString();
  return {
    itemId,
    vector: Float32Array.from({ length: DIMENSIONS }, (_, i) => Math.sin(version + i)),
    payload: { item_id: itemId, version, content_hash: `h-${itemId}-${version}`, model: 'stub', source_updated_at: null, embedded_at: now, indexed_at: now, text_tokens: 3, truncated: false, title: `item ${itemId}` },
  };
}

/** The most a sink's caches held over COMMITS commits of new and updated rows, with reads between them. */
async function cacheOverCommits(cacheMib: string): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'lancedb-cache-'));
  dirs.push(dir);
  const sink = createSink(loadConfig({ LANCEDB_URI: dir, LANCEDB_CACHE_MIB: cacheMib }).sink, DIMENSIONS) as LanceDbSink;
  await sink.open();
  let most = 0;
  try {
    for (let commit = 0; commit < COMMITS; commit++) {
      await sink.upsert(Array.from({ length: 20 }, (_, i) => record(`item-${commit * 10 + i}`, commit + 1)));
      if (commit % 10 === 0) await sink.retrieve([`item-${commit * 10}`]);
      most = Math.max(most, sink.cacheBytes());
    }
    expect(await sink.count()).toBe((COMMITS - 1) * 10 + 20);
    return most;
  } finally {
    await sink.close();
  }
}

describe("LanceDB's caches", () => {
  it('stay within LANCEDB_CACHE_MIB while the table takes commit after commit', async () => {
    const roomy = await cacheOverCommits('64');
    const bounded = await cacheOverCommits('1');
    console.log(`over ${COMMITS} commits LanceDB's caches held at most ${roomy} bytes under 64 MiB each, ${bounded} under 1 MiB each`);
    // The commits cache far more than the small bound holds: the bound is what keeps them under
    // it. Two caches of 1 MiB each; LanceDB evicts just after an insert, so a little over is seen.
    expect(roomy).toBeGreaterThan(4 * 2 ** 20);
    expect(bounded).toBeGreaterThan(0);
    expect(bounded).toBeLessThanOrEqual(2 * 2 ** 20);
  });
});
