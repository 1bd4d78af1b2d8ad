import { describe, expect, it } from 'vitest';
import { duration, formatStatus, rate, table } from '../../../src/cli/status.js';
import type { GenerationReport, StatusReport } from '../../../src/observability/status-report.js';

function generation(over: Partial<GenerationReport> = {}): GenerationReport {
  return {
    id: 1,
    model: 'text-embedding-3-small',
    serving: true,
    prefix: 'indexer',
    queues: [
      { queue: 'embed', waiting: 1200, active: 4, delayed: 2, failed: 0, prioritized: 0, paused: true, pauseReason: { code: 'EMBEDDINGS_QUOTA_EXHAUSTED', message: 'the embeddings quota is exhausted', fix: 'Add credit or raise the limit, then run `indexer resume`', at: '2026-01-01T10:00:00.000Z' }, held: [] },
      { queue: 'write', waiting: 0, active: 0, delayed: 0, failed: 3, prioritized: 0, paused: false, pauseReason: null, held: ['sink unreachable: connect ECONNREFUSED'] },
    ],
    kafka: { group: 'embedding-indexer', topics: ['products'], partitions: [{ topic: 'products', partition: 0, committed: '90', end: '100', lag: 10 }, { topic: 'products', partition: 1, committed: null, end: '7', lag: 7 }], totalLag: 17, error: null, pausedByHighWater: [] },
    deadLetters: { total: 5, byStageAndCode: [{ stage: 'ingest', code: 'EVENT_INVALID', count: 4 }], uncounted: 1 },
    backfills: [],
    usage: [{ model: 'text-embedding-3-small', requests: 10, inputs: 640, tokens: 120_000, estimatedCostUsd: 0.0024 }],
    ...over,
  };
}

function report(over: Partial<StatusReport> = {}): StatusReport {
  return {
    version: 1,
    at: '2026-01-01T10:05:00.000Z',
    prefix: 'indexer',
    servingGeneration: 1,
    generations: [generation()],
    rates: { eventsPerSecond: 120.25, itemsWrittenPerSecond: 3.5, windowSeconds: 60, workers: 1 },
    workers: [],
    embeddings: [],
    usage: { totalCostUsd: 0.0024, modelsWithoutPrice: [] },
    errors: [],
    ...over,
  };
}

describe('status screen', () => {
  it('aligns columns, numbers to the right, without trailing spaces', () => {
    expect(table(['queue', 'waiting', 'state'], [['embed', '1200', 'paused'], ['write', '0', '']], [1])).toEqual(['queue  waiting  state', 'embed     1200  paused', 'write        0']);
  });

  it('writes durations and rates briefly', () => {
    expect([duration(45), duration(725), duration(3 * 3600 + 5 * 60), duration(2 * 86400 + 4 * 3600)]).toEqual(['45s', '12m05s', '3h05m', '2d04h']);
    expect([rate(0), rate(3.46), rate(120.25)]).toEqual(['0.0', '3.5', '120']);
  });

  it('shows why a queue is paused or held, the lag per partition, dead letters, usage', () => {
    const screen = formatStatus(report());
    expect(screen).toContain('throughput, last 60 s over 1 worker: 120 events/s consumed, 3.5 items/s written');
    expect(screen).toContain('  embed     1200       4        2       0  PAUSED since 2026-01-01T10:00:00.000Z: EMBEDDINGS_QUOTA_EXHAUSTED: the embeddings quota is exhausted. Add credit or raise the limit, then run `indexer resume`');
    expect(screen).toContain('  write        0       0        0       3  held: sink unreachable: connect ECONNREFUSED');
    expect(screen).toContain('KAFKA LAG  group embedding-indexer\n  topic     partition  committed  end  lag\n  products          0         90  100   10\n  products          1          -    7    7\n  total lag 17');
    expect(screen).toContain('DEAD LETTERS  5\n  stage   code                               count\n  ingest  EVENT_INVALID                          4\n  ?       (older than the per-stage counts)      1');
    expect(screen).toContain('USAGE  estimated $0.0024 so far');
    expect(screen).not.toMatch(/ \n/);
    // No colours or cursor movement in the screen itself.
    expect(screen).not.toContain('\x1b');
  });

  it('says when Kafka could not be asked, and names generations when a re-index runs', () => {
    const second = generation({ id: 2, model: 'text-embedding-3-large', serving: false, prefix: 'indexer:g2', queues: [], kafka: { group: 'embedding-indexer.g2', topics: ['products'], partitions: [], totalLag: null, error: 'connect ECONNREFUSED', pausedByHighWater: [] } });
    const screen = formatStatus(report({ generations: [generation(), second], errors: ['kafka lag of group embedding-indexer.g2: connect ECONNREFUSED'] }));
    expect(screen).toContain('! kafka lag of group embedding-indexer.g2: connect ECONNREFUSED');
    expect(screen).toContain('KAFKA LAG  generation 2 (text-embedding-3-large)  group embedding-indexer.g2\n  unavailable: connect ECONNREFUSED');
    expect(screen).toContain('KAFKA LAG  generation 1 (text-embedding-3-small, serving)  group embedding-indexer');
  });
});
