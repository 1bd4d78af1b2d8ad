import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, posix } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { SETTINGS, type SettingName } from '../../src/config/settings.js';
import { Metrics } from '../../src/observability/metrics.js';

/**
 * Reading deploy/, docker-compose.yml and the Dockerfile as Kubernetes, compose and Docker read
 * them, for the tests that keep them consistent with the code.
 */
export const ROOT = new URL('../../', import.meta.url).pathname;
const K8S_DIR = join(ROOT, 'deploy/k8s');

/** Read by Node or glibc, set by the image: not settings of the indexer. */
const RUNTIME_ENV = new Set(['NODE_OPTIONS', 'NODE_ENV', 'MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_']);

// Loose shapes: only the fields the tests read.
export interface HttpProbe {
  httpGet?: { path: string; port: number | string };
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  ports?: { name?: string; containerPort: number }[];
  startupProbe?: HttpProbe;
  livenessProbe?: HttpProbe;
  readinessProbe?: HttpProbe;
  volumeMounts?: { name: string; mountPath: string }[];
}
export interface PodSpec {
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  volumes?: { name: string; secret?: { secretName: string } }[];
}
export interface K8sDoc {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> };
    template?: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec };
    scaleTargetRef?: { name: string; kind?: string };
    triggers?: { type: string; metadata: Record<string, string> }[];
  };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  resources?: string[];
  images?: { name: string }[];
  file: string;
}

export function k8sFiles(): string[] {
  return readdirSync(K8S_DIR).filter((f) => f.endsWith('.yaml')).sort();
}

export function k8sDocs(): K8sDoc[] {
  return k8sFiles().flatMap((file) =>
    parseAllDocuments(readFileSync(join(K8S_DIR, file), 'utf8')).map((doc) => {
      if (doc.errors.length > 0) throw new Error(`deploy/k8s/${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      return { ...(doc.toJS() as object), file } as K8sDoc;
    }),
  );
}

export function ofKind(docs: K8sDoc[], kind: string): K8sDoc[] {
  return docs.filter((d) => d.kind === kind);
}

function only<T>(items: T[], what: string): T {
  if (items.length !== 1) throw new Error(`expected exactly one ${what}, found ${items.length}`);
  return items[0] as T;
}

/** The example Secret (deploy/k8s/secret.example.yaml) every Deployment mounts. */
export function exampleSecret(docs: K8sDoc[]): K8sDoc {
  return only(ofKind(docs, 'Secret'), 'Secret in deploy/k8s');
}

export function podSpec(deployment: K8sDoc): PodSpec {
  const spec = deployment.spec?.template?.spec;
  if (!spec) throw new Error(`${deployment.metadata?.name} (${deployment.file}) has no pod template`);
  return spec;
}

export function container(deployment: K8sDoc): Container {
  return only(podSpec(deployment).containers, `container in Deployment ${deployment.metadata?.name}`);
}

/**
 * A container's environment as the kubelet builds it: every envFrom ConfigMap's data first, then
 * `env`, which wins. Values from valueFrom are not resolvable here and fail the test.
 */
export function containerEnv(deployment: K8sDoc, docs: K8sDoc[]): Record<string, string> {
  const c = container(deployment);
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    const name = from.configMapRef?.name;
    if (!name) throw new Error(`${deployment.metadata?.name}: envFrom other than a ConfigMap is not understood by this test`);
    const map = ofKind(docs, 'ConfigMap').find((m) => m.metadata?.name === name);
    if (!map) throw new Error(`${deployment.metadata?.name}: envFrom names ConfigMap ${name}, which deploy/k8s does not define`);
    Object.assign(env, map.data);
  }
  for (const e of c.env ?? []) {
    if (e.value === undefined) throw new Error(`${deployment.metadata?.name}: env ${e.name} has no literal value`);
    env[e.name] = String(e.value);
  }
  return env;
}

/**
 * Writes each file a *_FILE setting names, from the example Secret, into a temp dir, and points the
 * setting there: the environment the indexer would see in the pod. The path must lie in a mount of
 * that Secret and name one of its keys.
 */
export function withSecretFiles(env: Record<string, string>, deployment: K8sDoc, docs: K8sDoc[]): { env: Record<string, string>; cleanup: () => void } {
  const secret = exampleSecret(docs);
  const secretVolumes = new Set((podSpec(deployment).volumes ?? []).filter((v) => v.secret?.secretName === secret.metadata?.name).map((v) => v.name));
  const mounts = (container(deployment).volumeMounts ?? []).filter((m) => secretVolumes.has(m.name)).map((m) => m.mountPath);
  const dir = mkdtempSync(join(tmpdir(), 'deploy-secrets-'));
  const resolved = { ...env };
  for (const [name, path] of Object.entries(env)) {
    if (!name.endsWith('_FILE')) continue;
    const mount = mounts.find((m) => posix.dirname(path) === m);
    if (!mount) throw new Error(`${deployment.metadata?.name}: ${name}=${path} is not in a mount of the Secret ${secret.metadata?.name} (mounted at ${mounts.join(', ') || 'nowhere'})`);
    const key = basename(path);
    const value = secret.stringData?.[key];
    if (value === undefined) throw new Error(`${deployment.metadata?.name}: ${name} reads ${path}, but the Secret ${secret.metadata?.name} has no key ${key}`);
    const file = join(dir, key);
    writeFileSync(file, value);
    resolved[name] = file;
  }
  return { env: resolved, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Why an environment variable name is not one the indexer reads, or undefined when it is. */
export function unknownEnvName(name: string): string | undefined {
  if (RUNTIME_ENV.has(name) || name in SETTINGS) return undefined;
  const base = name.replace(/_FILE$/, '');
  if (name !== base && base in SETTINGS) {
    return SETTINGS[base as SettingName].secret ? undefined : `${name}: ${base} is not a secret setting, so it is not read from a file`;
  }
  return `${name} is not a setting of the indexer (src/config/settings.ts)`;
}

/** The setting a variable sets: X for X and X_FILE. */
export function settingOf(name: string): string {
  return name.replace(/_FILE$/, '');
}

// docker-compose.yml ------------------------------------------------------------------------------

export interface ComposeService {
  image?: string;
  command?: string[];
  environment?: Record<string, string | number | boolean | null>;
  ports?: string[];
  stop_grace_period?: string;
  profiles?: string[];
}

export function composeServices(): Record<string, ComposeService> {
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService> };
  return compose.services;
}

/** Compose's interpolation with an empty shell environment: `${X:-default}` and `${X}` become the default or ''. */
export function interpolate(value: string): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (_m, _name: string, fallback: string | undefined) => fallback ?? '');
}

export function composeEnv(service: ComposeService): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(v === null ? '' : String(v))]));
}

/** Compose durations as the indexer's tests need them: "120s", "2m", "1m30s". */
export function durationMs(value: string): number {
  const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== value) throw new Error(`not a compose duration: ${value}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
  return parts.reduce((sum, p) => sum + Number(p[1]) * unit[p[2] as keyof typeof unit], 0);
}

// Dockerfile --------------------------------------------------------------------------------------

export interface Dockerfile {
  entrypoint: string[];
  cmd: string[];
  env: Record<string, string>;
  expose: string[];
}

/** The final stage of the Dockerfile: what the image runs and the environment it sets. */
export function dockerfile(): Dockerfile {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const stages = text.split(/^FROM\s/m);
  const last = stages[stages.length - 1] ?? '';
  const result: Dockerfile = { entrypoint: [], cmd: [], env: {}, expose: [] };
  for (const line of last.split('\n')) {
    const [, instruction, rest = ''] = /^\s*([A-Z]+)\s+(.*)$/.exec(line) ?? [];
    if (instruction === 'ENTRYPOINT') result.entrypoint = JSON.parse(rest) as string[];
    if (instruction === 'CMD') result.cmd = JSON.parse(rest) as string[];
    if (instruction === 'EXPOSE') result.expose.push(...rest.trim().split(/\s+/));
    if (instruction === 'ENV') {
      for (const [, k, v] of rest.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)/g)) result.env[k as string] = (v as string).replace(/^"|"$/g, '');
    }
  }
  return result;
}

// Metrics -----------------------------------------------------------------------------------------

/** Every series name a worker process exports: its metrics, the default ones, histogram suffixes. */
export async function exportedMetricNames(): Promise<Set<string>> {
  const metrics = await new Metrics().withDefaultMetrics().registry.getMetricsAsJSON();
  const names = new Set<string>();
  for (const m of metrics) {
    names.add(m.name);
    // prom-client types this as a numeric enum; at run time it is the exposition format's word.
    const type = String(m.type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(m.name + s);
  }
  return names;
}

/** The indexer_* metric names a PromQL expression reads (loosely: any indexer_\w+ token). */
export function metricNamesIn(expr: string): string[] {
  return [...expr.matchAll(/\bindexer_[A-Za-z0-9_]+/g)].map((m) => m[0]);
}

// Grafana and Prometheus files --------------------------------------------------------------------

export interface GrafanaPanel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
  panels?: GrafanaPanel[];
}

export interface GrafanaDashboard {
  uid: string;
  title: string;
  panels: GrafanaPanel[];
  templating: { list: { name: string; type: string; query: string }[] };
}

export function grafanaDashboard(): GrafanaDashboard {
  return JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/indexer.json'), 'utf8')) as GrafanaDashboard;
}

/** Every panel, rows' nested panels included. */
export function allPanels(dashboard: GrafanaDashboard): GrafanaPanel[] {
  return dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Grafana's own variables, replaced by values Prometheus accepts, so that the PromQL can be checked. */
export function withGrafanaVariables(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$__range', '6h').replaceAll('$__interval', '1m');
}

export interface RuleFile {
  groups: { name: string; rules: { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[];
}

export function alertRules(): RuleFile {
  return parse(readFileSync(join(ROOT, 'deploy/prometheus/alerts.yml'), 'utf8')) as RuleFile;
}
