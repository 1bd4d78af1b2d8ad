import { describe, expect, it } from 'vitest';
import { CircuitBreaker, type CircuitState } from '../../../src/core/circuit-breaker.js';

function breaker() {
  let now = 1_000;
  const changes: CircuitState[] = [];
  const b = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 500, now: () => now, onStateChange: (s) => changes.push(s) });
  return { b, changes, advance: (ms: number) => (now += ms) };
}

describe('CircuitBreaker', () => {
  it('opens after the threshold of consecutive failures, not before', () => {
    const { b, changes } = breaker();
    b.failure();
    b.failure();
    b.success(); // a success in between resets the count
    b.failure();
    b.failure();
    expect(b.state).toBe('closed');
    b.failure();
    expect(b.state).toBe('open');
    expect(changes).toEqual(['open']);
    expect(b.admit()).toEqual({ admitted: false, retryInMs: 500 });
  });

  it('lets exactly one probe through after the cool-down; its success closes the circuit', () => {
    const { b, changes, advance } = breaker();
    for (let i = 0; i < 3; i++) b.failure();
    advance(499);
    expect(b.admit().admitted).toBe(false);
    advance(1);
    expect(b.admit()).toEqual({ admitted: true });
    expect(b.state).toBe('half_open');
    expect(b.admit().admitted).toBe(false); // the probe is out
    b.success();
    expect(b.state).toBe('closed');
    expect(b.admit().admitted).toBe(true);
    expect(changes).toEqual(['open', 'half_open', 'closed']);
  });

  it('a failed probe opens it for another whole cool-down', () => {
    const { b, advance } = breaker();
    for (let i = 0; i < 3; i++) b.failure();
    advance(500);
    expect(b.admit().admitted).toBe(true);
    b.failure();
    expect(b.state).toBe('open');
    expect(b.admit()).toEqual({ admitted: false, retryInMs: 500 });
  });

  it('a released probe (cancelled call) frees the slot without deciding', () => {
    const { b, advance } = breaker();
    for (let i = 0; i < 3; i++) b.failure();
    advance(500);
    expect(b.admit().admitted).toBe(true);
    b.release();
    expect(b.state).toBe('half_open');
    expect(b.admit().admitted).toBe(true);
  });
});
