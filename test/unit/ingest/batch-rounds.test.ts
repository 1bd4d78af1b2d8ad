import { describe, expect, it } from 'vitest';
import { BatchRounds } from '../../../src/ingest/batch-rounds.js';

/** A round runner that records each round's parts and finishes when told. */
function recorder() {
  const rounds: string[][] = [];
  const finish: ((error?: Error) => void)[] = [];
  const rounder = new BatchRounds<string, number>(
    (parts) =>
      new Promise<number>((resolve, reject) => {
        rounds.push(parts);
        const n = rounds.length;
        finish.push((error) => (error ? reject(error) : resolve(n)));
      }),
  );
  return { rounds, finish, rounder };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('BatchRounds', () => {
  it('starts a round only once every batch in hand has joined, and answers each with the round', async () => {
    const { rounds, finish, rounder } = recorder();
    const a = rounder.take();
    const b = rounder.take();
    const joinedA = a.join('a');
    await settle();
    expect(rounds).toEqual([]);
    const joinedB = b.join('b');
    await settle();
    expect(rounds).toEqual([['a', 'b']]);
    finish[0]?.();
    expect(await joinedA).toBe(1);
    expect(await joinedB).toBe(1);
  });

  it('stops waiting for a batch that leaves without joining', async () => {
    const { rounds, rounder } = recorder();
    const a = rounder.take();
    const b = rounder.take();
    void a.join('a');
    b.leave();
    await settle();
    expect(rounds).toEqual([['a']]);
    // Leaving after joining changes nothing: the count of batches in hand stays right.
    a.leave();
    const c = rounder.take();
    void c.join('c');
    await settle();
    expect(rounds).toEqual([['a'], ['c']]);
  });

  it('puts a batch taken while a round runs into the next round', async () => {
    const { rounds, finish, rounder } = recorder();
    const first = rounder.take().join('a');
    await settle();
    const later = rounder.take();
    const second = later.join('b');
    await settle();
    expect(rounds).toEqual([['a'], ['b']]);
    finish[1]?.();
    finish[0]?.();
    expect(await first).toBe(1);
    expect(await second).toBe(2);
  });

  it('fails every batch of a round that fails, and the next round still runs', async () => {
    const { rounds, finish, rounder } = recorder();
    const a = rounder.take();
    const b = rounder.take();
    const joined = [a.join('a'), b.join('b')];
    await settle();
    finish[0]?.(new Error('Redis refused'));
    for (const result of await Promise.allSettled(joined)) expect(result).toMatchObject({ status: 'rejected', reason: { message: 'Redis refused' } });
    const c = rounder.take().join('c');
    await settle();
    finish[1]?.();
    expect(await c).toBe(2);
    expect(rounds).toEqual([['a', 'b'], ['c']]);
  });

  it('refuses a ticket joined twice', () => {
    const { rounder } = recorder();
    const a = rounder.take();
    void a.join('a');
    expect(() => a.join('again')).toThrow(/used twice/);
  });
});
