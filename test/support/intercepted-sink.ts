import type { VectorSink } from '../../src/sinks/vector-sink.js';

/** The sink methods that write; a fault injected on one must be on all (the writer calls `write`). */
export type SinkWriteMethod = 'write' | 'upsert' | 'delete' | 'updatePayload';
const WRITE_METHODS: readonly string[] = ['write', 'upsert', 'delete', 'updatePayload'];

/**
 * A real sink whose write calls pass through `before` first: it may throw (an outage, a refusal)
 * or wait (a slow request) before the real call runs. Reads and everything else go straight
 * through. What tests use to inject sink faults without a stub standing in for the store.
 */
export function interceptedSink(real: VectorSink, before: (method: SinkWriteMethod, arg: unknown) => Promise<void> | void): VectorSink {
  return new Proxy(real, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const call = (value as (...args: unknown[]) => unknown).bind(target);
      if (typeof prop !== 'string' || !WRITE_METHODS.includes(prop)) return call;
      return async (arg: unknown) => {
        await before(prop as SinkWriteMethod, arg);
        return call(arg);
      };
    },
  });
}
