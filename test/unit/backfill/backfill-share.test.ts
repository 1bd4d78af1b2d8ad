import { describe, expect, it } from 'vitest';
import { BACKFILL_PRIORITY, backfillShare } from '../../../src/backfill/backfill-job.js';

describe('backfillShare', () => {
  it('names each backfill once, and puts a job below live ones only when every item is a backfill row', () => {
    expect(backfillShare([{ backfill: 'b1' }, { backfill: 'b2' }, { backfill: 'b1' }])).toEqual({ backfills: ['b1', 'b2'], priority: { priority: BACKFILL_PRIORITY } });
    // One live change in the job: it must not wait behind backfills.
    expect(backfillShare([{ backfill: 'b1' }, {}])).toEqual({ backfills: ['b1'], priority: {} });
    expect(backfillShare([{}, {}])).toEqual({ backfills: [], priority: {} });
    expect(backfillShare([])).toEqual({ backfills: [], priority: {} });
  });
});
