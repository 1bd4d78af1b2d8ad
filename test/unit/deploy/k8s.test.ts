import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { SETTINGS, type SettingName } from '../../../src/config/settings.js';
import { ROLES } from '../../../src/pipeline/pipeline.js';
import { shutdownGraceMs } from '../../../src/pipeline/worker-process.js';
import {
  container,
  containerEnv,
  dockerfile,
  exampleSecret,
  exportedMetricNames,
  k8sDocs,
  k8sFiles,
  metricNamesIn,
  ofKind,
  podSpec,
  ROOT,
  unknownEnvName,
  withSecretFiles,
  type Container,
  type K8sDoc,
} from '../../support/deploy-files.js';

const docs = k8sDocs();
const deployments = ofKind(docs, 'Deployment');
const roleOf = (d: K8sDoc) => d.metadata?.labels?.['app.kubernetes.io/component'];
const deploymentOf = (role: string) => {
  const found = deployments.filter((d) => roleOf(d) === role);
  expect(found, `Deployments for the ${role} role`).toHaveLength(1);
  return found[0] as K8sDoc;
};
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** The pod's environment with the example Secret's values in files, as the kubelet would mount them. */
function podEnv(deployment: K8sDoc): Record<string, string> {
  const { env, cleanup } = withSecretFiles(containerEnv(deployment, docs), deployment, docs);
  cleanups.push(cleanup);
  return env;
}

/** A probe's or annotation's port as a number: named ports resolve through the container's ports. */
function portNumber(c: Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return c.ports?.find((p) => p.name === port)?.containerPort ?? (port !== undefined && /^\d+$/.test(port) ? Number(port) : undefined);
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

describe('deploy/k8s', () => {
  it('has one Deployment per role of the pipeline, and none for a role the worker does not know', () => {
    expect(deployments.map(roleOf).sort()).toEqual([...ROLES].sort());
  });

  it.each([...ROLES])('runs `worker --role %s` through the image ENTRYPOINT', (role) => {
    const c = container(deploymentOf(role));
    const image = dockerfile();
    expect(image.entrypoint).toEqual(['node', 'bin/indexer.js']);
    expect(existsSync(join(ROOT, image.entrypoint[1] as string))).toBe(true);
    // No `command`: it would replace the ENTRYPOINT; `args` replace only the image's CMD.
    expect(c.command ?? image.entrypoint).toEqual(image.entrypoint);
    expect(c.args).toEqual(['worker', '--role', role]);
  });

  it('runs the same image in every Deployment, the one kustomization.yaml sets', () => {
    const images = new Set(deployments.map((d) => container(d).image));
    expect([...images]).toHaveLength(1);
    const kustomization = docs.find((d) => d.file === 'kustomization.yaml');
    expect(kustomization?.images?.map((i) => i.name)).toContain([...images][0]);
  });

  it.each([...ROLES])('%s: sets only environment variables the indexer reads', (role) => {
    const names = Object.keys(containerEnv(deploymentOf(role), docs));
    expect(names.length).toBeGreaterThan(0);
    expect(names.map(unknownEnvName).filter(Boolean)).toEqual([]);
  });

  it.each([...ROLES])('%s: its configuration loads, with every secret read from the mounted Secret', (role) => {
    const env = podEnv(deploymentOf(role));
    expect(Object.keys(env).some((k) => k.endsWith('_FILE'))).toBe(true);
    // Whatever the parser refuses (a missing DASHBOARD_PASSWORD on 0.0.0.0, a bad URL) throws here.
    const config = loadConfig(env);
    expect(config.sink.kind).toBe('qdrant');
    expect(config.embeddings.provider).toBe('openai');
    expect(config.embeddings.apiKey).toBe(exampleSecret(docs).stringData?.EMBEDDINGS_API_KEY);
  });

  it.each([...ROLES])('%s: sets no secret setting directly: secrets come from files of the Secret', (role) => {
    const env = containerEnv(deploymentOf(role), docs);
    const direct = Object.keys(env).filter((name) => SETTINGS[name as SettingName]?.secret);
    expect(direct, 'set NAME_FILE to a file of the mounted Secret instead').toEqual([]);
  });

  it.each([...ROLES])('%s: terminationGracePeriodSeconds exceeds the worker\'s drain bound (shutdownGraceMs)', (role) => {
    const deployment = deploymentOf(role);
    const grace = podSpec(deployment).terminationGracePeriodSeconds;
    expect(grace, 'terminationGracePeriodSeconds').toBeTypeOf('number');
    expect((grace as number) * 1000).toBeGreaterThan(shutdownGraceMs(loadConfig(podEnv(deployment))));
  });

  it.each([...ROLES])('%s: probes /healthz and /readyz on METRICS_PORT, served on a non-loopback METRICS_HOST', (role) => {
    const deployment = deploymentOf(role);
    const c = container(deployment);
    const config = loadConfig(podEnv(deployment));
    const metricsPort = config.observability.metricsPort;
    expect(metricsPort, 'METRICS_PORT').toBeTypeOf('number');
    expect(isLoopback(containerEnv(deployment, docs).METRICS_HOST ?? '127.0.0.1'), 'METRICS_HOST must not be loopback: the kubelet and Prometheus could not reach it').toBe(false);
    expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
    for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe]) {
      if (probe) expect(portNumber(c, probe.httpGet?.port)).toBe(metricsPort);
    }
    const annotations = deployment.spec?.template?.metadata?.annotations ?? {};
    expect(annotations['prometheus.io/scrape']).toBe('true');
    expect(portNumber(c, annotations['prometheus.io/port'])).toBe(metricsPort);
    expect(dockerfile().expose).toContain(String(metricsPort));
  });

  it.each([...ROLES])('%s: serves the read-write dashboard only behind a password from the Secret', (role) => {
    const env = containerEnv(deploymentOf(role), docs);
    const enabled = !['false', '0', 'no'].includes((env.DASHBOARD_ENABLED ?? 'true').toLowerCase());
    if (!enabled) return;
    expect(env.DASHBOARD_PASSWORD, 'the password comes from DASHBOARD_PASSWORD_FILE, not the manifest').toBeUndefined();
    expect(env.DASHBOARD_PASSWORD_FILE).toBeDefined();
    expect(loadConfig(podEnv(deploymentOf(role))).observability).toBeDefined();
    expect(exampleSecret(docs).stringData?.DASHBOARD_PASSWORD).toMatch(/.{12,}/);
  });

  it('serves the dashboard from exactly one role', () => {
    const enabled = deployments.filter((d) => !['false', '0', 'no'].includes((containerEnv(d, docs).DASHBOARD_ENABLED ?? 'true').toLowerCase()));
    expect(enabled.map(roleOf)).toEqual(['backfill']);
  });

  it('selects each Deployment\'s pods with its own selector and exactly one PodDisruptionBudget', () => {
    const budgets = ofKind(docs, 'PodDisruptionBudget');
    for (const d of deployments) {
      const podLabels = d.spec?.template?.metadata?.labels ?? {};
      const matches = (selector: Record<string, string> | undefined) => !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => podLabels[k] === v);
      expect(matches(d.spec?.selector?.matchLabels), `${d.metadata?.name}: selector`).toBe(true);
      const covering = budgets.filter((b) => matches(b.spec?.selector?.matchLabels));
      expect(covering.map((b) => b.metadata?.name), `PodDisruptionBudgets over ${d.metadata?.name}`).toHaveLength(1);
      // minAvailable on a one-replica Deployment would block every node drain.
      expect((covering[0] as K8sDoc).spec).toMatchObject({ maxUnavailable: 1 });
    }
  });

  it('autoscales the embed Deployment with KEDA on the embed queue\'s waiting jobs, a metric the workers export', async () => {
    const [scaled, ...others] = ofKind(docs, 'ScaledObject');
    expect(others).toEqual([]);
    expect(scaled?.spec?.scaleTargetRef?.name).toBe(deploymentOf('embed').metadata?.name);
    const trigger = scaled?.spec?.triggers?.find((t) => t.type === 'prometheus');
    const query = trigger?.metadata.query ?? '';
    // Each queue once (max over the processes reporting it), then the live and re-index queues together.
    expect(query).toMatch(/^sum\(max by \(queue\) \(indexer_queue_jobs\{/);
    const queues = /queue=~"([^"]+)"/.exec(query)?.[1] ?? '';
    for (const queue of ['embed', 'embed@g2']) expect(new RegExp(`^(?:${queues})$`).test(queue), `${queue} counted`).toBe(true);
    for (const queue of ['write', 'write@g2']) expect(new RegExp(`^(?:${queues})$`).test(queue), `${queue} not counted`).toBe(false);
    expect(query).toContain('state="waiting"');
    const exported = await exportedMetricNames();
    expect(metricNamesIn(query).filter((n) => !exported.has(n))).toEqual([]);
  });

  it('lists every manifest in kustomization.yaml except the example Secret and the KEDA object (they need values or a CRD)', () => {
    const kustomization = docs.find((d) => d.file === 'kustomization.yaml');
    const listed = [...(kustomization?.resources ?? [])].sort();
    const expected = k8sFiles().filter((f) => !['kustomization.yaml', 'secret.example.yaml', 'keda-embed.yaml'].includes(f));
    expect(listed).toEqual(expected);
  });
});
