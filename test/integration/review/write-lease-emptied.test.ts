import { describe, expect, it } from 'vitest';
import { LEASE_MS, leaseScenes, leaseWrite, type LeaseScene } from '../../support/write-leases.js';

// A recorded write gives its lease back (the leases live in one hash per prefix, and a writer still
// holding an item's lease records its write without reading the item's hash again). These walk the
// lease through every outcome of a write (w newer, w not newer, r, u), two writers, a late writer
// whose lease was taken over, duplicates in one call, and tombstones, and check that a lease given
// back is free to exactly one claimant and never left held.
const scenes = leaseScenes('review-lease');
let scene: LeaseScene;
const claim = async (id: string, writer: string) => (await scene.claimOne(id, writer)).claimed;

describe('the write lease emptied by a recorded write', () => {
  it('is free to the next writer after a write recorded, and to exactly one of two racing claimants', async () => {
    scene = scenes.fresh();
    expect(await claim('i', 'A')).toBe(true);
    await scene.state.recordWritten([leaseWrite('i', 1)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.leaseOf('i')).toBe('');
    const [b, c] = await Promise.all([claim('i', 'B'), claim('i', 'C')]);
    expect([b, c].filter(Boolean), 'two writers both took an emptied lease').toHaveLength(1);
  });

  it('is not renewed by the writer that gave it back', async () => {
    scene = scenes.fresh();
    await claim('i', 'A');
    await scene.state.recordWritten([leaseWrite('i', 1)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
    expect(await scene.leaseOf('i')).toBe('');
  });

  it('is released when the write is not newer than what the sink holds', async () => {
    scene = scenes.fresh();
    await claim('i', 'A');
    await scene.state.recordWritten([leaseWrite('i', 5)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    await claim('i', 'A');
    await scene.state.recordWritten([leaseWrite('i', 3)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 5 });
    expect(await claim('i', 'B')).toBe(true);
  });

  it("stays with the writer that took it over when a late writer records its write, and passes to no one on 'u'", async () => {
    scene = scenes.fresh();
    await claim('i', 'A');
    // A's lease expired and B took it: A's late record must not free B's item.
    await scene.redis.hset(scene.state.leasesKey, scene.state.key('i'), 'A|1');
    expect(await claim('i', 'B')).toBe(true);
    await scene.state.recordWritten([leaseWrite('i', 2)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.leaseOf('i')).toMatch(/^B\|/);
    expect(await claim('i', 'C')).toBe(false);
    await scene.state.recordWritten([], { writerId: 'B', leaseMs: LEASE_MS, released: [], uncertain: ['i'] });
    expect(await scene.leaseOf('i')).toMatch(/^~\|/);
    expect(await claim('i', 'B'), 'an uncertain write passes the lease to no one, this writer included').toBe(false);
    expect(await claim('i', 'C')).toBe(false);
  });

  it('handles one item twice in one record, and released with written', async () => {
    scene = scenes.fresh();
    await claim('i', 'A');
    await scene.state.recordWritten([leaseWrite('i', 1), leaseWrite('i', 2)], { writerId: 'A', leaseMs: LEASE_MS, released: ['i'] });
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 2 });
    expect(await scene.leaseOf('i')).toBe('');
    expect(await claim('i', 'B')).toBe(true);
  });

  it('leaves a tombstone that expires, and a later upsert that persists, with the lease free', async () => {
    scene = scenes.fresh();
    await claim('i', 'A');
    await scene.state.recordWritten([leaseWrite('i', 1, undefined, true)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.redis.ttl(scene.state.key('i'))).toBeGreaterThan(0);
    expect(await claim('i', 'B')).toBe(true);
    await scene.state.recordWritten([leaseWrite('i', 2)], { writerId: 'B', leaseMs: LEASE_MS, released: [] });
    expect(await scene.redis.ttl(scene.state.key('i'))).toBe(-1);
    expect(await scene.leaseOf('i')).toBe('');
  });
});
