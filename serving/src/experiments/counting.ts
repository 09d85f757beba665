/**
 * Experiment counting in serving: a request the experiment router forwarded carries the
 * experiment and the variant the sticky hash assigned its user (contracts/experiments.ts). The
 * first recommendation a user gets in an experiment is their exposure: one Redis script records
 * the user's variant and pre-experiment covariates (SET-if-absent with TTL = the experiment's
 * maxDuration) and, in the same script, adds the user to the experiment's totals hash, so a user
 * is counted once however many requests, replicas or restarts. An order event of an exposed user
 * updates the user's outcomes and the totals of the variant recorded at exposure, again in one
 * script. The totals are the sufficient statistics of stats-api.ts; every serving process exports
 * them as gauges read at scrape time (totals.ts), so they survive any pod. No label carries a
 * user id.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Counter, type Registry } from 'prom-client';
import {
  EXPERIMENT_COVARIATES,
  EXPERIMENT_HEADERS,
  EXPERIMENT_INDEX_KEY,
  EXPERIMENT_METRICS,
  EXPERIMENT_RUN,
  experimentIndexEntry,
  experimentTotalsKey,
  experimentUserKey,
  totalsFieldName,
  parseExperimentId,
  type ExperimentMetric,
  type ExperimentStat,
} from '../../../contracts/experiments.js';
import { USER_FEATURES, type UserFeatureName } from '../../../contracts/features.js';
import { defineScript, type RedisClient } from '../../../contracts/redis.js';
import type { ScriptRunner } from '../features/scripts.js';

/** The experiment a request belongs to, from the router's headers. */
export interface ExperimentTag {
  readonly namespace: string;
  readonly name: string;
  /** The Experiment object's run (contracts/experiments.ts experimentRunOf). */
  readonly run: string;
  /** Absent when the router sent the user to stable instead of their variant: no exposure. */
  readonly variant?: string;
  readonly ttlSeconds: number;
}

const VARIANT = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Longest TTL accepted (a year): a bad header must not pin keys forever. */
const MAX_TTL_SECONDS = 366 * 86_400;

/**
 * The experiment tag of a request, or undefined when it carries none (or a malformed one). A
 * tag without the variant header has no variant (the router fell back to stable). Without a
 * well-formed run header nothing is counted: the counts of another run would be mixed in.
 */
export function experimentTagOf(headers: IncomingHttpHeaders): ExperimentTag | undefined {
  const id = headers[EXPERIMENT_HEADERS.experiment];
  if (id === undefined) return undefined;
  const run = headers[EXPERIMENT_HEADERS.run];
  const variant = headers[EXPERIMENT_HEADERS.variant];
  const ttlHeader = headers[EXPERIMENT_HEADERS.ttlSeconds];
  // A router sends the same few header sets over and over: the last one parsed is kept.
  const last = lastTag;
  if (last && last.id === id && last.run === run && last.variant === variant && last.ttl === ttlHeader)
    return last.tag;
  const parsed = parseTag(id, run, variant, ttlHeader);
  const tag = parsed && Object.freeze(parsed);
  lastTag = { id, run, variant, ttl: ttlHeader, tag };
  return tag;
}

let lastTag:
  | {
      id: unknown;
      run: unknown;
      variant: unknown;
      ttl: unknown;
      tag: ExperimentTag | undefined;
    }
  | undefined;

function parseTag(
  id: unknown,
  run: unknown,
  variant: unknown,
  ttlHeader: unknown,
): ExperimentTag | undefined {
  const ttl = Number(ttlHeader);
  if (typeof id !== 'string' || typeof run !== 'string' || !EXPERIMENT_RUN.test(run)) return undefined;
  if (variant !== undefined && (typeof variant !== 'string' || !VARIANT.test(variant))) return undefined;
  const parsed = parseExperimentId(id);
  if (!parsed || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) return undefined;
  return { ...parsed, run, ...(variant !== undefined ? { variant } : {}), ttlSeconds: ttl };
}

/** Each metric's covariate from the user's batch features; undefined for a user without history. */
export function covariatesOf(
  features: ArrayLike<number> | undefined,
): Record<ExperimentMetric, number> | undefined {
  if (!features) return undefined;
  const out = {} as Record<ExperimentMetric, number>;
  for (const m of EXPERIMENT_METRICS) {
    const v = features[USER_FEATURES.indexOf(EXPERIMENT_COVARIATES[m] as UserFeatureName)];
    if (v === undefined || !Number.isFinite(v)) return undefined;
    out[m] = v;
  }
  return out;
}

/**
 * KEYS[1] = the user's hash, KEYS[2] = the experiment's totals (one slot: same hash tag);
 * ARGV = variant, ttl, x:conversion, x:orderValue, x:attachRate ('' = no covariate), then
 * totals field / increment pairs (the users field and exposureIncrements). Returns 1 when this is
 * the user's first exposure (and the totals moved), 0 otherwise.
 */
const EXPOSE = defineScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'c', 0, 't', 0, 'a', 0)
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'x:conversion', ARGV[3], 'x:orderValue', ARGV[4], 'x:attachRate', ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ttl)
for i = 6, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ttl)
return 1
`);

/**
 * KEYS[1] = the user's hash, KEYS[2] = the experiment's totals; ARGV = order value ('' =
 * unknown), 1 when the order carries an add-on, ttl, model. Nothing for a user never exposed;
 * else the variant recorded at exposure, whose totals move in the same script (so that the
 * user's outcome and the totals change together, exactly once): per metric, Y moves from its old
 * to its new per-user value, so sumY grows by the difference, sumYY by the difference of squares
 * (never negative: Y only grows) and sumXY by x times the difference
 * (durable-totals.int.test.ts checks the sums against its own).
 * Numbers are written with %.17g: Lua's default conversion keeps only 14 digits.
 */
const ORDER = defineScript(`
local f = redis.call('HMGET', KEYS[1], 'v', 'c', 't', 'a', 'x:conversion', 'x:orderValue', 'x:attachRate')
if not f[1] then return false end
local converted = 0
if f[2] == '0' then converted = 1; redis.call('HSET', KEYS[1], 'c', 1) end
local old = tonumber(f[3]) or 0
local new = old
if ARGV[1] ~= '' then
  new = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 't', ARGV[1]))
end
local attached = 0
if ARGV[2] == '1' and f[4] == '0' then attached = 1; redis.call('HSET', KEYS[1], 'a', 1) end
local prefix = 'sum|' .. f[1] .. '|' .. ARGV[4] .. '|'
local function add(metric, before, after, x)
  local d = after - before
  if d <= 0 then return end
  redis.call('HINCRBYFLOAT', KEYS[2], prefix .. metric .. '|sumY', string.format('%.17g', d))
  redis.call('HINCRBYFLOAT', KEYS[2], prefix .. metric .. '|sumYY', string.format('%.17g', after * after - before * before))
  if x then
    redis.call('HINCRBYFLOAT', KEYS[2], prefix .. metric .. '|sumXY', string.format('%.17g', tonumber(x) * d))
  end
end
add('conversion', 0, converted, f[5])
add('orderValue', old, new, f[6])
add('attachRate', 0, attached, f[7])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return f[1]
`);

/** Increments of the totals: per metric, per stat. */
export type SumIncrements = Partial<Record<ExperimentMetric, Partial<Record<ExperimentStat, number>>>>;

/** What one exposure adds to the sums (outcomes start at 0; only covariate sums move). */
export function exposureIncrements(x: Record<ExperimentMetric, number> | undefined): SumIncrements {
  const out: SumIncrements = {};
  for (const m of EXPERIMENT_METRICS) {
    out[m] = x ? { sumX: x[m], sumXX: x[m] * x[m] } : { nWithoutCovariate: 1 };
  }
  return out;
}

/** The totals fields and increments of one exposure (users + exposureIncrements), flattened. */
export function exposureTotals(
  variant: string,
  model: string,
  x: Record<ExperimentMetric, number> | undefined,
): string[] {
  const out = [totalsFieldName({ kind: 'users', variant, model }), '1'];
  for (const [metric, stats] of Object.entries(exposureIncrements(x)))
    for (const [stat, v] of Object.entries(stats ?? {}))
      if (v !== undefined && v !== 0)
        out.push(
          totalsFieldName({
            kind: 'sum',
            variant,
            model,
            metric: metric as ExperimentMetric,
            stat: stat as ExperimentStat,
          }),
          // JavaScript's shortest round-trip form: Redis parses it back to the same double.
          String(v),
        );
  return out;
}

/**
 * The users this process knows to be exposed already, per experiment run: a bounded set that
 * forgets the oldest entry first. A running experiment's requests come mostly from users exposed
 * before, and for each the exposure script only finds the user's key and returns 0; a hit here
 * skips that Redis call (about a quarter of serving's CPU per request, bench:serving-ab). An entry
 * is added only after Redis answered the script, so a failed exposure is tried again. It can
 * go stale only if Redis loses the user's key (a flush, a failover that drops writes): this
 * process then does not re-record that user's exposure until the entry is evicted, while a
 * replica that never saw the user records it at once.
 */
export class ExposedUsers {
  private readonly keys = new Set<string>();

  constructor(readonly capacity: number) {
    if (!(Number.isInteger(capacity) && capacity >= 0))
      throw new RangeError(`users remembered as exposed must be an integer >= 0, got ${capacity}`);
  }

  static key(tag: ExperimentTag, userId: string): string {
    return `${tag.namespace}/${tag.name}\0${tag.run}\0${userId}`;
  }

  has(key: string): boolean {
    return this.keys.has(key);
  }

  add(key: string): void {
    if (this.capacity === 0 || this.keys.has(key)) return;
    if (this.keys.size >= this.capacity) {
      // A Set iterates in insertion order: the first key is the oldest.
      const oldest = this.keys.values().next().value;
      if (oldest !== undefined) this.keys.delete(oldest);
    }
    this.keys.add(key);
  }

  get size(): number {
    return this.keys.size;
  }
}

/** Users remembered as exposed by default: about 8 MiB of keys. */
export const DEFAULT_EXPOSED_USERS_REMEMBERED = 65_536;

/** The experiment counting of one serving process: the scripts and their failures. */
export class ExperimentCounting {
  /** Exposures, orders, index adds and totals reads that failed (Redis down), by kind. */
  readonly failures: Counter<string>;
  private readonly exposed: ExposedUsers;

  constructor(
    registry: Registry,
    private readonly model: string,
    private readonly scripts: ScriptRunner,
    /** The scripts' Redis, for the experiment index (not a connection kept for WAIT). */
    private readonly redis: RedisClient,
    /** Users remembered as exposed (0 = ask Redis every time). */
    exposedUsersRemembered = DEFAULT_EXPOSED_USERS_REMEMBERED,
  ) {
    this.exposed = new ExposedUsers(exposedUsersRemembered);
    this.failures = new Counter({
      name: 'crema_experiment_count_failures_total',
      help: 'Exposures or orders of experiment users not counted because Redis failed (kind exposure, order), index entries not added (kind index), and scrapes that could not read the experiment totals (kind scrape).',
      labelNames: ['kind'],
      registers: [registry],
    });
  }

  /**
   * Records the user's exposure (counted once per experiment); `features` are their batch
   * features. A tag without a variant (the router's fallback to stable) exposes nobody.
   */
  async expose(
    tag: ExperimentTag,
    userId: string,
    features: ArrayLike<number> | undefined,
  ): Promise<boolean> {
    if (tag.variant === undefined) return false;
    const known = ExposedUsers.key(tag, userId);
    if (this.exposed.has(known)) return false;
    const x = covariatesOf(features);
    let first: unknown;
    try {
      first = await this.scripts.run({
        script: EXPOSE,
        keys: [
          experimentUserKey(tag.namespace, tag.name, tag.run, userId),
          experimentTotalsKey(tag.namespace, tag.name, tag.run),
        ],
        args: [
          tag.variant,
          String(tag.ttlSeconds),
          ...(x ? EXPERIMENT_METRICS.map((m) => String(x[m])) : ['', '', '']),
          ...exposureTotals(tag.variant, this.model, x),
        ],
      });
    } catch (err) {
      this.failures.inc({ kind: 'exposure' });
      throw err;
    }
    // Redis answered: the user's key exists now, whether this call made it or an earlier one.
    this.exposed.add(known);
    if (first !== 1) return false;
    // The index is another slot (a cluster runs a script on one slot): a set add after the
    // script, repeated at each new user, so a failed add or an entry dropped at expiry comes
    // back. The exposure is counted either way.
    await this.redis
      .sadd(EXPERIMENT_INDEX_KEY, experimentIndexEntry(tag.namespace, tag.name, tag.run))
      .catch(() => this.failures.inc({ kind: 'index' }));
    return true;
  }

  /**
   * Records an order of `userId` in the experiment, for the variant the user was exposed to
   * (recorded at exposure, which the router derived from the sticky hash). False when the user
   * was never exposed: their orders are not the experiment's.
   */
  async order(
    tag: ExperimentTag,
    userId: string,
    value: number | undefined,
    hasAddon: boolean,
  ): Promise<boolean> {
    let r: unknown;
    try {
      r = await this.scripts.run({
        script: ORDER,
        keys: [
          experimentUserKey(tag.namespace, tag.name, tag.run, userId),
          experimentTotalsKey(tag.namespace, tag.name, tag.run),
        ],
        args: [
          value === undefined ? '' : String(value),
          hasAddon ? '1' : '0',
          String(tag.ttlSeconds),
          this.model,
        ],
      });
    } catch (err) {
      this.failures.inc({ kind: 'order' });
      throw err;
    }
    return r !== null && r !== undefined && r !== false;
  }
}
