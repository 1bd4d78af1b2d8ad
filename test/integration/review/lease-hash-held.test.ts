// Review of the write-lease hash (a6a37e6): interleavings of two or three writers, lapsed leases,
// 'r' and 'u' entries, duplicates in one call, FORGET, tombstone expiry and ingest between claim
// and record, and batches past the scripts' chunk; the guarantees they check held.
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ItemStateStore } from '../../../src/state/item-state.js';
import { deletePrefix, services, uniqueName } from '../../support/helpers.js';

const LEASE_MS = 60_000;
let redis: Redis;
let prefix: string;
let state: ItemStateStore;

beforeAll(() => {
  redis = new Redis(services().redisUrl);
});
afterAll(() => redis.disconnect());
afterEach(() => deletePrefix(services().redisUrl, prefix));

function fresh(retention = 3600): void {
  prefix = uniqueName('review-lease-hash');
  state = new ItemStateStore(redis, prefix, retention);
}
const claimOne = async (id: string, writer: string) => (await state.claimForWrite([id], writer, LEASE_MS))[0]!;
const lapse = (id: string, writer: string) => redis.hset(state.leasesKey, state.key(id), `${writer}|1`);
const leaseOf = async (id: string) => (await redis.hget(state.leasesKey, state.key(id))) ?? '';
const w = (id: string, version: number, sinkHeldDelete: boolean | undefined, deleted = false) => ({ itemId: id, version, deleted, contentHash: deleted ? '' : `h${version}`, model: deleted ? '' : 'm', sinkHeldDelete });
const rec = (writer: string, writes: ReturnType<typeof w>[], released: string[] = [], uncertain: string[] = []) => state.recordWritten(writes, { writerId: writer, leaseMs: LEASE_MS, released, uncertain });

describe('held scenarios', () => {
  it('three writers: A and B lapse in turn, C holds; only C records, A and B record nothing, lease freed', async () => {
    fresh();
    await claimOne('i', 'A');
    await lapse('i', 'A');
    await claimOne('i', 'B');
    await lapse('i', 'B');
    const c = await claimOne('i', 'C');
    expect(c.claimed).toBe(true);
    await rec('A', [w('i', 9, false)], ['i']);
    await rec('B', [], ['i']);
    expect(await leaseOf('i'), 'a late writer released a lease it no longer holds').toMatch(/^C\|/);
    await rec('C', [w('i', 7, false)]);
    expect((await state.get('i')).writtenVersion).toBeGreaterThanOrEqual(7);
    expect(await leaseOf('i')).toBe('');
    // Nobody can renew now.
    expect(await state.renewLeases(['i'], 'C', LEASE_MS)).toBe(1);
    expect(await state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
  });

  it('A\'s lapsed record after C released (r): compares, does not go backwards', async () => {
    fresh();
    await claimOne('i', 'C');
    await rec('C', [w('i', 9, false)]);
    await claimOne('i', 'A');
    await lapse('i', 'A');
    await claimOne('i', 'C');
    await rec('C', [], ['i']);
    expect(await leaseOf('i')).toBe('');
    await rec('A', [w('i', 5, false)]);
    expect(await state.get('i')).toMatchObject({ writtenVersion: 9, contentHash: 'h9' });
  });

  it('uncertain then the same writer id in its next batch: refused until expiry; after expiry the claim sees the state', async () => {
    fresh();
    await claimOne('i', 'A');
    await rec('A', [], [], ['i']);
    expect(await leaseOf('i')).toMatch(/^~\|/);
    expect((await claimOne('i', 'A')).claimed).toBe(false);
    expect((await claimOne('i', 'B')).claimed).toBe(false);
    expect(await state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
    await rec('A', [], ['i']);
    expect(await leaseOf('i'), "a release does not end '~'").toMatch(/^~\|/);
    await lapse('i', '~');
    expect((await claimOne('i', 'B')).claimed).toBe(true);
  });

  it('a lapsed uncertain entry lets a late record compare (no blind record on ~)', async () => {
    fresh();
    await claimOne('i', 'A');
    await rec('A', [w('i', 9, false)]);
    await claimOne('i', 'A');
    await rec('A', [], [], ['i']);
    await lapse('i', '~');
    await rec('A', [w('i', 3, false)]);
    expect(await state.get('i')).toMatchObject({ writtenVersion: 9 });
  });

  it('duplicates in one record call: w+r, r+w, w+u, u+w, w+w with stale sinkHeldDelete', async () => {
    fresh();
    for (const id of ['wr', 'rw', 'wu', 'uw', 'ww']) await claimOne(id, 'A');
    await rec('A', [w('wr', 2, false), w('rw', 2, false), w('wu', 2, false), w('uw', 2, false), w('ww', 2, false), w('ww', 1, true)], ['wr', 'rw'], ['wu', 'uw']);
    const s = await state.getMany(['wr', 'rw', 'wu', 'uw', 'ww']);
    expect(s.map((x) => x.writtenVersion)).toEqual([2, 2, 2, 2, 2]);
    expect(s[4]?.contentHash).toBe('h2');
    // The writes come first in the call, so the u entries find the lease already given back.
    expect(await leaseOf('wu')).toBe('');
    expect(await leaseOf('wr')).toBe('');
  });

  it('FORGET between claim and record: blind record sets the new write; a forgotten tombstone persisted', async () => {
    fresh(60);
    await claimOne('i', 'A');
    await rec('A', [w('i', 3, false, true)]);
    expect(await redis.ttl(state.key('i'))).toBeGreaterThan(0);
    const a = await claimOne('i', 'A');
    expect(a.written).toEqual({ version: 3, op: 'delete' });
    await state.forgetWritten(['i']);
    await rec('A', [w('i', 5, true)]);
    expect(await state.get('i')).toMatchObject({ writtenVersion: 5, deleted: false, contentHash: 'h5' });
    expect(await redis.ttl(state.key('i'))).toBe(-1);
  });

  it('FORGET then a delete recorded blind: the tombstone expires', async () => {
    fresh(60);
    await claimOne('i', 'A');
    await rec('A', [w('i', 3, false)]);
    await claimOne('i', 'A');
    await state.forgetWritten(['i']);
    await rec('A', [w('i', 5, false, true)]);
    expect(await state.get('i')).toMatchObject({ writtenVersion: 5, deleted: true });
    expect(await redis.ttl(state.key('i'))).toBeGreaterThan(0);
  });

  it('tombstone expired between claim and blind record: the new upsert recreates a key that does not expire', async () => {
    fresh(60);
    await claimOne('i', 'A');
    await rec('A', [w('i', 3, false, true)]);
    const a = await claimOne('i', 'A');
    await redis.del(state.key('i')); // the tombstone's retention passed
    await rec('A', [w('i', 5, a.written?.op === 'delete')]);
    expect(await state.get('i')).toMatchObject({ writtenVersion: 5, deleted: false });
    expect(await redis.ttl(state.key('i'))).toBe(-1);
  });

  it('observe (ingest/prune/backfill) between claim and record: seen/qj/t untouched by the blind record', async () => {
    fresh();
    const keys = { jobPrefix: `${prefix}:embed:`, failedKey: `${prefix}:embed:failed` };
    await state.observe([{ itemId: 'i', version: 4, op: 'upsert', jobId: 'j4', versionSource: 'version' }], keys);
    await claimOne('i', 'A');
    await state.observe([{ itemId: 'i', version: 7, op: 'delete', jobId: 'j7', versionSource: undefined }], keys);
    await rec('A', [w('i', 4, false)]);
    const s = await state.get('i');
    expect(s).toMatchObject({ seen: 7, seenDeleted: true, writtenVersion: 4 });
    expect(await redis.hget(state.key('i'), 'vs')).toBe('v');
  });

  it('two claimants racing on a lapsed lease: exactly one wins; the loser cannot renew', async () => {
    fresh();
    await claimOne('i', 'A');
    await lapse('i', 'A');
    const [b, c] = await Promise.all([claimOne('i', 'B'), claimOne('i', 'C')]);
    expect([b.claimed, c.claimed].filter(Boolean)).toHaveLength(1);
    const loser = b.claimed ? 'C' : 'B';
    expect(await state.renewLeases(['i'], loser, LEASE_MS)).toBe(1);
    expect(await state.renewLeases(['i'], 'A', LEASE_MS)).toBe(1);
  });

  it('old wl in the item hash: not honoured by renew or record, only by the claim', async () => {
    fresh();
    await redis.hset(state.key('i'), 'wl', `X|${Date.now() + LEASE_MS}`, 'wv', '4', 'del', '0', 'h', 'h4', 'm', 'm');
    expect((await claimOne('i', 'A')).claimed).toBe(false);
    // An old writer X records with the new script (after an upgrade): compares (no lease in the hash).
    await rec('X', [w('i', 3, false)]);
    expect(await state.get('i')).toMatchObject({ writtenVersion: 4 });
    expect(await redis.hget(state.key('i'), 'wl')).toMatch(/^X\|/);
  });
});

describe('Lua edges', () => {
  it('record with only released / only uncertain entries; raw eval with no items', async () => {
    fresh();
    await claimOne('a', 'A');
    await claimOne('b', 'A');
    await rec('A', [], ['a']);
    await rec('A', [], [], ['b']);
    expect(await leaseOf('a')).toBe('');
    expect(await leaseOf('b')).toMatch(/^~\|/);
    // released/uncertain of items never claimed: nothing changes, no error
    await rec('A', [], ['zz'], ['yy']);
    expect(await redis.hlen(state.leasesKey)).toBe(1);
  });

  it('a claim of 2,500 ids with 1,200 duplicates and 1,300 held by another writer, past the chunk', async () => {
    fresh();
    const held = Array.from({ length: 1300 }, (_, i) => `h${i}`);
    await state.claimForWrite(held, 'B', LEASE_MS);
    const ids = [...Array.from({ length: 1200 }, (_, i) => `d${i % 600}`), ...held];
    const claims = await state.claimForWrite(ids, 'A', LEASE_MS);
    expect(claims.slice(0, 1200).every((c) => c.claimed)).toBe(true);
    expect(claims.slice(1200).some((c) => c.claimed)).toBe(false);
    expect(await redis.hlen(state.leasesKey)).toBe(1900);
    expect(await state.renewLeases(ids, 'A', LEASE_MS)).toBe(1300);
    await rec('A', ids.slice(0, 1200).map((id, k) => w(id, k, false)), held);
    // held by B: A's released entries must not free B's leases
    expect(await redis.hlen(state.leasesKey)).toBe(1300);
    const s = await state.getMany(['d0', 'd599']);
    expect(s.map((x) => x.writtenVersion)).toEqual([600, 1199]);
  });
});
