import { describe, expect, it } from 'vitest';
import { RateWindow } from '../../../src/observability/worker-heartbeat.js';

describe('RateWindow', () => {
  it('has no rate before two samples', () => {
    const w = new RateWindow(60_000);
    expect(w.rates()).toEqual({ eventsPerSecond: 0, itemsWrittenPerSecond: 0, windowSeconds: 0 });
    w.add({ at: 0, events: 0, items: 0 });
    expect(w.rates().windowSeconds).toBe(0);
  });

  it('measures over the last minute only, once more than a minute of samples is held', () => {
    const w = new RateWindow(60_000);
    // 100 events/s for the first minute, then 10 events/s; items at half the event rate.
    let events = 0;
    for (let s = 0; s <= 120; s += 5) {
      w.add({ at: s * 1000, events, items: events / 2 });
      events += (s < 60 ? 100 : 10) * 5;
    }
    const rates = w.rates();
    expect(rates.windowSeconds).toBe(60);
    expect(rates.eventsPerSecond).toBeCloseTo(10);
    expect(rates.itemsWrittenPerSecond).toBeCloseTo(5);
  });

  it('uses the whole span while it is shorter than the window', () => {
    const w = new RateWindow(60_000);
    w.add({ at: 0, events: 0, items: 0 });
    w.add({ at: 5_000, events: 50, items: 10 });
    expect(w.rates()).toEqual({ eventsPerSecond: 10, itemsWrittenPerSecond: 2, windowSeconds: 5 });
  });
});
