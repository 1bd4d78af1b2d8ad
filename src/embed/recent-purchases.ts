/**
 * The texts this process is buying, and those it just bought, by text: a batch needing a text
 * another batch is buying awaits that purchase instead of paying again.
 *
 * A bought text is announced in Redis (the in-flight hint) when its write job is queued; a batch
 * that read Redis before that announcement would not see it there. So a finished purchase is
 * retired, not forgotten, and stays visible until every batch that began reading before its
 * retirement has looked (sequence numbers, not timers: nothing depends on how slow Redis is).
 */
export class RecentPurchases<V> {
  private readonly buying = new Map<string, Promise<V>>();
  private readonly retired = new Map<string, { value: Promise<V>; seq: number }>();
  private readonly readers = new Map<number, number>();
  private seq = 0;
  private nextReader = 0;

  /** A batch begins reading Redis; what is retired from now on stays visible to it until `endRead`. */
  beginRead(): number {
    const reader = this.nextReader++;
    this.readers.set(reader, this.seq);
    return reader;
  }

  endRead(reader: number): void {
    this.readers.delete(reader);
    const oldest = Math.min(...this.readers.values());
    for (const [key, entry] of this.retired) if (entry.seq <= oldest || this.readers.size === 0) this.retired.delete(key);
  }

  get(key: string): Promise<V> | undefined {
    return this.buying.get(key) ?? this.retired.get(key)?.value;
  }

  register(key: string, value: Promise<V>): void {
    this.buying.set(key, value);
  }

  /** The purchase is announced in Redis now: later readers find it there. */
  retire(keys: Iterable<string>): void {
    this.seq++;
    for (const key of keys) {
      const value = this.buying.get(key);
      if (value === undefined) continue;
      this.buying.delete(key);
      if (this.readers.size > 0) this.retired.set(key, { value, seq: this.seq });
    }
  }
}
