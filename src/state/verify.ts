import type { VectorSink } from '../sinks/vector-sink.js';
import type { ItemStateStore } from './item-state.js';

export type DriftKind =
  /** The state says the sink holds the item; the sink has no point. */
  | 'missing'
  /** The sink holds another version or text than the state recorded. */
  | 'stale'
  /** The state holds a tombstone; the sink still has the point. */
  | 'deleted_but_present'
  /** The sink holds a point this deployment's state knows nothing of. */
  | 'untracked';

export interface Drift {
  kind: DriftKind;
  itemId: string;
  state: { version?: number; deleted: boolean; contentHash?: string } | undefined;
  sink: { version: number; contentHash: string } | undefined;
}

export interface VerifyReport {
  itemsInState: number;
  pointsInSink: number;
  drift: Drift[];
  repaired: { deleted: number; forgotten: number };
}

/**
 * Compares the per-item state with what the sink really holds. With `repair`: points the state
 * says are deleted are deleted (guarded by the tombstone's version); items the sink lost or holds
 * stale are forgotten by the state, so the next change or replay of them is written rather than
 * skipped. The state keeps no event text, so verify cannot re-embed by itself: replay the source
 * (or re-send those items) after a repair.
 */
export async function verify(state: ItemStateStore, sink: VectorSink, options: { repair: boolean; onProgress?: (scanned: number) => void }): Promise<VerifyReport> {
  const inSink = new Map<string, { version: number; contentHash: string }>();
  for await (const record of sink.scan({ pageSize: 512 })) {
    inSink.set(record.itemId, { version: record.payload.version, contentHash: record.payload.content_hash });
    if (inSink.size % 10_000 === 0) options.onProgress?.(inSink.size);
  }

  const drift: Drift[] = [];
  const tracked = new Set<string>();
  for await (const ids of state.itemIds()) {
    const states = await state.getMany(ids);
    ids.forEach((itemId, i) => {
      tracked.add(itemId);
      const s = states[i];
      if (!s || s.writtenVersion === undefined) return; // seen, not written yet: in flight
      const held = inSink.get(itemId);
      const view = { version: s.writtenVersion, deleted: s.deleted, contentHash: s.contentHash };
      if (s.deleted) {
        if (held && held.version <= s.writtenVersion) drift.push({ kind: 'deleted_but_present', itemId, state: view, sink: held });
      } else if (!held) {
        drift.push({ kind: 'missing', itemId, state: view, sink: undefined });
      } else if (held.version !== s.writtenVersion || held.contentHash !== s.contentHash) {
        drift.push({ kind: 'stale', itemId, state: view, sink: held });
      }
    });
  }
  for (const [itemId, held] of inSink) if (!tracked.has(itemId)) drift.push({ kind: 'untracked', itemId, state: undefined, sink: held });

  const repaired = { deleted: 0, forgotten: 0 };
  if (options.repair) {
    const toDelete = drift.filter((d) => d.kind === 'deleted_but_present').map((d) => ({ itemId: d.itemId, version: d.state?.version as number }));
    await sink.delete(toDelete);
    repaired.deleted = toDelete.length;
    const toForget = drift.filter((d) => d.kind === 'missing' || d.kind === 'stale').map((d) => d.itemId);
    await state.forgetWritten(toForget);
    repaired.forgotten = toForget.length;
  }
  return { itemsInState: tracked.size, pointsInSink: inSink.size, drift, repaired };
}
