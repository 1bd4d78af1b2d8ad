import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { ConfigError } from '../../../src/core/errors.js';

// kafkajs heartbeats only between fetches: a fetch the broker holds longer than the session
// timeout makes the group drop the consumer on every idle poll (measured on the test broker:
// KAFKA_SESSION_TIMEOUT_MS=6000 with KAFKA_FETCH_MAX_WAIT_MS=10000 re-joined the group every 10 s).
// A wait of 0 turns an idle consumer into a busy loop (measured: ~1,000 fetches a second).
function problemsOf(env: Record<string, string>): { variable: string; message: string }[] {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  return [];
}

describe('KAFKA_FETCH_MAX_WAIT_MS', () => {
  it('is refused when the broker would hold a fetch past half the session timeout, naming both settings', () => {
    const problems = problemsOf({ KAFKA_SESSION_TIMEOUT_MS: '6000', KAFKA_FETCH_MAX_WAIT_MS: '10000' });
    expect(problems.map((p) => p.variable)).toContain('KAFKA_FETCH_MAX_WAIT_MS');
    expect(problems.find((p) => p.variable === 'KAFKA_FETCH_MAX_WAIT_MS')?.message).toContain('KAFKA_SESSION_TIMEOUT_MS');
  });

  it('is refused at 0, which makes an idle consumer fetch in a busy loop', () => {
    expect(problemsOf({ KAFKA_FETCH_MAX_WAIT_MS: '0' }).map((p) => p.variable)).toContain('KAFKA_FETCH_MAX_WAIT_MS');
  });

  it('takes the default and any wait within half the session timeout', () => {
    expect(loadConfig({}).kafka.fetchMaxWaitMs).toBe(100);
    expect(loadConfig({ KAFKA_SESSION_TIMEOUT_MS: '30000', KAFKA_FETCH_MAX_WAIT_MS: '10000' }).kafka.fetchMaxWaitMs).toBe(10_000);
  });
});
