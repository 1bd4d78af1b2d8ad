/** What one item of a batch came to: batches report per item, so one bad item never fails the rest. */
export type Outcome<O> = { ok: true; value: O } | { ok: false; error: unknown };

export interface MicroBatcherOptions<I, O> {
  maxSize: number;
  /** How long a partial batch waits for more items before it runs anyway. */
  lingerMs: number;
  /** Runs one batch; returns one outcome per item, in order. Throwing fails every item of the batch. */
  run: (items: I[]) => Promise<Outcome<O>[]>;
  /** Batches running at once; items arriving meanwhile wait and form the next batch. Default: no limit. */
  maxConcurrent?: number;
  /** An item's weight (say, its tokens); a batch never exceeds maxWeight, unless one item alone does. */
  weigh?: (item: I) => number;
  maxWeight?: number;
  /**
   * Items that must not wait behind background work (live changes, against a backfill's): while
   * any waits, the next batch holds only such items. Batches of background items alone hold at
   * most `backgroundMaxSize`, so an urgent item waits for at most one small batch already running.
   */
  urgent?: (item: I) => boolean;
  backgroundMaxSize?: number;
}

interface Waiting<I, O> {
  item: I;
  weight: number;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

/**
 * Turns many concurrent single-item calls (one per BullMQ job) into few batch calls: the queue
 * keeps per-item retries and dead-lettering, the provider and the sink see batches.
 */
export class MicroBatcher<I, O> {
  private waiting: Waiting<I, O>[] = [];
  /** The weight of `waiting`, kept as items come and go rather than summed on every submit. */
  private waitingWeight = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly options: MicroBatcherOptions<I, O>) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      const weight = this.options.weigh?.(item) ?? 0;
      this.waiting.push({ item, weight, resolve, reject });
      this.waitingWeight += weight;
      if (this.waiting.length >= this.options.maxSize || this.waitingWeight >= (this.options.maxWeight ?? Number.POSITIVE_INFINITY)) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.options.lingerMs);
    });
  }

  /** Submits several items (a job's worth) and answers one outcome per item, in order: none throws. */
  async submitAll(items: I[]): Promise<Outcome<O>[]> {
    const settled = await Promise.allSettled(items.map((item) => this.submit(item)));
    return settled.map((s) => (s.status === 'fulfilled' ? { ok: true, value: s.value } : { ok: false, error: s.reason }));
  }

  /** Starts every waiting item now, as far as maxConcurrent allows; the rest start as batches finish. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const limit = this.options.maxConcurrent ?? Number.POSITIVE_INFINITY;
    while (this.waiting.length > 0 && this.running.size < limit) {
      const batch = this.takeBatch();
      for (const w of batch) this.waitingWeight -= w.weight;
      const run: Promise<void> = this.runBatch(batch).finally(() => {
        this.running.delete(run);
        // Items that waited for a free slot have lingered long enough: start them now.
        if (this.waiting.length > 0) this.flush();
      });
      this.running.add(run);
    }
  }

  /** The next batch: urgent items first (alone), else background items up to backgroundMaxSize. */
  private takeBatch(): Waiting<I, O>[] {
    const { urgent, backgroundMaxSize, maxSize } = this.options;
    if (urgent === undefined) return this.waiting.splice(0, this.nextBatchLength(this.waiting, maxSize));
    const pressing = this.waiting.filter((w) => urgent(w.item));
    if (pressing.length === 0) return this.waiting.splice(0, this.nextBatchLength(this.waiting, backgroundMaxSize ?? maxSize));
    const batch = pressing.slice(0, this.nextBatchLength(pressing, maxSize));
    const taken = new Set(batch);
    this.waiting = this.waiting.filter((w) => !taken.has(w));
    return batch;
  }

  /** How many of `waiting` the next batch takes: up to `maxSize`, and up to maxWeight (at least one). */
  private nextBatchLength(waiting: Waiting<I, O>[], maxSize: number): number {
    const { maxWeight } = this.options;
    if (maxWeight === undefined) return maxSize;
    let weight = 0;
    let length = 0;
    for (const w of waiting) {
      if (length >= maxSize) break;
      weight += w.weight;
      if (length > 0 && weight > maxWeight) break;
      length++;
    }
    return length;
  }

  /** Flushes and waits until every started batch has settled. */
  async drain(): Promise<void> {
    this.flush();
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  private async runBatch(batch: Waiting<I, O>[]): Promise<void> {
    let outcomes: Outcome<O>[];
    try {
      outcomes = await this.options.run(batch.map((w) => w.item));
    } catch (error) {
      for (const w of batch) w.reject(error);
      return;
    }
    batch.forEach((w, i) => {
      const outcome = outcomes[i];
      if (outcome === undefined) w.reject(new Error('batch returned fewer outcomes than items'));
      else if (outcome.ok) w.resolve(outcome.value);
      else w.reject(outcome.error);
    });
  }
}

/**
 * Runs `attempt` on the whole list; when it fails with an error `shouldSplit` accepts, halves the
 * list and tries again, down to single items. A poison item costs log2(n) extra calls, not n.
 */
export async function isolateFailures<I, O>(
  items: I[],
  attempt: (items: I[]) => Promise<O[]>,
  shouldSplit: (error: unknown) => boolean,
): Promise<Outcome<O>[]> {
  if (items.length === 0) return [];
  try {
    const values = await attempt(items);
    return values.map((value) => ({ ok: true, value }));
  } catch (error) {
    if (items.length === 1 || !shouldSplit(error)) return items.map(() => ({ ok: false, error }));
    const middle = Math.ceil(items.length / 2);
    const [left, right] = await Promise.all([
      isolateFailures(items.slice(0, middle), attempt, shouldSplit),
      isolateFailures(items.slice(middle), attempt, shouldSplit),
    ]);
    return [...left, ...right];
  }
}
