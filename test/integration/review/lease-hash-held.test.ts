// Review of the write-lease hash (a6a37e6): interleavings of two or three writers, lapsed leases,
// 'r' and 'u' entries, duplicates in one call, FORGET, tombstone expiry and ingest between claim
// and record, and batches past the scripts' chunk; the guarantees they check held.
import { describe, expect, it } from 'vitest';
import { LEASE_MS, leaseScenes, leaseWrite, type LeaseScene } from '../../support/write-leases.js';

const scenes = leaseScenes('review-lease-hash');
let scene: LeaseScene;

describe('held scenarios', () => {
  it('three writers: A and B lapse in turn, C holds; late records never free C\'s lease or move the state back, and the lease is freed', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'A');
    await scene.lapse('i', 'A');
    await scene.claimOne('i', 'B');
    await scene.lapse('i', 'B');
    const c = await scene.claimOne('i', 'C');
    expect(c.claimed).toBe(true);
    await scene.record('A', [leaseWrite('i', 9, false)], ['i']);
    await scene.record('B', [], ['i']);
    expect(await scene.leaseOf('i'), 'a late writer released a lease it no longer holds').toMatch(/^C\|/);
    await scene.record('C', [leaseWrite('i', 7, false)]);
    expect((await scene.state.get('i')).writtenVersion, "A's late v9 was recorded (compared), and C's v7 compared against it").toBe(9);
    expect(await scene.leaseOf('i')).toBe('');
    // Nobody can renew now.
    expect(await scene.state.renewLeases(['i'], 'C', LEASE_MS)).toBe(1);
    expect(await scene.state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
  });

  it('A\'s lapsed record after C released (r): compares, does not go backwards', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'C');
    await scene.record('C', [leaseWrite('i', 9, false)]);
    await scene.claimOne('i', 'A');
    await scene.lapse('i', 'A');
    await scene.claimOne('i', 'C');
    await scene.record('C', [], ['i']);
    expect(await scene.leaseOf('i')).toBe('');
    await scene.record('A', [leaseWrite('i', 5, false)]);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 9, contentHash: 'h9' });
  });

  it('uncertain then the same writer id in its next batch: refused until expiry; after expiry the claim sees the state', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'A');
    await scene.record('A', [], [], ['i']);
    expect(await scene.leaseOf('i')).toMatch(/^~\|/);
    expect((await scene.claimOne('i', 'A')).claimed).toBe(false);
    expect((await scene.claimOne('i', 'B')).claimed).toBe(false);
    expect(await scene.state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
    await scene.record('A', [], ['i']);
    expect(await scene.leaseOf('i'), "a release does not end '~'").toMatch(/^~\|/);
    await scene.lapse('i', '~');
    expect((await scene.claimOne('i', 'B')).claimed).toBe(true);
  });

  it('a lapsed uncertain entry lets a late record compare (no blind record on ~)', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'A');
    await scene.record('A', [leaseWrite('i', 9, false)]);
    await scene.claimOne('i', 'A');
    await scene.record('A', [], [], ['i']);
    await scene.lapse('i', '~');
    await scene.record('A', [leaseWrite('i', 3, false)]);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 9 });
  });

  it('duplicates in one record call: w+r, r+w, w+u, u+w, w+w with stale sinkHeldDelete', async () => {
    scene = scenes.fresh();
    for (const id of ['wr', 'rw', 'wu', 'uw', 'ww']) await scene.claimOne(id, 'A');
    await scene.record('A', [leaseWrite('wr', 2, false), leaseWrite('rw', 2, false), leaseWrite('wu', 2, false), leaseWrite('uw', 2, false), leaseWrite('ww', 2, false), leaseWrite('ww', 1, true)], ['wr', 'rw'], ['wu', 'uw']);
    const s = await scene.state.getMany(['wr', 'rw', 'wu', 'uw', 'ww']);
    expect(s.map((x) => x.writtenVersion)).toEqual([2, 2, 2, 2, 2]);
    expect(s[4]?.contentHash).toBe('h2');
    // The writes come first in the call, so the u entries find the lease already given back.
    expect(await scene.leaseOf('wu')).toBe('');
    expect(await scene.leaseOf('wr')).toBe('');
  });

  it('FORGET between claim and record: blind record sets the new write; a forgotten tombstone persisted', async () => {
    scene = scenes.fresh(60);
    await scene.claimOne('i', 'A');
    await scene.record('A', [leaseWrite('i', 3, false, true)]);
    expect(await scene.redis.ttl(scene.state.key('i'))).toBeGreaterThan(0);
    const a = await scene.claimOne('i', 'A');
    expect(a.written).toEqual({ version: 3, op: 'delete' });
    await scene.state.forgetWritten(['i']);
    await scene.record('A', [leaseWrite('i', 5, true)]);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 5, deleted: false, contentHash: 'h5' });
    expect(await scene.redis.ttl(scene.state.key('i'))).toBe(-1);
  });

  it('FORGET then a delete recorded blind: the tombstone expires', async () => {
    scene = scenes.fresh(60);
    await scene.claimOne('i', 'A');
    await scene.record('A', [leaseWrite('i', 3, false)]);
    await scene.claimOne('i', 'A');
    await scene.state.forgetWritten(['i']);
    await scene.record('A', [leaseWrite('i', 5, false, true)]);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 5, deleted: true });
    expect(await scene.redis.ttl(scene.state.key('i'))).toBeGreaterThan(0);
  });

  it('tombstone expired between claim and blind record: the new upsert recreates a key that does not expire', async () => {
    scene = scenes.fresh(60);
    await scene.claimOne('i', 'A');
    await scene.record('A', [leaseWrite('i', 3, false, true)]);
    const a = await scene.claimOne('i', 'A');
    await scene.redis.del(scene.state.key('i')); // the tombstone's retention passed
    await scene.record('A', [leaseWrite('i', 5, a.written?.op === 'delete')]);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 5, deleted: false });
    expect(await scene.redis.ttl(scene.state.key('i'))).toBe(-1);
  });

  it('observe (ingest/prune/backfill) between claim and record: seen/qj/t untouched by the blind record', async () => {
    scene = scenes.fresh();
    const keys = { jobPrefix: `${scene.prefix}:embed:`, failedKey: `${scene.prefix}:embed:failed` };
    await scene.state.observe([{ itemId: 'i', version: 4, op: 'upsert', jobId: 'j4', versionSource: 'version' }], keys);
    await scene.claimOne('i', 'A');
    await scene.state.observe([{ itemId: 'i', version: 7, op: 'delete', jobId: 'j7', versionSource: undefined }], keys);
    await scene.record('A', [leaseWrite('i', 4, false)]);
    const s = await scene.state.get('i');
    expect(s).toMatchObject({ seen: 7, seenDeleted: true, writtenVersion: 4 });
    expect(await scene.redis.hget(scene.state.key('i'), 'vs')).toBe('v');
  });

  it('two claimants racing on a lapsed lease: exactly one wins; the loser cannot renew', async () => {
    scene = scenes.fresh();
    await scene.claimOne('i', 'A');
    await scene.lapse('i', 'A');
    const [b, c] = await Promise.all([scene.claimOne('i', 'B'), scene.claimOne('i', 'C')]);
    expect([b.claimed, c.claimed].filter(Boolean)).toHaveLength(1);
    const loser = b.claimed ? 'C' : 'B';
    expect(await scene.state.renewLeases(['i'], loser, LEASE_MS)).toBe(1);
    expect(await scene.state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
  });

  it('old wl in the item hash: not honoured by renew or record, only by the claim', async () => {
    scene = scenes.fresh();
    await scene.redis.hset(scene.state.key('i'), 'wl', `X|${Date.now() + LEASE_MS}`, 'wv', '4', 'del', '0', 'h', 'h4', 'm', 'm');
    expect((await scene.claimOne('i', 'A')).claimed).toBe(false);
    // An old writer X records with the new script (after an upgrade): compares (no lease in the hash).
    await scene.record('X', [leaseWrite('i', 3, false)]);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 4 });
    expect(await scene.redis.hget(scene.state.key('i'), 'wl')).toMatch(/^X\|/);
  });
});

describe('Lua edges', () => {
  it('record with only released / only uncertain entries; raw eval with no items', async () => {
    scene = scenes.fresh();
    await scene.claimOne('a', 'A');
    await scene.claimOne('b', 'A');
    await scene.record('A', [], ['a']);
    await scene.record('A', [], [], ['b']);
    expect(await scene.leaseOf('a')).toBe('');
    expect(await scene.leaseOf('b')).toMatch(/^~\|/);
    // released/uncertain of items never claimed: nothing changes, no error
    await scene.record('A', [], ['zz'], ['yy']);
    expect(await scene.redis.hlen(scene.state.leasesKey)).toBe(1);
  });

  it('a claim of 2,500 ids with 1,200 duplicates and 1,300 held by another writer, past the chunk', async () => {
    scene = scenes.fresh();
    const held = Array.from({ length: 1300 }, (_, i) => `h${i}`);
    await scene.state.claimForWrite(held, 'B', LEASE_MS);
    const ids = [...Array.from({ length: 1200 }, (_, i) => `d${i % 600}`), ...held];
    const claims = await scene.state.claimForWrite(ids, 'A', LEASE_MS);
    expect(claims.slice(0, 1200).every((c) => c.claimed)).toBe(true);
    expect(claims.slice(1200).some((c) => c.claimed)).toBe(false);
    expect(await scene.redis.hlen(scene.state.leasesKey)).toBe(1900);
    expect(await scene.state.renewLeases(ids, 'A', LEASE_MS)).toBe(1300);
    await scene.record('A', ids.slice(0, 1200).map((id, k) => leaseWrite(id, k, false)), held);
    // held by B: A's released entries must not free B's leases
    expect(await scene.redis.hlen(scene.state.leasesKey)).toBe(1300);
    const s = await scene.state.getMany(['d0', 'd599']);
    expect(s.map((x) => x.writtenVersion)).toEqual([600, 1199]);
  });
});
