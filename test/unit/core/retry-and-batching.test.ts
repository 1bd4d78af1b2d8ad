import { describe, expect, it } from 'vitest';
import { EmbeddingsError, isRetryable, SinkError } from '../../../src/core/errors.js';
import { isolateFailures, MicroBatcher } from '../../../src/core/micro-batcher.js';
import { backoffDelay, withRetry } from '../../../src/core/retry.js';

const policy = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 };
const retryable = () => new EmbeddingsError('EMBEDDINGS_UNAVAILABLE', 'down', { canRetry: true });

describe('withRetry', () => {
  it('retries retryable errors until success', async () => {
    let calls = 0;
    const value = await withRetry(async () => {
      if (++calls < 3) throw retryable();
      return 'ok';
    }, { policy });
    expect(value).toBe('ok');
    expect(calls).toBe(3);
  });

  it('gives up after the attempts, keeping every error', async () => {
    let calls = 0;
    const error = await withRetry(async () => {
      calls++;
      throw retryable();
    }, { policy }).catch((e: unknown) => e as Error);
    expect(calls).toBe(4);
    expect((error.cause as AggregateError).errors).toHaveLength(4);
  });

  it('never retries when anything in the cause chain says it cannot succeed', async () => {
    let calls = 0;
    const wrapped = new SinkError('SINK_UNAVAILABLE', 'outer', { canRetry: true, cause: new SinkError('SINK_REJECTED', 'inner', { canRetry: false }) });
    await expect(withRetry(async () => {
      calls++;
      throw wrapped;
    }, { policy })).rejects.toBe(wrapped);
    expect(calls).toBe(1);
    expect(isRetryable(new Error('a bug'))).toBe(false);
    expect(isRetryable(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBe(true);
  });

  it('waits at least Retry-After and otherwise a jittered exponential delay', () => {
    const p = { attempts: 5, baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelay(p, 3, undefined, () => 0.999)).toBe(399);
    expect(backoffDelay(p, 10, undefined, () => 0.999)).toBe(999);
    expect(backoffDelay(p, 1, 2500, () => 0.5)).toBe(2500);
  });
});

describe('MicroBatcher', () => {
  it('groups concurrent submissions and reports per item', async () => {
    const batches: number[][] = [];
    const batcher = new MicroBatcher<number, number>({
      maxSize: 3,
      lingerMs: 5,
      run: async (items) => {
        batches.push(items);
        return items.map((i) => (i === 4 ? { ok: false, error: new Error('four') } : { ok: true, value: i * 10 }));
      },
    });
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map((i) => batcher.submit(i)));
    expect(batches).toEqual([[1, 2, 3], [4, 5]]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual([10, 20, 30, 'four', 50]);
  });

  it('runs one batch at a time when asked, gathering what arrived meanwhile', async () => {
    let running = 0;
    let most = 0;
    const batcher = new MicroBatcher<number, void>({
      maxSize: 2,
      lingerMs: 1,
      maxConcurrent: 1,
      run: async (items) => {
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, 5));
        running--;
        return items.map(() => ({ ok: true, value: undefined }));
      },
    });
    await Promise.all([1, 2, 3, 4, 5, 6, 7].map((i) => batcher.submit(i)));
    expect(most).toBe(1);
  });
});

describe('MicroBatcher with an urgent lane', () => {
  it('runs waiting urgent items next, alone, and keeps background batches small', async () => {
    const batches: string[][] = [];
    let release: () => void = () => undefined;
    const batcher = new MicroBatcher<string, void>({
      maxSize: 8,
      lingerMs: 1,
      maxConcurrent: 1,
      urgent: (item) => item.startsWith('live'),
      backgroundMaxSize: 2,
      run: async (items) => {
        batches.push(items);
        if (batches.length === 1) await new Promise<void>((r) => (release = r));
        return items.map(() => ({ ok: true, value: undefined }));
      },
    });
    const first = batcher.submit('bf-0');
    batcher.flush();
    // While the first batch runs, background items pile up, then a live one arrives.
    const rest = ['bf-1', 'bf-2', 'bf-3', 'live-1', 'bf-4'].map((item) => batcher.submit(item));
    release();
    await Promise.all([first, ...rest]);
    expect(batches).toEqual([['bf-0'], ['live-1'], ['bf-1', 'bf-2'], ['bf-3', 'bf-4']]);
  });
});

describe('MicroBatcher with weights', () => {
  it('never lets a batch exceed the weight limit, unless one item alone does', async () => {
    const batches: number[][] = [];
    const batcher = new MicroBatcher<number, void>({
      maxSize: 100,
      lingerMs: 1,
      weigh: (n) => n,
      maxWeight: 10,
      run: async (items) => {
        batches.push(items);
        return items.map(() => ({ ok: true, value: undefined }));
      },
    });
    await Promise.all([4, 4, 4, 12, 1, 9, 2].map((n) => batcher.submit(n)));
    expect(batches.flat().sort((a, b) => a - b)).toEqual([1, 2, 4, 4, 4, 9, 12]);
    for (const b of batches) expect(b.length === 1 || b.reduce((s, n) => s + n, 0) <= 10).toBe(true);
  });
});

describe('isolateFailures', () => {
  it('finds the poison items by halving, and lets the rest through', async () => {
    let calls = 0;
    const outcomes = await isolateFailures(
      ['a', 'b', 'bad', 'c', 'd', 'e', 'f', 'g'],
      async (items) => {
        calls++;
        if (items.includes('bad')) throw new Error('rejected');
        return items.map((i) => i.toUpperCase());
      },
      () => true,
    );
    expect(outcomes.map((o) => (o.ok ? o.value : 'X'))).toEqual(['A', 'B', 'X', 'C', 'D', 'E', 'F', 'G']);
    expect(calls).toBeLessThan(8);
  });
});
