import type { Logger } from '../observability/logger.js';

/**
 * Runs `task` now and then every `intervalMs`, never two at once: a run still waiting (on a Redis
 * or Kafka that is away) makes the next tick skip rather than queue behind it. A failing run is
 * warned about once per outage, and its end is logged. The timer does not keep the process alive.
 */
export class PeriodicTask {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private inFlight = false;
  private failing = false;
  private stopped = false;

  constructor(
    private readonly task: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly logger: Logger,
    private readonly messages: { failing: string; recovered: string },
  ) {}

  /** `firstRunNow: false` waits one interval before the first run. */
  start(options: { firstRunNow?: boolean } = {}): void {
    if (options.firstRunNow !== false) this.tick();
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** No new run starts; resolves once the run in flight, if any, is over. */
  stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    return this.running;
  }

  private tick(): void {
    if (this.stopped || this.inFlight) return;
    this.inFlight = true;
    this.running = this.task()
      .then(
        () => {
          if (this.failing) this.logger.info(this.messages.recovered);
          this.failing = false;
        },
        (error: unknown) => {
          if (!this.failing) this.logger.warn({ err: (error as Error).message }, this.messages.failing);
          this.failing = true;
        },
      )
      .finally(() => (this.inFlight = false));
  }
}
