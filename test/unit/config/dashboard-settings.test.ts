import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeConfig, loadConfig } from '../../../src/config/config.js';
import { ConfigError } from '../../../src/core/errors.js';

function refusal(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected the config to be refused');
}

describe('admin server and dashboard settings', () => {
  it('binds loopback and serves the dashboard without a login by default', () => {
    expect(loadConfig({ METRICS_PORT: '9464' }).observability).toEqual({
      logLevel: 'info',
      metricsPort: 9464,
      metricsHost: '127.0.0.1',
      dashboard: { enabled: true, user: 'indexer', password: undefined },
    });
  });

  it('refuses to expose the dashboard without a password, naming DASHBOARD_PASSWORD and the ways out', () => {
    for (const host of ['0.0.0.0', '::', '10.1.2.3', 'indexer.internal']) {
      const error = refusal({ METRICS_PORT: '9464', METRICS_HOST: host });
      expect(error.problems.map((p) => p.variable)).toEqual(['DASHBOARD_PASSWORD']);
      expect(error.message).toMatch(new RegExp(`DASHBOARD_PASSWORD: required when METRICS_HOST=${host.replace(/\./g, '\\.')} \\(not a loopback address\\)`));
      expect(error.message).toMatch(/DASHBOARD_PASSWORD_FILE/);
      expect(error.message).toMatch(/DASHBOARD_ENABLED=false/);
    }
  });

  it('exposes the admin server when the dashboard has a password, is off, or nothing is served', () => {
    expect(loadConfig({ METRICS_PORT: '9464', METRICS_HOST: '0.0.0.0', DASHBOARD_PASSWORD: 'pw' }).observability.dashboard.password).toBe('pw');
    expect(loadConfig({ METRICS_PORT: '9464', METRICS_HOST: '0.0.0.0', DASHBOARD_ENABLED: 'false' }).observability.dashboard.enabled).toBe(false);
    expect(loadConfig({ METRICS_HOST: '0.0.0.0' }).observability.metricsHost).toBe('0.0.0.0');
    expect(loadConfig({ METRICS_PORT: '9464', METRICS_HOST: '[::1]' }).observability.metricsHost).toBe('::1');
  });

  it('reads the password from DASHBOARD_PASSWORD_FILE and never shows it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dashboard-'));
    try {
      writeFileSync(join(dir, 'password'), 'from-a-file\n');
      const config = loadConfig({ METRICS_PORT: '9464', METRICS_HOST: '0.0.0.0', DASHBOARD_PASSWORD_FILE: join(dir, 'password') });
      expect(config.observability.dashboard.password).toBe('from-a-file');
      expect(JSON.stringify(describeConfig(config))).not.toContain('from-a-file');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names a bad host or user name with the fix', () => {
    const error = refusal({ METRICS_HOST: 'not a host', DASHBOARD_USER: 'a:b' });
    expect(error.problems.map((p) => p.variable).sort()).toEqual(['DASHBOARD_USER', 'METRICS_HOST']);
    expect(error.message).toMatch(/METRICS_HOST: expected an IP address/);
    expect(error.message).toMatch(/DASHBOARD_USER: use no spaces and no ":"/);
  });
});
