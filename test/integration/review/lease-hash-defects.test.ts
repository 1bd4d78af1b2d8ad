// Review of the write-lease hash (a6a37e6): a writer that still holds an item's lease records its
// write without comparing versions. These sequences broke that as first written: another writer's
// late record landed in between (over an expired-but-unclaimed lease, or was dropped under a live
// one), and the blind record then put an older write (v5/h5) over what a version-guarded sink holds
// (v6/h6). A record over a lease that names another writer now marks it, and its holder compares.
import { describe, expect, it } from 'vitest';
import { LEASE_MS, leaseScenes, leaseWrite, type LeaseScene } from '../../support/write-leases.js';

const scenes = leaseScenes('review-lease-hash');
let scene: LeaseScene;

describe('S1/S2: a writer whose own lease expired (unclaimed) records blindly over a record made meanwhile', () => {
  it('S1: B (lapsed, taken over by A) records v6 while A\'s lease has also expired; A then records v5 blind', async () => {
    scene = scenes.fresh();
    const b = await scene.claimOne('i', 'B'); // B: sink empty
    expect(b.claimed).toBe(true);
    await scene.lapse('i', 'B'); // B's record is late (Redis stall / GC pause): its lease expires
    const a = await scene.claimOne('i', 'A'); // A takes the item over: the claim still sees nothing written
    expect(a.claimed).toBe(true);
    expect(a.written).toBeUndefined();
    await scene.lapse('i', 'A'); // A's record is late too; no one claims the item meanwhile
    // The sink applied B's upsert v6 before A's v5; A's v5 met the version guard, skipped silently, "completed".
    await scene.record('B', [leaseWrite('i', 6, false)]); // B: lease names A, expired -> compares -> records v6
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 6, contentHash: 'h6' });
    await scene.record('A', [leaseWrite('i', 5, a.written?.op === 'delete')]);
    // The sink holds v6/h6. The state must not move back to v5/h5.
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 6, contentHash: 'h6' });
  });

  it('S2: same, but A renews its expired lease (a retry) after B recorded, then records blind', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'B');
    await scene.lapse('i', 'B');
    const a = await scene.claimOne('i', 'A');
    await scene.lapse('i', 'A');
    await scene.record('B', [leaseWrite('i', 6, false)]);
    const lost = await scene.state.renewLeases(['i'], 'A', LEASE_MS);
    // Either A is told it lost the item (and does not write), or its record compares.
    if (lost === 0) await scene.record('A', [leaseWrite('i', 5, a.written?.op === 'delete')]);
    else await scene.record('A', [], ['i']);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 6, contentHash: 'h6' });
  });

  it('S1-del: B records a delete v6 over A\'s expired lease; A\'s blind upsert v5 leaves the tombstone TTL on a live item', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'B');
    await scene.lapse('i', 'B');
    await scene.claimOne('i', 'A');
    await scene.lapse('i', 'A');
    await scene.record('B', [leaseWrite('i', 6, false, true)]);
    expect(await scene.redis.ttl(scene.state.key('i'))).toBeGreaterThan(0);
    await scene.record('A', [leaseWrite('i', 5, false)]);
    const s = await scene.state.get('i');
    const ttl = await scene.redis.ttl(scene.state.key('i'));
    // Either the state kept the tombstone v6, or (the sink resurrected v5) the key must not expire.
    expect({ s, ttl }).toSatisfy(({ s, ttl }: { s: Awaited<ReturnType<typeof scene.state.get>>; ttl: number }) => (s.writtenVersion === 6 && s.deleted) || (s.writtenVersion === 5 && !s.deleted && ttl === -1));
  });
});

describe('S3: a late record dropped under another writer\'s live lease, then the holder records blind', () => {
  it('B\'s upsert v6 was applied within B\'s lease, its record is late; A (claim saw v3) writes v5 (skipped by the sink guard); state ends at v5/h5 while the sink holds v6/h6', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'C');
    await scene.record('C', [leaseWrite('i', 3, false)]); // sink and state: v3
    await scene.claimOne('i', 'B'); // B writes v6: applied, acknowledged; its record is delayed
    await scene.lapse('i', 'B');
    const a = await scene.claimOne('i', 'A'); // sees v3 (B has not recorded): v5 is newer, A writes it; the sink's guard skips it silently
    expect(a.written).toEqual({ version: 3, op: 'upsert' });
    await scene.record('B', [leaseWrite('i', 6, false)]); // B: A holds the lease -> records nothing
    await scene.record('A', [leaseWrite('i', 5, false)]); // A: holds -> records v5 without comparing
    // What a version-guarded sink holds: v6/h6. The old compare-always record ended at v6/h6 in either record order.
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 6, contentHash: 'h6' });
  });
});

