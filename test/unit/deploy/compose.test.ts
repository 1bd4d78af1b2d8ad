import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { ROLES } from '../../../src/pipeline/pipeline.js';
import { shutdownGraceMs } from '../../../src/pipeline/worker-process.js';
import {
  composeEnv,
  composeServices,
  containerEnv,
  dockerfile,
  durationMs,
  k8sDocs,
  ofKind,
  settingOf,
  unknownEnvName,
  type ComposeService,
} from '../../support/deploy-files.js';

const services = composeServices();
const image = dockerfile();
const k8s = k8sDocs();
const workerOf = (role: string): [string, ComposeService] => {
  const found = Object.entries(services).filter(([, s]) => s.command?.[0] === 'worker' && s.command.slice(1).join(' ') === `--role ${role}`);
  expect(found.map(([name]) => name), `compose services running the ${role} role`).toHaveLength(1);
  return found[0] as [string, ComposeService];
};
/** What a worker container sees: the image's ENV, then the service's environment. */
const workerEnv = (service: ComposeService) => ({ ...image.env, ...composeEnv(service) });
const workerServices = Object.entries(services).filter(([, s]) => s.command?.[0] === 'worker');
const isFalse = (v: string | undefined) => ['false', '0', 'no'].includes((v ?? 'true').toLowerCase());

describe('docker-compose.yml', () => {
  it('runs one worker service per role of the pipeline, as deploy/k8s does, and no other worker', () => {
    for (const role of ROLES) workerOf(role);
    expect(workerServices).toHaveLength(ROLES.length);
  });

  it('keeps an `indexer` service for one-off commands that `docker compose up` does not start', () => {
    expect(services.indexer?.profiles).toEqual(['cli']);
  });

  it('sets only environment variables the indexer reads', () => {
    for (const [name, service] of Object.entries(services).filter(([n]) => n.startsWith('indexer'))) {
      const unknown = Object.keys(service.environment ?? {}).map(unknownEnvName).filter(Boolean);
      expect(unknown, name).toEqual([]);
    }
  });

  it.each([...ROLES])('%s: sets the same settings as its Kubernetes Deployment (secrets directly there, from files in k8s)', (role) => {
    const deployment = ofKind(k8s, 'Deployment').find((d) => d.metadata?.labels?.['app.kubernetes.io/component'] === role);
    expect(deployment).toBeDefined();
    const inK8s = Object.keys(containerEnv(deployment!, k8s)).map(settingOf).sort();
    const inCompose = Object.keys(workerOf(role)[1].environment ?? {}).map(settingOf).sort();
    expect(inCompose).toEqual(inK8s);
  });

  it.each([...ROLES])('%s: its configuration loads with compose\'s defaults', (role) => {
    const config = loadConfig(workerEnv(workerOf(role)[1]));
    expect(config.sink.kind).toBe('qdrant');
    expect(config.redis.url).toBe('redis://redis:6379');
  });

  it.each([...ROLES])('%s: stop_grace_period exceeds the worker\'s drain bound (compose\'s default 10 s would kill a drain)', (role) => {
    const service = workerOf(role)[1];
    expect(service.stop_grace_period, 'stop_grace_period').toBeDefined();
    expect(durationMs(service.stop_grace_period as string)).toBeGreaterThan(shutdownGraceMs(loadConfig(workerEnv(service))));
  });

  it('serves metrics on the port the image exposes, on every interface of the container', () => {
    for (const [name, service] of workerServices) {
      const config = loadConfig(workerEnv(service));
      expect(config.observability.metricsPort, name).toBe(Number(image.expose[0]));
      expect(workerEnv(service).METRICS_HOST, name).toBe('0.0.0.0');
    }
  });

  it('publishes at most one worker\'s admin port, on the host\'s loopback only, and keeps the dashboard off by default', () => {
    const published = workerServices.filter(([, s]) => (s.ports ?? []).length > 0);
    expect(published.map(([name]) => name)).toEqual([workerOf('backfill')[0]]);
    for (const port of published.flatMap(([, s]) => s.ports ?? [])) expect(port).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
    for (const [name, service] of workerServices) expect(isFalse(workerEnv(service).DASHBOARD_ENABLED), name).toBe(true);
  });
});

describe('Dockerfile', () => {
  it('runs the indexer command line, the worker by default', () => {
    expect(image.entrypoint).toEqual(['node', 'bin/indexer.js']);
    expect(image.cmd).toEqual(['worker']);
  });

  it('sets only environment variables the indexer or Node reads', () => {
    expect(Object.keys(image.env).length).toBeGreaterThan(0);
    expect(Object.keys(image.env).map(unknownEnvName).filter(Boolean)).toEqual([]);
  });

  it('exposes METRICS_PORT, bound to every interface, with the dashboard off (it would need a password there)', () => {
    const config = loadConfig(image.env);
    expect(image.expose).toEqual([String(config.observability.metricsPort)]);
    expect(image.env.METRICS_HOST).toBe('0.0.0.0');
    expect(isFalse(image.env.DASHBOARD_ENABLED)).toBe(true);
  });
});
