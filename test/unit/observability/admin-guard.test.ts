import { describe, expect, it } from 'vitest';
import { checkDashboardRequest, hasCredentials, isLoopbackHost, type DashboardAccess } from '../../../src/observability/admin-guard.js';

const credentials = { user: 'indexer', password: 's3cret:with:colons' };
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

describe('isLoopbackHost', () => {
  it('knows loopback addresses in every spelling', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '[::ffff:127.0.0.9]']) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
  });

  it('counts every other address or name as exposed', () => {
    for (const host of ['0.0.0.0', '::', '10.0.0.5', '192.168.1.1', '::ffff:10.0.0.1', 'indexer.svc.cluster.local', 'localhost.example.com', '128.0.0.1', '']) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });
});

describe('hasCredentials', () => {
  it('accepts Basic user:password (the password may hold colons) and Bearer password', () => {
    expect(hasCredentials(basic('indexer', 's3cret:with:colons'), credentials)).toBe(true);
    expect(hasCredentials('Bearer s3cret:with:colons', credentials)).toBe(true);
    expect(hasCredentials('bearer s3cret:with:colons', credentials)).toBe(true);
  });

  it('refuses a wrong user, a wrong or partial password, other schemes and garbage', () => {
    for (const header of [
      undefined,
      '',
      basic('admin', 's3cret:with:colons'),
      basic('indexer', 's3cret'),
      basic('indexer', ''),
      'Bearer s3cret',
      'Bearer',
      `Digest ${Buffer.from('indexer:s3cret:with:colons').toString('base64')}`,
      'Basic !!!not-base64!!!',
      `Basic ${Buffer.from('no-colon-here').toString('base64')}`,
    ]) {
      expect(hasCredentials(header, credentials), String(header)).toBe(false);
    }
  });
});

describe('checkDashboardRequest', () => {
  const open: DashboardAccess = { credentials: undefined, loopbackOnly: true };
  const locked: DashboardAccess = { credentials, loopbackOnly: false };

  it('lets a loopback browser in without a login when no password is set', () => {
    expect(checkDashboardRequest({ method: 'GET', headers: { host: '127.0.0.1:9464' } }, open)).toEqual({ allowed: true });
    expect(checkDashboardRequest({ method: 'GET', headers: { host: 'localhost:9464' } }, open)).toEqual({ allowed: true });
    expect(checkDashboardRequest({ method: 'GET', headers: { host: '[::1]:9464' } }, open)).toEqual({ allowed: true });
  });

  it('refuses a Host that is not loopback on a loopback server (a DNS-rebinding page), even for reads', () => {
    const verdict = checkDashboardRequest({ method: 'GET', headers: { host: 'attacker.example:9464' } }, open);
    expect(verdict).toMatchObject({ allowed: false, status: 403 });
    expect(checkDashboardRequest({ method: 'GET', headers: {} }, open)).toMatchObject({ allowed: false, status: 403 });
  });

  it('asks for the credentials when a password is set: 401 without, through with Basic or Bearer', () => {
    expect(checkDashboardRequest({ method: 'GET', headers: { host: '10.0.0.5:9464' } }, locked)).toMatchObject({ allowed: false, status: 401 });
    expect(checkDashboardRequest({ method: 'GET', headers: { host: '10.0.0.5:9464', authorization: basic('indexer', 'nope') } }, locked)).toMatchObject({ allowed: false, status: 401 });
    expect(checkDashboardRequest({ method: 'GET', headers: { host: '10.0.0.5:9464', authorization: basic('indexer', credentials.password) } }, locked)).toEqual({ allowed: true });
    expect(checkDashboardRequest({ method: 'PUT', headers: { host: '10.0.0.5:9464', authorization: `Bearer ${credentials.password}` } }, locked)).toEqual({ allowed: true });
  });

  it('refuses a mutating request sent from another origin, with or without a login', () => {
    for (const access of [open, { ...locked, loopbackOnly: true }]) {
      const headers = { host: '127.0.0.1:9464', authorization: basic('indexer', credentials.password) };
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
        expect(checkDashboardRequest({ method, headers: { ...headers, origin: 'https://attacker.example' } }, access), method).toMatchObject({ allowed: false, status: 403 });
        expect(checkDashboardRequest({ method, headers: { ...headers, origin: 'http://127.0.0.1:8080' } }, access), `${method} other port`).toMatchObject({ allowed: false, status: 403 });
        expect(checkDashboardRequest({ method, headers: { ...headers, origin: 'null' } }, access), `${method} opaque origin`).toMatchObject({ allowed: false, status: 403 });
        expect(checkDashboardRequest({ method, headers: { ...headers, 'sec-fetch-site': 'cross-site' } }, access), `${method} no Origin`).toMatchObject({ allowed: false, status: 403 });
      }
      // Reads stay possible from links elsewhere (a bookmark, a runbook): they change nothing.
      expect(checkDashboardRequest({ method: 'GET', headers: { ...headers, origin: 'https://attacker.example', 'sec-fetch-site': 'cross-site' } }, access)).toEqual({ allowed: true });
    }
  });

  it("lets the dashboard's own page and scripts (no Origin at all) change queues", () => {
    const headers = { host: '127.0.0.1:9464' };
    expect(checkDashboardRequest({ method: 'PUT', headers: { ...headers, origin: 'http://127.0.0.1:9464', 'sec-fetch-site': 'same-origin' } }, open)).toEqual({ allowed: true });
    expect(checkDashboardRequest({ method: 'POST', headers: { ...headers, 'sec-fetch-site': 'same-origin' } }, open)).toEqual({ allowed: true });
    expect(checkDashboardRequest({ method: 'PUT', headers }, open)).toEqual({ allowed: true });
    // Behind a TLS-terminating proxy that keeps the Host header.
    expect(checkDashboardRequest({ method: 'PUT', headers: { host: 'queues.example.com', origin: 'https://queues.example.com', authorization: basic('indexer', credentials.password) } }, locked)).toEqual({ allowed: true });
  });
});
