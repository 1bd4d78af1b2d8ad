import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

/**
 * Who may use the queue dashboard. It is read-write (retry, remove, empty, pause), so every request
 * under /queues passes three checks, in this order:
 *
 * 1. Host (only when the server is bound to loopback): the Host header must name a loopback address.
 *    A page on another site that rebinds its DNS name to 127.0.0.1 is same-origin with its own name,
 *    so the Origin check below cannot see it; its requests carry that name in Host, and fail here.
 * 2. Credentials (when DASHBOARD_PASSWORD is set): Basic user:password, or `Bearer <password>` for
 *    scripts.
 * 3. Origin (mutating methods only): a request a browser sent from another origin is refused. A
 *    logged-in browser sends Basic credentials on cross-site requests too, and on loopback without
 *    a password there are none: this is what stops a page elsewhere from POSTing to 127.0.0.1.
 *    Browsers send Origin on every cross-origin non-GET request (and Sec-Fetch-Site on all of
 *    them); a request with neither came from a script (curl), which CSRF cannot forge.
 */
export interface DashboardAccess {
  /** Undefined: no credentials asked (allowed only when bound to loopback; see loadConfig). */
  credentials: { user: string; password: string } | undefined;
  /** The server listens on loopback only: enforce the Host check. */
  loopbackOnly: boolean;
}

export interface DashboardRequest {
  method?: string | undefined;
  headers: { host?: string; origin?: string; authorization?: string; 'sec-fetch-site'?: string | string[] };
}

export type Verdict = { allowed: true } | { allowed: false; status: 401 | 403; reason: string };

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export function checkDashboardRequest(request: DashboardRequest, access: DashboardAccess): Verdict {
  const { headers } = request;
  if (access.loopbackOnly && !isLoopbackHost(hostnameOf(headers.host) ?? '')) {
    return { allowed: false, status: 403, reason: `the dashboard listens on loopback only, and Host "${headers.host ?? ''}" is not a loopback name: open it as http://127.0.0.1:<port>/queues or http://localhost:<port>/queues` };
  }
  if (access.credentials && !hasCredentials(headers.authorization, access.credentials)) {
    return { allowed: false, status: 401, reason: 'the dashboard needs the DASHBOARD_USER / DASHBOARD_PASSWORD credentials (Basic auth, or "Authorization: Bearer <password>")' };
  }
  if (!SAFE_METHODS.has((request.method ?? 'GET').toUpperCase())) {
    const crossSite = crossSiteReason(headers);
    if (crossSite) return { allowed: false, status: 403, reason: `refused a ${request.method ?? ''} from another site (${crossSite}): the dashboard's actions are taken from the dashboard's own page` };
  }
  return { allowed: true };
}

/**
 * Whether an address or host name reaches this machine only: 127.0.0.0/8, ::1 (also written out
 * or IPv4-mapped) and `localhost`. Any other name may resolve anywhere, so it counts as exposed.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (bare === 'localhost') return true;
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) !== 6) return false;
  // The URL parser writes IPv6 in its shortest form: ::1, and ::ffff:7fxx:xxxx for 127.x.x.x.
  const canonical = new URL(`http://[${bare}]/`).hostname;
  return canonical === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(canonical);
}

/** Basic user:password or Bearer password, compared in constant time. */
export function hasCredentials(authorization: string | undefined, credentials: { user: string; password: string }): boolean {
  const match = /^(\S+)\s+(\S+)\s*$/.exec(authorization ?? '');
  if (!match) return false;
  const scheme = (match[1] as string).toLowerCase();
  const value = match[2] as string;
  if (scheme === 'bearer') return sameSecret(value, credentials.password);
  if (scheme !== 'basic') return false;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return false;
  // Both compared, always: whether the user name alone was right must not show in the timing.
  const userOk = sameSecret(decoded.slice(0, colon), credentials.user);
  const passwordOk = sameSecret(decoded.slice(colon + 1), credentials.password);
  return userOk && passwordOk;
}

/** Hashing first gives equal lengths, so timingSafeEqual does not give the length away either. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Why a mutating request looks sent by a page of another origin, or undefined when it does not. */
function crossSiteReason(headers: DashboardRequest['headers']): string | undefined {
  const { origin, host } = headers;
  if (origin !== undefined) {
    const originHost = hostOf(origin);
    const ownHost = host === undefined ? undefined : hostOf(`http://${host}`);
    if (originHost === undefined || ownHost === undefined || originHost !== ownHost) return `Origin ${origin} is not ${host ?? 'this server'}`;
    return undefined;
  }
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return `Sec-Fetch-Site: ${String(site)}`;
  return undefined;
}

/** host[:port] of a URL, the default port left out (as browsers leave it out of Host). */
function hostOf(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.host : undefined;
  } catch {
    return undefined;
  }
}

function hostnameOf(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  try {
    return new URL(`http://${host}/`).hostname;
  } catch {
    return undefined;
  }
}
