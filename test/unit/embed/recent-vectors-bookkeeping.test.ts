import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { RecentVectors } from '../../../src/embed/recent-vectors.js';

// Kept from the adversarial review of the ring: it bounded the floats it keeps, but not what it
// keeps beside them (one slot object, one Map entry and one 64-character content hash per vector,
// on the JavaScript heap). With short vectors (EMBEDDINGS_DIMENSIONS accepts 1 to 65536) the first
// ring kept 4 Mi entries in its 16 MiB and ran the worker's 256 MiB heap out of memory; each slot
// is now charged against the bound too.

const hashOf = (i: number) => i.toString(16).padStart(64, '0');

describe('RecentVectors bookkeeping', () => {
  it('keeps no more entries than its byte bound can pay for, counting each 64-character hash as the previous implementation did', () => {
    const maxBytes = 2 ** 20;
    const recent = new RecentVectors(maxBytes);
    const dimensions = 4;
    for (let i = 0; i < 100_000; i++) recent.remember(hashOf(i), new Float32Array(dimensions).fill(i));
    // 1 MiB of 4-float vectors with their hashes: at most 1 MiB / (64 + 16) = 13,107 entries.
    expect(recent.size).toBeLessThanOrEqual(Math.floor(maxBytes / (64 + dimensions * 4)));
  });

  it('fits, full, in the worker\'s 256 MiB old space (the image\'s NODE_OPTIONS) with 4-dimensional vectors', () => {
    // InflightVectors' ring (16 MiB) filled by an embed worker whose model gives 4 floats per text.
    const script = `
      const { RecentVectors } = await import('./src/embed/recent-vectors.ts');
      const recent = new RecentVectors(16 * 2 ** 20);
      for (let i = 0; i < 1_000_000; i++) recent.remember(i.toString(16).padStart(64, '0'), new Float32Array(4).fill(i));
      console.log('size', recent.size);`;
    const run = spawnSync(process.execPath, ['--max-old-space-size=256', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
    expect(run.stderr).not.toMatch(/heap out of memory/);
    expect(run.status).toBe(0);
  }, 150_000);
});
