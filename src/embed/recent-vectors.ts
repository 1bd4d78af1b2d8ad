/**
 * The vectors this process put in write jobs lately, by content hash, bounded by their bytes. A
 * change needing a text whose vector waits in the write queue (the in-flight hint names the job)
 * takes it from here when this process bought it, instead of reading the whole write job back from
 * Redis: a job's blob holds a request's vectors, up to a few megabytes, to give one back. A miss (another
 * process bought it, or it was evicted) reads the job as before.
 */
export class RecentVectors {
  private readonly vectors = new Map<string, { vector: Float32Array; seq: number }>();
  /**
   * Eviction order, oldest first, from `head` on. Not the map's own order: V8 keeps a deleted
   * entry's slot until the map is rebuilt, so walking the map from its start on every insert
   * stepped over thousands of them (4-5 µs per vector at saturation). An entry whose hash was
   * remembered again since carries an older `seq` than the map's and is skipped.
   */
  private order: { hash: string; seq: number }[] = [];
  /** Where eviction goes on from: the entries before it were evicted or were stale. */
  private head = 0;
  private seq = 0;
  private bytes = 0;

  constructor(readonly maxBytes: number) {}

  get size(): number {
    return this.vectors.size;
  }

  get(hash: string): Float32Array | undefined {
    return this.vectors.get(hash)?.vector;
  }

  remember(hash: string, vector: Float32Array): void {
    this.forget(hash);
    const seq = ++this.seq;
    // A view into a larger buffer (a write job's blob) is copied: kept, it would keep the whole blob.
    this.vectors.set(hash, { vector: vector.byteLength === vector.buffer.byteLength ? vector : vector.slice(), seq });
    this.order.push({ hash, seq });
    this.bytes += hash.length + vector.byteLength;
    while (this.bytes > this.maxBytes && this.head < this.order.length) {
      const oldest = this.order[this.head++] as { hash: string; seq: number };
      if (this.vectors.get(oldest.hash)?.seq === oldest.seq) this.forget(oldest.hash);
    }
    this.compactOrder();
  }

  /**
   * Drops what eviction has passed, and the entries of hashes remembered again since: without the
   * latter, a few hashes remembered over and over under the bound would grow the array forever.
   */
  private compactOrder(): void {
    const pending = this.order.length - this.head;
    if (pending <= 2 * this.vectors.size + 1024 && this.head <= pending) return;
    this.order = this.order.slice(this.head).filter((entry) => this.vectors.get(entry.hash)?.seq === entry.seq);
    this.head = 0;
  }

  private forget(hash: string): void {
    const entry = this.vectors.get(hash);
    if (entry === undefined) return;
    this.vectors.delete(hash);
    this.bytes -= hash.length + entry.vector.byteLength;
  }
}
