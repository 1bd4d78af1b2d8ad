/**
 * The vectors this process put in write jobs lately, by content hash, bounded by their bytes. A
 * change needing a text whose vector waits in the write queue (the in-flight hint names the job)
 * takes it from here when this process bought it, instead of reading the whole write job back from
 * Redis: a job holds a request's vectors, up to a megabyte, to give one back. A miss (another
 * process bought it, or it was evicted) reads the job as before.
 */
export class RecentVectors {
  private readonly vectors = new Map<string, { vector: string; seq: number }>();
  /**
   * Eviction order, oldest first, from `head` on. Not the map's own order: V8 keeps a deleted
   * entry's slot until the map is rebuilt, so walking the map from its start on every insert
   * stepped over thousands of them (4-5 µs per vector at saturation). An entry whose hash was
   * remembered again since carries an older `seq` than the map's and is skipped.
   */
  private order: { hash: string; seq: number }[] = [];
  private head = 0;
  private seq = 0;
  private bytes = 0;

  constructor(readonly maxBytes: number) {}

  get size(): number {
    return this.vectors.size;
  }

  get(hash: string): string | undefined {
    return this.vectors.get(hash)?.vector;
  }

  remember(hash: string, vector: string): void {
    this.forget(hash);
    const seq = ++this.seq;
    this.vectors.set(hash, { vector, seq });
    this.order.push({ hash, seq });
    this.bytes += hash.length + vector.length;
    while (this.bytes > this.maxBytes && this.head < this.order.length) {
      const oldest = this.order[this.head++] as { hash: string; seq: number };
      if (this.vectors.get(oldest.hash)?.seq === oldest.seq) this.forget(oldest.hash);
    }
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
  }

  private forget(hash: string): void {
    const entry = this.vectors.get(hash);
    if (entry === undefined) return;
    this.vectors.delete(hash);
    this.bytes -= hash.length + entry.vector.length;
  }
}
