/**
 * The vectors this process put in write jobs lately, by content hash, bounded by their bytes. A
 * change needing a text whose vector waits in the write queue (the in-flight hint names the job)
 * takes it from here when this process bought it, instead of reading the whole write job back from
 * Redis: a job holds a request's vectors, up to a megabyte, to give one back. A miss (another
 * process bought it, or it was evicted) reads the job as before.
 */
export class RecentVectors {
  /** Insertion order is eviction order: the oldest purchase goes first. */
  private readonly vectors = new Map<string, string>();
  private bytes = 0;

  constructor(readonly maxBytes: number) {}

  get size(): number {
    return this.vectors.size;
  }

  get(hash: string): string | undefined {
    return this.vectors.get(hash);
  }

  remember(hash: string, vector: string): void {
    this.forget(hash);
    this.vectors.set(hash, vector);
    this.bytes += hash.length + vector.length;
    for (const oldest of this.vectors.keys()) {
      if (this.bytes <= this.maxBytes) break;
      this.forget(oldest);
    }
  }

  private forget(hash: string): void {
    const vector = this.vectors.get(hash);
    if (vector === undefined) return;
    this.vectors.delete(hash);
    this.bytes -= hash.length + vector.length;
  }
}
