export type CircuitState = 'closed' | 'open' | 'half_open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. */
  failureThreshold: number;
  /** How long an open circuit refuses calls before one probe is let through. */
  cooldownMs: number;
  now?: () => number;
  onStateChange?: (state: CircuitState, previous: CircuitState) => void;
}

export type Admission = { admitted: true } | { admitted: false; retryInMs: number };

/** While a probe is out, other callers come back after this long rather than a whole cool-down. */
const PROBE_WAIT_MS = 1000;

/**
 * Stops calling a dependency that keeps failing. Closed: calls go through, consecutive failures
 * are counted. Open: nothing is called until the cool-down ends. Half-open: exactly one call (the
 * probe) is let through; its success closes the circuit, its failure opens it for another cool-down.
 *
 * It only decides; the caller reports each outcome with success() or failure(), and decides which
 * errors are the dependency's fault (a 400 for one bad input is not, a 503 is).
 */
export class CircuitBreaker {
  private current: CircuitState = 'closed';
  private failures = 0;
  private openUntil = 0;
  private probeOut = false;
  private readonly now: () => number;

  constructor(private readonly options: CircuitBreakerOptions) {
    this.now = options.now ?? Date.now;
  }

  get state(): CircuitState {
    return this.current;
  }

  /** Whether a call may go now, and if not, how long until one may. */
  admit(): Admission {
    if (this.current === 'closed') return { admitted: true };
    if (this.current === 'open') {
      const wait = this.openUntil - this.now();
      if (wait > 0) return { admitted: false, retryInMs: wait };
      this.transition('half_open');
    }
    if (this.probeOut) return { admitted: false, retryInMs: PROBE_WAIT_MS };
    this.probeOut = true;
    return { admitted: true };
  }

  success(): void {
    this.failures = 0;
    this.probeOut = false;
    if (this.current !== 'closed') this.transition('closed');
  }

  failure(): void {
    this.failures++;
    this.probeOut = false;
    if (this.current === 'half_open' || (this.current === 'closed' && this.failures >= this.options.failureThreshold)) {
      this.openUntil = this.now() + this.options.cooldownMs;
      this.transition('open');
    }
  }

  /** The call ended without telling anything about the dependency (cancelled): free the probe. */
  release(): void {
    this.probeOut = false;
  }

  private transition(next: CircuitState): void {
    const previous = this.current;
    this.current = next;
    this.options.onStateChange?.(next, previous);
  }
}
