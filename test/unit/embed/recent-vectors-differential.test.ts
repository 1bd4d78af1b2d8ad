import { describe, expect, it } from 'vitest';
import { RecentVectors } from '../../../src/embed/recent-vectors.js';

// RecentVectors against a reference model: a Map of the latest vector remembered under each hash
// (a vector too long for the ring, or empty, forgets the hash). The ring may evict anything, but
// `get` must give back exactly, bit for bit, the latest vector of a hash or nothing: a wrong
// vector here is a wrong vector written to the sink. It must also keep what fits: a vector is only
// evicted once the floats remembered since have gone (nearly) all the way round the ring.

type Internals = { order: unknown[]; head: number; capacity: number; maxSlots: number };

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1_664_525) + 1_013_904_223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Bit patterns, so that NaN payloads and -0 count as they are. */
const bits = (v: Float32Array) => Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length));
const sameBits = (a: Float32Array, b: Float32Array) => {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
};
/** Plain checks (expect() in these loops is too slow), failing with what was seen. */
function assert(ok: boolean, message: () => string): void {
  if (!ok) expect.fail(message());
}

class Checked {
  readonly recent: RecentVectors;
  readonly capacity: number;
  /** Latest vector per hash, with the floats remembered (validly) before it, for the retention bound. */
  private readonly latest = new Map<string, { vector: Float32Array; writtenBefore: number; slotsBefore: number }>();
  private written = 0;
  /** Slots written so far: the ring also keeps at most `maxSlots` of them, stale ones included. */
  private slots = 0;
  private longest = 0;
  private stamp = 0;

  constructor(readonly maxBytes: number) {
    this.recent = new RecentVectors(maxBytes);
    this.capacity = Math.max(0, Math.floor(maxBytes / 4));
  }

  /** A vector whose floats say which remember and which position they are (plus a few odd bit patterns). */
  vector(length: number): Float32Array {
    const stamp = ++this.stamp;
    const v = new Float32Array(length);
    for (let k = 0; k < length; k++) v[k] = stamp * 1_000 + k;
    if (length > 2 && stamp % 7 === 0) {
      new Uint32Array(v.buffer)[0] = 0x7fc0_0000 | (stamp & 0x3f_ffff); // a NaN carrying the stamp
      v[1] = -0;
    }
    return v;
  }

  remember(hash: string, given: Float32Array, context: string): void {
    const vector = given.slice();
    // Sometimes a view into a larger buffer, as vectors come from a response or a job's blob.
    const passed = this.stamp % 3 === 0 ? viewOf(given) : given;
    this.recent.remember(hash, passed);
    // The caller's buffer may be reused afterwards: the ring must have copied it.
    passed.fill(-12_345);
    if (vector.length === 0 || vector.length > this.capacity) {
      this.latest.delete(hash);
      assert(this.recent.get(hash) === undefined, () => `${context}: a vector of ${vector.length} floats (capacity ${this.capacity}) must not be kept`);
      return;
    }
    this.latest.set(hash, { vector, writtenBefore: this.written, slotsBefore: this.slots });
    this.written += vector.length;
    this.slots++;
    this.longest = Math.max(this.longest, vector.length);
    const got = this.recent.get(hash);
    assert(got !== undefined && sameBits(got, vector), () => `${context}: the vector just remembered under ${hash}: got ${got && bits(got)}, expected ${bits(vector)}`);
  }

  check(context: string, hashes: Iterable<string>): void {
    for (const hash of hashes) {
      const got = this.recent.get(hash);
      const expected = this.latest.get(hash);
      if (expected === undefined) {
        assert(got === undefined, () => `${context}: ${hash} was forgotten or never remembered, yet get gave ${got && bits(got)}`);
        continue;
      }
      if (got === undefined) {
        // Evicted: only once the floats written since, with the vector itself and the most a lap
        // can leave unused at its end, no longer fit in the ring.
        // Or once `maxSlots` slots were written with it and after it.
        const since = this.written - expected.writtenBefore;
        const slotsSince = this.slots - expected.slotsBefore;
        const { maxSlots } = this.recent as unknown as Internals;
        assert(since + this.longest > this.capacity || slotsSince > maxSlots, () => `${context}: ${hash} (${expected.vector.length} floats) evicted after only ${since} floats and ${slotsSince} slots (capacity ${this.capacity}, ${maxSlots} slots)`);
        continue;
      }
      assert(sameBits(got, expected.vector), () => `${context}: ${hash} must be its latest vector: got ${bits(got)}, expected ${bits(expected.vector)}`);
      // A copy of its own: writing into it changes nothing kept.
      assert(got.buffer.byteLength === got.byteLength, () => `${context}: ${hash} is a view of a larger buffer, not a copy`);
      got.fill(99);
      const again = this.recent.get(hash);
      assert(again !== undefined && sameBits(again, expected.vector), () => `${context}: ${hash} changed after its copy was written to`);
    }
    let kept = 0;
    for (const hash of this.latest.keys()) if (this.recent.get(hash) !== undefined) kept++;
    assert(this.recent.size === kept, () => `${context}: size ${this.recent.size}, but ${kept} hashes are given back`);
    const { order, head } = this.recent as unknown as Internals;
    const pending = order.length - head;
    // Every slot still in the ring holds at least one float, no more slots than the bound pays
    // for, and the array is compacted now and then.
    const { maxSlots } = this.recent as unknown as Internals;
    assert(pending <= this.capacity && pending <= maxSlots, () => `${context}: ${pending} slots in a ring of ${this.capacity} floats (at most ${maxSlots} slots)`);
    assert(order.length <= 2 * pending + 1_025, () => `${context}: slot array of ${order.length} for ${pending} slots`);
  }
}

function viewOf(vector: Float32Array): Float32Array {
  const buffer = new ArrayBuffer((vector.length + 5) * 4);
  const view = new Float32Array(buffer, 8, vector.length);
  view.set(vector);
  return view;
}

describe('RecentVectors against a reference map (differential)', { timeout: 120_000 }, () => {
  it('gives back exactly the latest vector or nothing, wrapping at every tail position with every length', () => {
    for (let capacity = 1; capacity <= 24; capacity++) {
      for (let start = 0; start <= capacity; start++) {
        for (let length = 0; length <= capacity + 1; length++) {
          const ring = new Checked(capacity * 4);
          const context = `capacity ${capacity}, tail at ${start}, then ${length} floats`;
          // Puts the tail at `start` (in one or two vectors), then writes `length`, then more.
          if (start > 0) ring.remember('pre', ring.vector(start), context);
          if (start > 1) ring.remember('pre2', ring.vector(1), context);
          ring.remember('x', ring.vector(length), context);
          ring.check(context, ['pre', 'pre2', 'x']);
          for (let more = 1; more <= capacity; more++) {
            ring.remember(`m${more % 5}`, ring.vector(1 + ((more * 7) % capacity)), `${context}, then #${more}`);
            ring.check(`${context}, then #${more}`, ['pre', 'pre2', 'x', 'm0', 'm1', 'm2', 'm3', 'm4']);
          }
        }
      }
    }
  });

  it('holds for long random runs: lengths 0 to past capacity, exact fills, repeated hashes, odd byte bounds', () => {
    const bounds = [0, 1, 3, 4, 5, 7, 8, 13 * 4 + 3, 64, 100 * 4 + 1, 257 * 4, 4_096 + 2];
    for (const maxBytes of bounds) {
      for (const seed of [1, 2, 3]) {
        const random = lcg(seed * 7_919 + maxBytes);
        const ring = new Checked(maxBytes);
        const capacity = ring.capacity;
        const hashCount = 1 + Math.floor(random() * 40);
        const hashes = Array.from({ length: hashCount }, (_, i) => `h${i}`);
        for (let i = 0; i < 3_000; i++) {
          const hash = random() < 0.2 ? 'same' : (hashes[Math.floor(random() * hashCount)] as string);
          const r = random();
          const length =
            r < 0.05 ? 0 : r < 0.1 ? capacity : r < 0.13 ? capacity + 1 : r < 0.16 ? Math.max(capacity - 1, 0) : 1 + Math.floor(random() * Math.max(1, Math.ceil(capacity / (random() < 0.5 ? 2 : 8))));
          ring.remember(hash, ring.vector(length), `maxBytes ${maxBytes}, seed ${seed}, #${i}`);
          if (i % 13 === 0 || length >= capacity - 1) ring.check(`maxBytes ${maxBytes}, seed ${seed}, #${i}`, [...hashes, 'same']);
        }
        ring.check(`maxBytes ${maxBytes}, seed ${seed}, end`, [...hashes, 'same']);
      }
    }
  });

  it('keeps the slot array bounded when one hash is remembered over and over in a large ring', () => {
    const ring = new Checked(4 * 10_000);
    for (let i = 0; i < 50_000; i++) {
      ring.remember(i % 2 === 0 ? 'a' : `b${i}`, ring.vector(1 + (i % 3)), `#${i}`);
      if (i % 997 === 0) ring.check(`#${i}`, ['a', `b${i - 1}`, `b${i}`]);
    }
    ring.check('end', ['a']);
  });

  it('allocates its ring only at the first vector it keeps', () => {
    const recent = new RecentVectors(16 * 2 ** 20);
    recent.remember('empty', new Float32Array(0));
    recent.remember('too long', new Float32Array(4 * 2 ** 20 + 1));
    expect((recent as unknown as { ring: unknown }).ring).toBeUndefined();
    recent.remember('one', Float32Array.of(1));
    expect((recent as unknown as { ring: Float32Array }).ring.length).toBe(4 * 2 ** 20);
  });
});
