import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alertRules, allPanels, grafanaDashboard, k8sDocs, ofKind, ROOT, withGrafanaVariables } from '../../support/deploy-files.js';

/**
 * The alert rules, the dashboard's queries and the KEDA query, checked by Prometheus's own promtool
 * (unpacked from Debian's prometheus package by scripts/services/promtool.sh).
 */
let promtool: string;
let dir: string;

beforeAll(() => {
  promtool = execFileSync('bash', [join(ROOT, 'scripts/services/promtool.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  dir = mkdtempSync(join(tmpdir(), 'promtool-'));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function run(...args: string[]): { status: number | null; output: string } {
  const result = spawnSync(promtool, args, { cwd: join(ROOT, 'deploy/prometheus'), encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** A rule file holding each query as a recording rule: `promtool check rules` then parses them all. */
function checkQueries(name: string, queries: { where: string; expr: string }[]): { status: number | null; output: string } {
  const file = join(dir, `${name}.yml`);
  const rules = queries.map((q, i) => ({ record: `check:${name}:${i}`, expr: q.expr }));
  writeFileSync(file, stringify({ groups: [{ name, rules }] }));
  return run('check', 'rules', file);
}

interface RuleTests {
  tests: { name: string; alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
}

describe('deploy/prometheus with promtool', () => {
  it('alerts.yml passes `promtool check rules`', () => {
    const { status, output } = run('check', 'rules', 'alerts.yml');
    expect(output).toContain('SUCCESS');
    expect(status, output).toBe(0);
  });

  it('every alert fires on its synthetic series and stays silent on a healthy one (`promtool test rules alerts.test.yml`)', () => {
    const { status, output } = run('test', 'rules', 'alerts.test.yml');
    expect(status, output).toBe(0);
    expect(output).toContain('SUCCESS');
  });

  it('alerts.test.yml shows every alert firing at least once', () => {
    const tests = parse(readFileSync(join(ROOT, 'deploy/prometheus/alerts.test.yml'), 'utf8')) as RuleTests;
    const fired = new Set(tests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    const alerts = alertRules().groups.flatMap((g) => g.rules.flatMap((r) => (r.alert ? [r.alert] : [])));
    expect(alerts.filter((a) => !fired.has(a))).toEqual([]);
  });

  it('a rule that cannot fire is caught: the same tests fail against a broken copy of the rules', () => {
    const broken = readFileSync(join(ROOT, 'deploy/prometheus/alerts.yml'), 'utf8').replace('max_over_time(indexer_embedding_circuit_state[2m])) == 2', 'max_over_time(indexer_embedding_circuit_state[2m])) == 3');
    writeFileSync(join(dir, 'alerts.yml'), broken);
    writeFileSync(join(dir, 'alerts.test.yml'), readFileSync(join(ROOT, 'deploy/prometheus/alerts.test.yml')));
    const result = spawnSync(promtool, ['test', 'rules', 'alerts.test.yml'], { cwd: dir, encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    expect(result.stdout + result.stderr).toContain('IndexerEmbeddingCircuitOpen');
  });

  it('every query of the Grafana dashboard is valid PromQL', () => {
    const queries = allPanels(grafanaDashboard()).flatMap((p) => (p.targets ?? []).map((t) => ({ where: `${p.title} ${t.refId}`, expr: withGrafanaVariables(t.expr) })));
    expect(queries.length).toBeGreaterThan(10);
    const { status, output } = checkQueries('grafana', queries);
    expect(status, output).toBe(0);
  });

  it('the KEDA ScaledObject\'s query is valid PromQL', () => {
    const queries = ofKind(k8sDocs(), 'ScaledObject').flatMap((s) => (s.spec?.triggers ?? []).filter((t) => t.type === 'prometheus').map((t) => ({ where: `${s.metadata?.name}`, expr: t.metadata.query ?? '' })));
    expect(queries).toHaveLength(1);
    const { status, output } = checkQueries('keda', queries);
    expect(status, output).toBe(0);
  });
});
