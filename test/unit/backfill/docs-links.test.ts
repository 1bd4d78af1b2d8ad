/**
 * What users are pointed to about backfills must exist: the error for invalid backfill job data
 * (what another service putting jobs on the `backfill` queue sees) sends them to a README section,
 * and the architecture notes must not call backfills future work.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseBackfillJob } from '../../../src/backfill/backfill-job.js';

const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const ARCHITECTURE = readFileSync(new URL('../../../docs/ARCHITECTURE.md', import.meta.url), 'utf8');
const headings = README.split('\n').filter((line) => /^#+ /.test(line)).map((line) => line.replace(/^#+ /, '').trim());

describe('backfill documentation', () => {
  it('has the README section that the invalid-job-data error names', () => {
    let message = '';
    try {
      parseBackfillJob({ source: { kind: 'file', path: 'relative.ndjson' } });
    } catch (error) {
      message = (error as Error).message;
    }
    const named = /see "([^"]+)" in the README/.exec(message)?.[1];
    expect(named, `the error names no README section: ${message}`).toBeDefined();
    expect(headings, `the error sends readers to "${named}" in the README, which has no such section (headings: ${headings.join(' | ')})`).toContain(named);
  });

  it('no longer calls backfills roadmap work in docs/ARCHITECTURE.md', () => {
    expect(ARCHITECTURE, 'ARCHITECTURE.md still says "A replay from Kafka is the backfill work on the roadmap"').not.toMatch(/backfill work on the\s+roadmap/);
  });
});
