import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { ProviderLimits } from './rate-limit-headers.js';

/**
 * Requests-per-minute and tokens-per-minute budgets for one embeddings endpoint, shared by every
 * replica through one Redis hash. Two token buckets (requests, tokens) that refill continuously at
 * limit/60 s and hold at most one minute's worth, as OpenAI's limits behave.
 *
 * A request reserves its estimated tokens before it is sent. The balance may go below zero: that is
 * the queue of reservations made before this one, and the answer is how long this caller waits
 * until its own reservation is covered. Waiting callers are therefore served in the order they
 * reserved, across processes, with one Redis round trip each.
 *
 * After the answer, settle() corrects the bucket by the tokens the provider actually counted, and
 * by what it says is left (x-ratelimit-remaining-*): the provider's view minus our reservations it
 * cannot have seen yet (those still waiting for their turn) is the truth whenever it is lower than
 * ours (another client on the same key, or a tokenizer that counts differently). Requests already
 * sent are taken as counted: the provider answers with its count at the time it answers, which
 * includes requests that arrived after the one it answers. Limits the provider announces
 * (x-ratelimit-limit-*) replace configured ones when lower, and are remembered for every replica.
 */

// KEYS[1] bucket hash: r, t (request and token balances), ts (last refill, ms), lr, lt (learned
// limits), u (no request before this time, set by a 429). KEYS[2] sorted set of reservations not
// yet settled, "id:tokens" scored by their turn plus a TTL: after that they are presumed lost (a
// process died mid-request), and a score above now + TTL means the turn has not come yet.
// ARGV[1] operation, ARGV[2] configured requests/min, ARGV[3] configured tokens/min (0: none).
const BUCKET = `
local bucket, pending = KEYS[1], KEYS[2]
local op, cfgR, cfgT = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', pending, '-inf', now)

local h = {}
local raw = redis.call('HGETALL', bucket)
for i = 1, #raw, 2 do h[raw[i]] = tonumber(raw[i + 1]) end

local function cap(configured, learned)
  if configured > 0 and learned and learned > 0 then return math.min(configured, learned) end
  if configured > 0 then return configured end
  return learned or 0
end

local function refill(balance, limit, since)
  if limit <= 0 then return nil end
  if balance == nil then return limit end
  return math.min(limit, balance + math.max(0, now - since) * limit / 60000)
end

if op == 'settle' then
  if ARGV[4] ~= '' then h.lr = tonumber(ARGV[4]) end
  if ARGV[6] ~= '' then h.lt = tonumber(ARGV[6]) end
end
local capR, capT = cap(cfgR, h.lr), cap(cfgT, h.lt)
local r = refill(h.r, capR, h.ts or now)
local t = refill(h.t, capT, h.ts or now)
local wait = 0

if op == 'reserve' then
  local tokens, id, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
  if r then r = r - 1; if r < 0 then wait = math.max(wait, math.ceil(-r * 60000 / capR)) end end
  -- A request larger than a whole minute's budget can still go, alone, when the bucket is full.
  if t then tokens = math.min(tokens, capT); t = t - tokens; if t < 0 then wait = math.max(wait, math.ceil(-t * 60000 / capT)) end end
  wait = math.max(wait, (h.u or 0) - now)
  if r or t then redis.call('ZADD', pending, now + wait + ttl, id .. ':' .. tokens) end
elseif op == 'settle' then
  -- ARGV[4..7]: limit/remaining requests, limit/remaining tokens ('' when not sent);
  -- ARGV[8] member of the reservation, ARGV[9] tokens reserved, ARGV[10] tokens counted.
  -- The provider answered with its count at that moment. Reservations whose turn has come were
  -- sent and are (about) in it; those still waiting for their turn are not. ARGV[11]: their TTL.
  redis.call('ZREM', pending, ARGV[8])
  if t then t = math.min(capT, t + tonumber(ARGV[9]) - tonumber(ARGV[10])) end
  local unseen = redis.call('ZRANGEBYSCORE', pending, '(' .. (now + tonumber(ARGV[11])), '+inf')
  local inFlightTokens, inFlightRequests = 0, 0
  for _, member in ipairs(unseen) do
    inFlightRequests = inFlightRequests + 1
    inFlightTokens = inFlightTokens + tonumber(string.match(member, ':(%d+)$'))
  end
  if r and ARGV[5] ~= '' then r = math.min(r, tonumber(ARGV[5]) - inFlightRequests) end
  if t and ARGV[7] ~= '' then t = math.min(t, tonumber(ARGV[7]) - inFlightTokens) end
elseif op == 'block' then
  h.u = math.max(h.u or 0, now + tonumber(ARGV[4]))
end

local fields = {'ts', now}
if r then table.insert(fields, 'r'); table.insert(fields, r) end
if t then table.insert(fields, 't'); table.insert(fields, t) end
if h.lr then table.insert(fields, 'lr'); table.insert(fields, h.lr) end
if h.lt then table.insert(fields, 'lt'); table.insert(fields, h.lt) end
if h.u then table.insert(fields, 'u'); table.insert(fields, h.u) end
redis.call('HSET', bucket, unpack(fields))
-- Idle buckets go away; learned limits are learned again from the next answer.
redis.call('PEXPIRE', bucket, 3600000)
redis.call('PEXPIRE', pending, 3600000)
return {wait, capR, capT}`;

/**
 * Added to every wait. Our bucket starts refilling when we reserve, the provider's when the request
 * arrives; after an idle spell both are full and that lag (a network round trip) is refill the
 * provider never credits. Sending a little after our turn covers it. It costs no throughput: the
 * bucket keeps refilling meanwhile and the next turn is computed from the bucket, not from this send.
 */
const SEND_MARGIN_MS = 200;

export interface RateLimits {
  /** Requests per minute; undefined: none configured. */
  rpm?: number;
  /** Tokens per minute; undefined: none configured. */
  tpm?: number;
}

export interface Reservation {
  /** How long until this reservation's turn (0: now). The caller sends then: see waitForTurn. */
  waitMs: number;
  readonly member: string | undefined;
  readonly tokens: number;
}

/** Waits for a reservation's turn. */
export async function waitForTurn(reservation: Reservation, signal?: AbortSignal): Promise<void> {
  if (reservation.waitMs > 0) await sleep(reservation.waitMs, undefined, { signal });
}

export interface LimiterSnapshot {
  /** Effective limits (configured or learned, the lower); 0 when there is none. */
  rpm: number;
  tpm: number;
}

export interface SharedRateLimiterOptions {
  redis: Redis;
  /** One bucket per endpoint and model: `<prefix>:ratelimit:<model>:<endpoint fingerprint>`. */
  key: string;
  limits: RateLimits;
  /** Learn limits from x-ratelimit-* headers (on by default). */
  adaptToHeaders?: boolean;
  /** After this long a reservation that was never settled is presumed lost. */
  reservationTtlMs: number;
}

export class SharedRateLimiter {
  private snapshot: LimiterSnapshot;

  constructor(private readonly options: SharedRateLimiterOptions) {
    this.snapshot = { rpm: options.limits.rpm ?? 0, tpm: options.limits.tpm ?? 0 };
  }

  /** The limits in force at the last call. */
  get limits(): LimiterSnapshot {
    return this.snapshot;
  }

  /**
   * Reserves one request and its estimated tokens, and says when its turn comes. The reservation
   * holds its place whether or not the caller then waits for it.
   */
  async reserve(tokens: number): Promise<Reservation> {
    const id = randomUUID();
    const rounded = Math.max(0, Math.ceil(tokens));
    const [wait, , capT] = await this.run('reserve', [String(rounded), id, String(this.options.reservationTtlMs)]);
    const reserved = capT > 0 ? Math.min(rounded, capT) : rounded;
    const limited = this.snapshot.rpm > 0 || this.snapshot.tpm > 0;
    return { waitMs: wait > 0 ? wait + SEND_MARGIN_MS : 0, member: limited ? `${id}:${reserved}` : undefined, tokens: reserved };
  }

  /**
   * The request was answered (or failed): correct the bucket by the tokens the provider counted
   * (0 for a request it refused), and by what its headers say.
   */
  async settle(reservation: Reservation, countedTokens: number, limits: ProviderLimits | undefined): Promise<void> {
    const learn = this.options.adaptToHeaders !== false ? limits : undefined;
    const field = (value: number | undefined) => (value === undefined ? '' : String(value));
    const nothingToDo = reservation.member === undefined && learn?.limitRequests === undefined && learn?.limitTokens === undefined;
    if (nothingToDo) return;
    await this.run('settle', [
      field(learn?.limitRequests),
      field(learn?.remainingRequests),
      field(learn?.limitTokens),
      field(learn?.remainingTokens),
      reservation.member ?? '',
      String(reservation.member ? reservation.tokens : 0),
      String(reservation.member ? Math.ceil(countedTokens) : 0),
      String(this.options.reservationTtlMs),
    ]);
  }

  /** The provider said 429: nobody sends to this endpoint before `ms` from now. */
  async block(ms: number): Promise<void> {
    if (ms > 0) await this.run('block', [String(Math.ceil(ms))]);
  }

  /** Runs one bucket operation; answers the wait and the effective request and token limits. */
  private async run(op: string, args: string[]): Promise<[wait: number, rpm: number, tpm: number]> {
    const { redis, key, limits } = this.options;
    const result = (await redis.eval(BUCKET, 2, key, `${key}:pending`, op, String(limits.rpm ?? 0), String(limits.tpm ?? 0), ...args)) as [number, number, number];
    this.snapshot = { rpm: result[1], tpm: result[2] };
    return result;
  }
}
