/**
 * The queue dashboard (bull-board on the worker's admin server) of a real worker process, looked at
 * in a real browser (Debian's headless Chromium): the queues and their counts as Redis holds them,
 * the login when a password is set, the probes left open, the refusal to expose it without a
 * password, and a page on another origin unable to change the queues of a loopback dashboard.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import type { Browser, Page } from 'puppeteer-core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/config.js';
import { AdminServer } from '../../../src/observability/admin-server.js';
import { createDashboard } from '../../../src/observability/dashboard.js';
import { silentLogger } from '../../../src/observability/logger.js';
import { Metrics } from '../../../src/observability/metrics.js';
import { launchChromium, offlinePage } from '../../support/chromium.js';
import { deletePrefix, freePort, services, uniqueName, waitFor } from '../../support/helpers.js';
import { spawnWorker, type WorkerProcess } from '../../support/processes.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const ARTIFACTS = join(ROOT, '.cache', 'test-artifacts');
const PASSWORD = 'correct-horse-battery-staple';
/** The states a job can be counted in (BullMQ 6 keeps a paused queue's jobs in waiting), as bull-board names them. */
const STATES = ['active', 'waiting', 'waiting-children', 'prioritized', 'completed', 'failed', 'delayed'] as const;
type Counts = Record<(typeof STATES)[number], number>;

const cleanups: (() => Promise<void>)[] = [];
let browser: Browser;

beforeAll(async () => {
  browser = await launchChromium();
  cleanups.push(() => browser.close());
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});


/**
 * A worker process running embed and write (local embedder, LanceDB in a temp dir) with its admin
 * server on `port`; removed, with its Redis keys, by the cleanups.
 */
async function startWorker(name: string, port: number, overrides: Record<string, string> = {}): Promise<WorkerProcess> {
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const worker = spawnWorker('embed,write', {
    REDIS_URL: services().redisUrl,
    QUEUE_PREFIX: name,
    COLLECTION: name,
    LANCEDB_URI: join(dir, 'lancedb'),
    EMBEDDINGS_PROVIDER: 'local',
    METRICS_PORT: String(port),
    ...overrides,
  });
  cleanups.push(async () => {
    if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGKILL');
    await worker.exited;
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor('the admin server to answer', async () => {
    if (worker.child.exitCode !== null) throw new Error(`the worker exited ${worker.child.exitCode}: ${worker.output()}`);
    return (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status === 200;
  });
  return worker;
}

/**
 * Jobs in known states, before any worker of the queue runs: one failed (taken by hand and failed),
 * then the queue paused (so that the worker started later leaves the rest alone), `waiting` jobs
 * and `delayed` ones an hour out.
 */
async function putJobsInKnownStates(prefix: string, queueName: string, waiting: number, delayed: number): Promise<void> {
  const connection = new Redis(services().redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue(queueName, { connection, prefix });
  const hand = new Worker(queueName, null, { connection, prefix });
  try {
    await queue.add('broken', { changes: [{ id: 'item-failed', op: 'upsert', version: 1, text: 'a job that failed' }] }, { jobId: `${queueName}-failed`, attempts: 1 });
    const token = 'test-token';
    const job = await hand.getNextJob(token);
    if (!job) throw new Error('the job to fail was not handed out');
    await job.moveToFailed(new Error('failed on purpose by the test'), token, false);
    await queue.pause();
    for (let i = 0; i < waiting; i++) await queue.add('change', { changes: [{ id: `item-${i}`, op: 'upsert', version: 1, text: `waiting text ${i}` }] });
    for (let i = 0; i < delayed; i++) await queue.add('change', { changes: [{ id: `later-${i}`, op: 'upsert', version: 1, text: `delayed text ${i}` }] }, { delay: 3_600_000 });
  } finally {
    await hand.close();
    await queue.close();
    connection.disconnect();
  }
}

async function countsOf(prefix: string, queueName: string): Promise<Counts> {
  const connection = new Redis(services().redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue(queueName, { connection, prefix });
  try {
    return (await queue.getJobCounts(...STATES)) as Counts;
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

/** The little of the DOM the page functions below use (the project compiles without the DOM library); they run in the page, so they reach `document` through globalThis themselves. */
interface PageElement {
  textContent: string | null;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
}

/** What the overview page shows: each queue card's name and its "N Jobs". */
async function overviewCards(page: Page): Promise<Record<string, number>> {
  return page.evaluate(() => {
    const cards: Record<string, number> = {};
    for (const card of (globalThis as unknown as { document: PageElement }).document.querySelectorAll('[class*="queueCard-"]')) {
      const name = card.querySelector('a[title]')?.getAttribute('title');
      const total = /^(\d+) Jobs?$/.exec(card.querySelector('[class*="total-"]')?.textContent?.trim() ?? '');
      if (name && total) cards[name] = Number(total[1]);
    }
    return cards;
  });
}

/** What a queue's page shows: the count on each status tab (none shown: 0). */
async function statusTabs(page: Page): Promise<Record<string, number>> {
  return page.evaluate(() => {
    const tabs: Record<string, number> = {};
    for (const tab of (globalThis as unknown as { document: PageElement }).document.querySelectorAll('[class*="statusTabs-"] li a')) {
      const label = tab.querySelector('[data-text]')?.getAttribute('data-text');
      if (!label || label === 'ALL' || label === 'LATEST') continue;
      tabs[label.toLowerCase().replace(/ /g, '-')] = Number(tab.querySelector('[class*="badge-"]')?.textContent ?? 0);
    }
    return tabs;
  });
}

function total(counts: Counts): number {
  return STATES.reduce((sum, state) => sum + counts[state], 0);
}

async function screenshot(page: Page, file: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, file);
  await page.screenshot({ path });
  console.log(`dashboard screenshot: ${path}`);
}

/** A raw request, for headers fetch() will not send (Host). */
function rawGet(port: number, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, headers }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .on('error', reject)
      .end();
  });
}

describe('queue dashboard', () => {
  it('shows every queue with its counts to a logged-in browser; probes stay open, the rest asks for the login', async () => {
    const name = uniqueName('dash');
    cleanups.push(() => deletePrefix(services().redisUrl, name));
    await putJobsInKnownStates(name, 'embed', 3, 2);
    await putJobsInKnownStates(name, 'write', 1, 0);
    const port = await freePort();
    const worker = await startWorker(name, port, { DASHBOARD_PASSWORD: PASSWORD });
    const base = `http://127.0.0.1:${port}`;

    // Prometheus and the probes carry no credentials.
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^indexer_/m);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect([200, 503]).toContain((await fetch(`${base}/readyz`)).status);

    for (const path of ['/queues', '/queues/', '/queues/api/queues', '/queues/static/favicon-32x32.png']) {
      const refused = await fetch(`${base}${path}`);
      expect(refused.status, path).toBe(401);
      expect(refused.headers.get('www-authenticate'), path).toMatch(/^Basic realm=/);
    }
    const basic = (password: string) => ({ authorization: `Basic ${Buffer.from(`indexer:${password}`).toString('base64')}` });
    expect((await fetch(`${base}/queues/api/queues`, { headers: basic('wrong') })).status).toBe(401);
    expect((await fetch(`${base}/queues/api/queues`, { method: 'PUT', headers: basic('wrong') })).status).toBe(401);
    const api = await fetch(`${base}/queues/api/queues`, { headers: { authorization: `Bearer ${PASSWORD}` } });
    expect(api.status).toBe(200);
    expect(((await api.json()) as { queues: { name: string }[] }).queues.map((q) => q.name).sort()).toEqual([`${name}:backfill`, `${name}:embed`, `${name}:write`]);
    expect((await fetch(`${base}/nothing-here`)).status).toBe(404);
    expect((await fetch(`${base}/queuesX`, { headers: basic(PASSWORD) })).status).toBe(404);

    const expected = { embed: await countsOf(name, 'embed'), write: await countsOf(name, 'write'), backfill: await countsOf(name, 'backfill') };
    expect(expected.embed).toMatchObject({ failed: 1, delayed: 2 });
    expect(total(expected.embed)).toBe(6);

    const page = await offlinePage(browser, [base]);
    cleanups.push(() => page.close());
    await page.authenticate({ username: 'indexer', password: PASSWORD });
    await page.setViewport({ width: 1280, height: 720 });
    await page.goto(`${base}/queues`);
    const cards = await waitFor('the overview to show the three queues with their totals', async () => {
      const shown = await overviewCards(page);
      return Object.keys(shown).length === 3 ? shown : undefined;
    });
    expect(cards).toEqual({ [`${name}:embed`]: total(expected.embed), [`${name}:write`]: total(expected.write), [`${name}:backfill`]: 0 });
    await screenshot(page, 'dashboard.png');

    await page.goto(`${base}/queues/queue/${encodeURIComponent(`${name}:embed`)}`);
    const tabs = await waitFor('the embed queue page to show its status counts', async () => {
      const shown = await statusTabs(page);
      return shown.failed === expected.embed.failed && shown.delayed === expected.embed.delayed ? shown : undefined;
    });
    for (const state of STATES) if (state in tabs) expect(tabs[state], state).toBe(expected.embed[state]);
    await screenshot(page, 'dashboard-embed.png');

    // Read-write: the page's own retry puts the failed job back (in the paused queue, where it waits).
    const retried = await page.evaluate(async (url) => (await fetch(url, { method: 'PUT' })).status, `${base}/queues/api/queues/${encodeURIComponent(`${name}:embed`)}/retry/failed`);
    expect(retried).toBe(200);
    const after = await countsOf(name, 'embed');
    expect(after.failed).toBe(0);
    expect(total(after)).toBe(total(expected.embed));

    worker.child.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    expect(worker.output()).toContain('"msg":"dashboard action"');
  });

  it('on loopback without a password: no login, but a page of another origin or a rebound host name cannot use it', async () => {
    const name = uniqueName('dash');
    cleanups.push(() => deletePrefix(services().redisUrl, name));
    await putJobsInKnownStates(name, 'embed', 1, 0);
    const port = await freePort();
    const worker = await startWorker(name, port);
    const base = `http://127.0.0.1:${port}`;
    expect((await fetch(`${base}/queues/api/queues`)).status).toBe(200);
    expect(worker.output()).toMatch(/"dashboard":"\/queues \(no login: loopback only\)"/);
    // A page whose DNS name was rebound to 127.0.0.1 sends its own name as Host.
    expect(await rawGet(port, '/queues/api/queues', { host: `rebound.example:${port}` })).toBe(403);
    expect(await rawGet(port, '/queues/api/queues', { host: `localhost:${port}` })).toBe(200);

    // A page elsewhere (another origin: another port) sends a simple POST, which no preflight guards.
    const elsewhere: Server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>elsewhere</title>'));
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      // The browser keeps its connection alive: close it, or close() waits for it to time out.
      elsewhere.closeAllConnections();
      await new Promise<void>((resolve) => elsewhere.close(() => resolve()));
    });
    const elsewhereOrigin = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}`;
    const page = await offlinePage(browser, [base, elsewhereOrigin]);
    cleanups.push(() => page.close());
    const statuses: number[] = [];
    page.on('response', (response) => {
      if (response.url().endsWith('/add')) statuses.push(response.status());
    });
    const addJob = (url: string) =>
      page.evaluate(async (target) => {
        // mode no-cors: the attacker cannot read the answer, but the request is sent all the same.
        await fetch(target, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ name: 'planted', data: { changes: [] }, options: {} }) });
      }, url);
    const addUrl = `${base}/queues/api/queues/${encodeURIComponent(`${name}:embed`)}/add`;
    const before = total(await countsOf(name, 'embed'));

    await page.goto(elsewhereOrigin);
    await addJob(addUrl);
    await waitFor('the cross-origin POST to be answered', () => statuses.length === 1);
    expect(statuses).toEqual([403]);
    expect(total(await countsOf(name, 'embed'))).toBe(before);
    expect(worker.output()).toMatch(/"msg":"dashboard request refused"/);

    // The same request from the dashboard's own page goes through: the refusal above was the Origin.
    await page.goto(`${base}/queues`);
    await addJob(addUrl);
    await waitFor('the same-origin POST to be answered', () => statuses.length === 2);
    expect(statuses[1]).toBe(200);
    expect(total(await countsOf(name, 'embed'))).toBe(before + 1);
  });

  it('refuses to start when METRICS_HOST exposes the dashboard without a password', async () => {
    const port = await freePort();
    const worker = spawnWorker('embed,write', { REDIS_URL: services().redisUrl, QUEUE_PREFIX: uniqueName('dash'), METRICS_PORT: String(port), METRICS_HOST: '0.0.0.0' });
    const exit = await worker.exited;
    expect(exit.code).toBe(78);
    expect(worker.output()).toMatch(/DASHBOARD_PASSWORD: required when METRICS_HOST=0\.0\.0\.0 \(not a loopback address\)/);
    expect(worker.output()).toMatch(/DASHBOARD_ENABLED=false/);
  });

  it("lists every generation's queues, a re-index's under its own prefix", async () => {
    const name = uniqueName('dash');
    cleanups.push(() => deletePrefix(services().redisUrl, name));
    const config = loadConfig({ REDIS_URL: services().redisUrl, QUEUE_PREFIX: name });
    const redis = new Redis(config.redis.url);
    cleanups.push(async () => void redis.disconnect());
    const generation = (id: number, model: string) => ({ id, model, dimensions: 8, collection: `c${id}`, createdAt: new Date().toISOString() });
    await redis.set(`${name}:generations`, JSON.stringify({ serving: 1, revision: 3, nextId: 3, dropping: [], generations: [generation(1, 'model-a'), generation(2, 'model-b')] }));
    const admin = await AdminServer.start({ host: '127.0.0.1', port: 0, metrics: new Metrics(), pipeline: () => undefined, dashboard: { board: createDashboard(config, silentLogger), credentials: undefined }, logger: silentLogger });
    cleanups.push(() => admin.close());

    const response = await fetch(`http://127.0.0.1:${admin.port}/queues/api/queues`);
    const queues = ((await response.json()) as { queues: { name: string; description: string }[] }).queues;
    expect(queues.map((q) => q.name).sort()).toEqual([`${name}:backfill`, `${name}:embed`, `${name}:g2:backfill`, `${name}:g2:embed`, `${name}:g2:write`, `${name}:write`]);
    expect(queues.find((q) => q.name === `${name}:g2:embed`)?.description).toMatch(/generation 2, model-b\)/);
    expect(queues.find((q) => q.name === `${name}:embed`)?.description).toMatch(/generation 1, model-a, serving\)/);
  });
});
