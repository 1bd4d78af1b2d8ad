import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { PeriodicTask } from '../../../src/core/periodic.js';
import type { Logger } from '../../../src/observability/logger.js';

/** A logger that records what it was told, by level. */
function recordingLogger(): { logger: Logger; lines: { level: number; msg: string }[] } {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string }) }) as unknown as Logger;
  return { logger, lines };
}

const waitUntil = async (check: () => boolean) => {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

describe('PeriodicTask', () => {
  it('never runs twice at once: ticks while a run waits are skipped, and stop waits for it', async () => {
    vi.useFakeTimers();
    try {
      let running = 0;
      let most = 0;
      let runs = 0;
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const task = new PeriodicTask(async () => {
        runs++;
        running++;
        most = Math.max(most, running);
        await held;
        running--;
      }, 5, recordingLogger().logger, { failing: 'failing', recovered: 'recovered' });
      task.start();
      await vi.advanceTimersByTimeAsync(60); // twelve ticks while the first run waits
      expect(runs).toBe(1);
      let stopped = false;
      const stopping = task.stop().then(() => (stopped = true));
      await vi.advanceTimersByTimeAsync(60);
      expect(stopped).toBe(false);
      release();
      await stopping;
      expect(most).toBe(1);
      expect(runs).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('waits one interval before its first run when told to (an hourly sweep does not run at every start)', async () => {
    vi.useFakeTimers();
    try {
      let runs = 0;
      const task = new PeriodicTask(async () => void runs++, 1000, recordingLogger().logger, { failing: 'failing', recovered: 'recovered' });
      task.start({ firstRunNow: false });
      await vi.advanceTimersByTimeAsync(999);
      expect(runs).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(runs).toBe(1);
      await task.stop();
    } finally {
      vi.useRealTimers();
    }
  });

  it('warns once per outage and says when it recovers', async () => {
    const outcomes = [false, false, false, true, true];
    let calls = 0;
    const { logger, lines } = recordingLogger();
    const task = new PeriodicTask(async () => {
      const ok = outcomes[calls++] ?? true;
      if (!ok) throw new Error('Redis away');
    }, 2, logger, { failing: 'could not publish', recovered: 'published again' });
    task.start();
    await waitUntil(() => calls >= outcomes.length);
    await task.stop();
    expect(lines.filter((l) => l.msg === 'could not publish')).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'published again')).toHaveLength(1);
    expect(lines.find((l) => l.msg === 'could not publish')?.level).toBe(40);
  });
});
