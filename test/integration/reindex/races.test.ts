/**
 * Two operators (or an operator and `reindex --wait`) changing the generation registry at the same
 * time: every change is decided on the registry it compares and sets, so a decision taken on a
 * stale registry is retried or refused, never applied.
 */
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { runningGenerations } from '../../support/backfill-harness.js';
import { createRedis } from '../../../src/queue/connection.js';
import { Reindexer, servingConfig } from '../../../src/reindex/reindex.js';
import { waitFor } from '../../support/helpers.js';
import { pipelineHarness, upsertEvent } from '../../support/pipeline-harness.js';

/**
 * A client whose first GET (the registry read a command decides on) answers only when `release`
 * is called: a slow network between one operator's CLI and Redis. Everything else is untouched.
 */
function heldFirstGet(redis: Redis): { client: Redis; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let held = false;
  const client = new Proxy(redis, {
    get(target, property) {
      if (property === 'get') {
        return async (...args: Parameters<Redis['get']>) => {
          const value = await target.get(...args);
          if (!held) {
            held = true;
            await gate;
          }
          return value;
        };
      }
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { client, release };
}

describe('racing registry changes', () => {
  const { cleanups, setup } = pipelineHarness('races');

  const connect = (url: string, name: string) => {
    const redis = createRedis(url, name);
    cleanups.push(async () => void (await redis.quit()));
    return redis;
  };

  it('two `reindex` commands racing: only one generation is created and generation ids stay unique', async () => {
    const { config } = await setup();
    const observer = new Reindexer(config, connect(config.redis.url, 'observer'));
    const slow = heldFirstGet(connect(config.redis.url, 'operator-b'));
    const operatorA = new Reindexer(config, connect(config.redis.url, 'operator-a'));
    const operatorB = new Reindexer(config, slow.client);

    // B reads the registry (no re-index in progress), then A creates its generation, then B goes on.
    const b = operatorB.start({ model: 'model-b', dimensions: 16 });
    b.catch(() => undefined);
    const a = await operatorA.start({ model: 'model-a', dimensions: 16 });
    expect(a.id).toBe(2);
    slow.release();
    const outcomeB = await b.then(
      (g) => `created generation ${g.id} (${g.model})`,
      (e: Error) => `refused: ${e.message}`,
    );

    const generations = (await observer.registry()).generations.map((g) => `${g.id}:${g.model}`);
    expect(outcomeB, `the second reindex should be refused (a re-index is in progress); registry now ${generations.join(', ')}`).toMatch(/^refused/);
    expect(new Set((await observer.registry()).generations.map((g) => g.id)).size, `generation ids must be unique: ${generations.join(', ')}`).toBe(generations.length);
  });

  it('`switch` (e.g. from `reindex --wait`) racing `drop-old` (an operator cancelling the re-index) leaves a registry whose serving generation exists', async () => {
    const { config, produce } = await setup();
    const { reindexer: observer } = await runningGenerations(config, cleanups);
    await produce(Array.from({ length: 10 }, (_, i) => upsertEvent(`s-${i}`, 1, `item ${i}`)));
    await waitFor('generation 1 indexed', async () => (await observer.status())[0]?.points === 10);
    await observer.start({ model: 'model-v2', dimensions: 16 });
    await waitFor('generation 2 caught up', async () => {
      const s = (await observer.status()).find((x) => x.generation.id === 2);
      return s?.caughtUp === true && s.points === 10;
    }, { timeoutMs: 90_000 });

    // `switch` has read the registry (generation 2 exists and has caught up) when `drop-old` removes generation 2.
    const slow = heldFirstGet(connect(config.redis.url, 'switcher'));
    const switching = new Reindexer(config, slow.client).switchTo().then(
      (g) => `switched to ${g.id}`,
      (e: Error) => `refused: ${e.message}`,
    );
    const dropping = new Reindexer(config, connect(config.redis.url, 'dropper')).dropOld().then(
      (gs) => `dropped ${gs.map((g) => g.id).join(',')}`,
      (e: Error) => `drop refused: ${e.message}`,
    );
    await waitFor('drop-old took generation 2 out of the registry', async () => !(await observer.registry()).generations.some((g) => g.id === 2));
    slow.release();
    const outcomes = await Promise.all([switching, dropping]);

    const registry = await observer.registry();
    const summary = `switch: ${outcomes[0]}; drop-old: ${outcomes[1]}; registry: serving ${registry.serving}, generations ${registry.generations.map((g) => g.id).join(',')}`;
    expect(registry.generations.map((g) => g.id), summary).toContain(registry.serving);
    // What every `indexer search`, `export` and `verify` does first.
    await expect(servingConfig(config, connect(config.redis.url, 'search')), summary).resolves.toBeDefined();
  });
});
