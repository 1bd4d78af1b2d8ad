import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisServer } from '../../support/redis-server.js';
import { LEASE_MS, LeaseScene, leaseWrite } from '../../support/write-leases.js';

// The write leases live in one hash per prefix, so that a batch's leases cost a command or two for
// the whole batch, and a writer that still holds an item's lease records its write without reading
// the item's hash again. These check what that shortcut must never do (move the state backwards,
// trust a claim that another writer's record made stale, lose a tombstone's expiry), what it must cost, and that a
// lease left in an item's hash by an older version is honoured. A Redis of the test's own: its
// command counts are the writer's alone.
let server: RedisServer;
let redis: Redis;
let scene: LeaseScene;

beforeAll(async () => {
  server = new RedisServer({ appendonly: 'no' });
  redis = new Redis(await server.start());
});
afterAll(async () => {
  redis.disconnect();
  await server.remove();
});

let run = 0;
function fresh(): void {
  run += 1;
  scene = new LeaseScene(redis, `leases-${run}`);
}

/** Calls of each command the server ran (scripts' commands included) while `fn` ran. */
async function commandsDuring(fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const read = async () => Object.fromEntries([...(await redis.info('commandstats')).matchAll(/cmdstat_(\w+):calls=(\d+)/g)].map((m) => [m[1] as string, Number(m[2])]));
  const before = await read();
  await fn();
  const after = await read();
  return Object.fromEntries(Object.entries(after).map(([name, calls]) => [name, calls - (before[name] ?? 0)]).filter(([, n]) => (n as number) > 0));
}

describe('write leases in one hash per prefix', () => {
  it('costs one HMGET per item to claim and one HSET per item to record, the leases a command or two per batch', async () => {
    fresh();
    const ids = Array.from({ length: 50 }, (_, i) => `i${i}`);
    const claimed = await commandsDuring(() => scene.claims(ids, 'A'));
    expect(claimed).toMatchObject({ hmget: 51, hset: 1 });
    const recorded = await commandsDuring(() => scene.state.recordWritten(ids.map((id) => leaseWrite(id, 1, false)), { writerId: 'A', leaseMs: LEASE_MS, released: [] }));
    expect(recorded).toMatchObject({ hmget: 1, hset: 50, hdel: 1 });
    expect(await redis.hlen(scene.state.leasesKey), 'every lease given back').toBe(0);
    expect(await scene.state.get('i7')).toMatchObject({ writtenVersion: 1, contentHash: 'h1' });
  });

  it('makes the holder compare when a late writer recorded over its lease: the state never moves backwards', async () => {
    fresh();
    await scene.claims(['i'], 'A');
    await scene.lapse('i', 'A');
    expect(await scene.claims(['i'], 'B')).toEqual([true]);
    // A, late, records v7 while B holds the item: it compares, records, and marks B's lease.
    await scene.state.recordWritten([leaseWrite('i', 7, false)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 7 });
    expect(await redis.hget(scene.state.leasesKey, scene.state.key('i'))).toMatch(/^B\|\d+\|c$/);
    expect(await scene.claims(['i'], 'C'), 'the marked lease still keeps other writers out').toEqual([false]);
    expect(await scene.state.renewLeases(['i'], 'B', LEASE_MS)).toBe(0);
    expect(await redis.hget(scene.state.leasesKey, scene.state.key('i')), 'a renewal keeps the mark').toMatch(/^B\|\d+\|c$/);
    // B's claim found nothing written and chose v6; a record that trusted it would put v6 over v7.
    await scene.state.recordWritten([leaseWrite('i', 6, false)], { writerId: 'B', leaseMs: LEASE_MS, released: [] });
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 7, contentHash: 'h7' });
    expect(await redis.hexists(scene.state.leasesKey, scene.state.key('i'))).toBe(0);
  });

  it('compares with the item before recording when the lease lapsed and another writer recorded meanwhile', async () => {
    fresh();
    await scene.claims(['i'], 'A');
    await scene.lapse('i', 'A');
    await scene.claims(['i'], 'B');
    await scene.state.recordWritten([leaseWrite('i', 9, false)], { writerId: 'B', leaseMs: LEASE_MS, released: [] });
    // A's claim found nothing in the sink; a record that trusted it would put v5 over v9.
    await scene.state.recordWritten([leaseWrite('i', 5, false)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 9, contentHash: 'h9' });
  });

  it('records a write whose lease lapsed unclaimed, after comparing', async () => {
    fresh();
    await scene.claims(['i'], 'A');
    await scene.lapse('i', 'A');
    await scene.state.recordWritten([leaseWrite('i', 3, false)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 3 });
    expect(await redis.hexists(scene.state.leasesKey, scene.state.key('i'))).toBe(0);
  });

  it('keeps the newest of two writes of one item in one record, in either order', async () => {
    fresh();
    await scene.claims(['a', 'b'], 'A');
    await scene.state.recordWritten([leaseWrite('a', 2, false), leaseWrite('a', 1, false), leaseWrite('b', 1, false), leaseWrite('b', 2, false)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect((await scene.state.getMany(['a', 'b'])).map((s) => s.writtenVersion)).toEqual([2, 2]);
  });

  it('sets a tombstone to expire and an upsert over a tombstone to stay, without reading the item', async () => {
    fresh();
    await scene.claims(['i'], 'A');
    await scene.state.recordWritten([leaseWrite('i', 1, false, true)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await redis.ttl(scene.state.key('i'))).toBeGreaterThan(0);
    const [claimedAgain] = await scene.state.claimForWrite(['i'], 'A', LEASE_MS);
    expect(claimedAgain?.written).toEqual({ version: 1, op: 'delete' });
    await scene.state.recordWritten([leaseWrite('i', 2, true)], { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await redis.ttl(scene.state.key('i')), 'the item came back: its state must not expire').toBe(-1);
    expect(await scene.state.get('i')).toMatchObject({ writtenVersion: 2, deleted: false });
  });

  it('renews only the leases this writer holds, in one read and one write', async () => {
    fresh();
    await scene.claims(['a', 'b', 'c'], 'A');
    await scene.lapse('c', 'A');
    await scene.claims(['c'], 'B');
    let lost = -1;
    const renewed = await commandsDuring(async () => (lost = await scene.state.renewLeases(['a', 'b', 'c'], 'A', LEASE_MS)));
    expect(lost).toBe(1);
    expect(renewed).toMatchObject({ hmget: 1, hset: 1 });
    expect(await redis.hget(scene.state.leasesKey, scene.state.key('c'))).toMatch(/^B\|/);
  });

  it("honours a lease an older version left in the item's own hash until it expires", async () => {
    fresh();
    await redis.hset(scene.state.key('old'), 'wl', `X|${Date.now() + LEASE_MS}`, 'wv', '4');
    await redis.hset(scene.state.key('lapsed'), 'wl', 'X|1');
    expect(await scene.claims(['old', 'lapsed'], 'A')).toEqual([false, true]);
  });

  it('claims and records batches larger than one Lua unpack takes', async () => {
    fresh();
    const ids = Array.from({ length: 9000 }, (_, i) => `i${i}`);
    expect((await scene.claims(ids, 'A')).every(Boolean)).toBe(true);
    expect(await scene.state.renewLeases(ids, 'A', LEASE_MS)).toBe(0);
    await scene.state.recordWritten(ids.map((id) => leaseWrite(id, 1, false)), { writerId: 'A', leaseMs: LEASE_MS, released: [] });
    expect(await redis.hlen(scene.state.leasesKey)).toBe(0);
    expect(await scene.state.get('i8999')).toMatchObject({ writtenVersion: 1 });
  });
});
