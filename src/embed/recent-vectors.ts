/** Where a remembered vector lies in the ring, and under which hash. */
interface Slot {
  hash: string;
  offset: number;
  length: number;
}

/**
 * What one slot costs beside its floats (its 64-character hash, the slot, its Map entry, about 300
 * bytes in V8), charged against the bound: with short vectors (EMBEDDINGS_DIMENSIONS may be 1) the
 * floats alone would let millions of slots fill the heap.
 */
const SLOT_BYTES = 256;
/** Small bounds still keep this many slots: only tests make rings that small. */
const MIN_SLOTS = 1024;

/**
 * The vectors this process put in write jobs lately, by content hash, in one ring of floats of a
 * fixed size. A change needing a text whose vector waits in the write queue (the in-flight hint
 * names the job) takes it from here when this process bought it, instead of reading the whole write
 * job back from Redis: a job's blob holds a request's vectors, up to a few megabytes, to give one
 * back. A miss (another process bought it, or it was overwritten) reads the job as before.
 *
 * A ring, not one array per vector: the vectors come as views into larger buffers (a response's
 * decoded bytes, a job's blob), and keeping each meant copying it into an ArrayBuffer of its own
 * (3-4 µs apiece at saturation, and garbage for the collector). Here a vector is copied into the
 * ring where the oldest ones were, and only `get`, which is rare, allocates.
 */
export class RecentVectors {
  private readonly capacity: number;
  /** The most slots kept, stale ones included. */
  private readonly maxSlots: number;
  /** Allocated at the first vector: a process that never embeds does not hold it. */
  private ring: Float32Array | undefined;
  private readonly slots = new Map<string, Slot>();
  /**
   * Every slot in the ring, oldest first, from `head` on: in the order they were written, so also
   * in the order of their offsets within a lap of the ring. A slot whose hash was remembered again
   * since is no longer in `slots` but keeps its floats until the ring passes it.
   */
  private order: Slot[] = [];
  private head = 0;
  /** Where the next vector goes. */
  private tail = 0;

  constructor(readonly maxBytes: number) {
    this.capacity = Math.floor(maxBytes / Float32Array.BYTES_PER_ELEMENT);
    this.maxSlots = Math.max(MIN_SLOTS, Math.floor(maxBytes / SLOT_BYTES));
  }

  get size(): number {
    return this.slots.size;
  }

  /** A copy: the ring's floats are overwritten as newer vectors come. */
  get(hash: string): Float32Array | undefined {
    const slot = this.slots.get(hash);
    return slot && this.ring?.slice(slot.offset, slot.offset + slot.length);
  }

  remember(hash: string, vector: Float32Array): void {
    this.slots.delete(hash);
    if (vector.length === 0 || vector.length > this.capacity) return;
    this.ring ??= new Float32Array(this.capacity);
    while (this.order.length - this.head >= this.maxSlots) this.evictOldest();
    this.makeRoom(vector.length);
    const slot = { hash, offset: this.tail, length: vector.length };
    this.ring.set(vector, slot.offset);
    this.tail += vector.length;
    this.slots.set(hash, slot);
    this.order.push(slot);
  }

  /** Frees `length` floats from the tail on, the oldest first, wrapping to the start when the end is too near. */
  private makeRoom(length: number): void {
    if (this.tail + length > this.capacity) {
      // The floats past the tail are left unused this lap; the slots lying there are the oldest.
      while (this.oldest() !== undefined && (this.oldest() as Slot).offset >= this.tail) this.evictOldest();
      this.tail = 0;
    }
    for (let oldest = this.oldest(); oldest !== undefined && oldest.offset >= this.tail && oldest.offset < this.tail + length; oldest = this.oldest()) {
      this.evictOldest();
    }
  }

  private oldest(): Slot | undefined {
    return this.order[this.head];
  }

  private evictOldest(): void {
    const slot = this.order[this.head++] as Slot;
    if (this.slots.get(slot.hash) === slot) this.slots.delete(slot.hash);
    // Drops the evicted slots from the array now and then, not on every eviction.
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
  }
}
