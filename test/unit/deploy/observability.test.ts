import { describe, expect, it } from 'vitest';
import { alertRules, allPanels, exportedMetricNames, grafanaDashboard, metricNamesIn } from '../../support/deploy-files.js';

const dashboard = grafanaDashboard();
const panels = allPanels(dashboard);
const queryPanels = panels.filter((p) => p.type !== 'row');
const panelExprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr })));
const rules = alertRules().groups.flatMap((g) => g.rules);
const ruleExprs = rules.map((r) => ({ where: `rule ${r.alert ?? r.record}`, expr: r.expr }));

describe('deploy/grafana/indexer.json', () => {
  it('is a dashboard Grafana can import: a stable uid, unique panel ids, panels inside the 24-column grid', () => {
    expect(dashboard.uid).toBe('embedding-indexer');
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      expect(p.gridPos.w * p.gridPos.h, p.title).toBeGreaterThan(0);
    }
  });

  it('asks for its Prometheus data source instead of naming one, in every panel and query', () => {
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }));
    for (const p of queryPanels) {
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.datasource?.uid ?? p.datasource?.uid, p.title).toBe('${datasource}');
    }
  });

  it('reads only metrics the worker processes export', async () => {
    const exported = await exportedMetricNames();
    const missing = panelExprs.flatMap(({ where, expr }) => metricNamesIn(expr).filter((n) => !exported.has(n)).map((n) => `${where}: ${n}`));
    expect(missing).toEqual([]);
    expect(panelExprs.flatMap(({ expr }) => metricNamesIn(expr)).length).toBeGreaterThan(0);
  });

  it.each([
    ['throughput', 'indexer_events_consumed_total'],
    ['throughput', 'indexer_sink_points_total'],
    ['lag', 'indexer_kafka_consumer_lag'],
    ['queue depths', 'indexer_queue_jobs'],
    ['paused queues', 'indexer_queue_paused'],
    ['event-to-searchable latency', 'indexer_event_to_sink_seconds_bucket'],
    ['embeddings tokens', 'indexer_embedding_tokens_total'],
    ['embeddings cost', 'indexer_embedding_cost_usd_total'],
    ['circuit state', 'indexer_embedding_circuit_state'],
    ['dead letters', 'indexer_dead_lettered_total'],
  ])('shows %s (%s)', (_what, metric) => {
    expect(panelExprs.some(({ expr }) => metricNamesIn(expr).includes(metric))).toBe(true);
  });

  it('combines the gauges every process samples from the same Redis or Kafka group with max, never sum', () => {
    const shared = ['indexer_queue_jobs', 'indexer_queue_paused', 'indexer_kafka_consumer_lag'];
    for (const { where, expr } of [...panelExprs, ...ruleExprs]) {
      for (const name of shared.filter((n) => metricNamesIn(expr).includes(n))) {
        const uses = expr.match(new RegExp(`\\b${name}\\b`, 'g'))?.length ?? 0;
        // absent() only asks whether any process reports it.
        const combined = expr.match(new RegExp(`(?:max(?: by \\([^)]*\\))? \\(|absent\\()${name}\\b`, 'g'))?.length ?? 0;
        expect(combined, `${where}: every use of ${name} under max by (...) (${expr})`).toBe(uses);
      }
    }
  });
});

describe('deploy/prometheus/alerts.yml', () => {
  it.each(['IndexerKafkaLagGrowing', 'IndexerQueuePaused', 'IndexerEmbeddingCircuitOpen', 'IndexerDeadLettersRising', 'IndexerConsumerStalled'])('has the %s alert, with a severity and a summary', (name) => {
    const rule = rules.find((r) => r.alert === name);
    expect(rule).toBeDefined();
    expect(rule?.labels?.severity).toMatch(/^(warning|critical)$/);
    expect(rule?.annotations?.summary).toBeTruthy();
  });

  it('reads only metrics the worker processes export', async () => {
    const exported = await exportedMetricNames();
    const missing = ruleExprs.flatMap(({ where, expr }) => metricNamesIn(expr).filter((n) => !exported.has(n)).map((n) => `${where}: ${n}`));
    expect(missing).toEqual([]);
  });
});
