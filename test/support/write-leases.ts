import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { ItemStateStore } from '../../src/state/item-state.js';
import { deletePrefix, services, uniqueName } from './helpers.js';

/** Long enough never to lapse within a test: a test lapses a lease on purpose (`lapse`). */
export const LEASE_MS = 60_000;

/** A write as a writer records it: content hash `h<version>` and model `m`, none for a delete. */
export function leaseWrite(itemId: string, version: number, sinkHeldDelete?: boolean, deleted = false) {
  return { itemId, version, deleted, contentHash: deleted ? '' : `h${version}`, model: deleted ? '' : 'm', sinkHeldDelete };
}
export type LeaseWrite = ReturnType<typeof leaseWrite>;

/** The item state of one prefix, and the moves of writers that the lease tests make on it. */
export class LeaseScene {
  readonly state: ItemStateStore;

  constructor(readonly redis: Redis, readonly prefix: string, tombstoneRetentionSeconds = 3600) {
    this.state = new ItemStateStore(redis, prefix, tombstoneRetentionSeconds);
  }

  async claimOne(itemId: string, writer: string) {
    return (await this.state.claimForWrite([itemId], writer, LEASE_MS))[0] as Awaited<ReturnType<ItemStateStore['claimForWrite']>>[number];
  }

  /** Whether the writer took each item's lease. */
  async claims(itemIds: string[], writer: string): Promise<boolean[]> {
    return (await this.state.claimForWrite(itemIds, writer, LEASE_MS)).map((c) => c.claimed);
  }

  record(writer: string, writes: LeaseWrite[], released: string[] = [], uncertain: string[] = []): Promise<void> {
    return this.state.recordWritten(writes, { writerId: writer, leaseMs: LEASE_MS, released, uncertain });
  }

  /** The writer's lease on the item expired (its record is late: a stall, a pause) and still names it. */
  lapse(itemId: string, writer: string): Promise<number> {
    return this.redis.hset(this.state.leasesKey, this.state.key(itemId), `${writer}|1`);
  }

  /** The item's lease as stored, '' when no one holds it. */
  async leaseOf(itemId: string): Promise<string> {
    return (await this.redis.hget(this.state.leasesKey, this.state.key(itemId))) ?? '';
  }
}

/**
 * Lease scenes on the shared Redis for the tests of one file: `fresh()` starts one under a new
 * prefix, whose keys are removed after the test.
 */
export function leaseScenes(label: string): { fresh(tombstoneRetentionSeconds?: number): LeaseScene } {
  let redis: Redis;
  let prefix: string | undefined;
  beforeAll(() => {
    redis = new Redis(services().redisUrl);
  });
  afterAll(() => redis.disconnect());
  afterEach(async () => {
    if (prefix !== undefined) await deletePrefix(services().redisUrl, prefix);
    prefix = undefined;
  });
  return {
    fresh(tombstoneRetentionSeconds = 3600) {
      prefix = uniqueName(label);
      return new LeaseScene(redis, prefix, tombstoneRetentionSeconds);
    },
  };
}
