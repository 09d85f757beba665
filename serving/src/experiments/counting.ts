/**
 * Experiment counting in serving: a request the experiment router forwarded carries the
 * experiment and the variant the sticky hash assigned its user (contracts/experiments.ts). The
 * first recommendation a user gets in an experiment is their exposure: one Redis script records
 * the user's variant and pre-experiment covariates (SET-if-absent with TTL = the experiment's
 * maxDuration), so a user is counted once however many requests, replicas or restarts. An order
 * event of an exposed user updates the user's outcomes in the same hash and returns what changed,
 * and serving adds that to the counters of the variant recorded at exposure. The counters are
 * the sufficient statistics of stats-api.ts; no label carries a user id.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Counter, type Registry } from 'prom-client';
import {
  EXPERIMENT_COUNTERS,
  EXPERIMENT_COVARIATES,
  EXPERIMENT_HEADERS,
  EXPERIMENT_METRICS,
  experimentUserKey,
  parseExperimentId,
  type ExperimentMetric,
  type ExperimentStat,
} from '../../../contracts/experiments.js';
import { USER_FEATURES, type UserFeatureName } from '../../../contracts/features.js';
import { defineScript } from '../../../contracts/redis.js';
import type { ScriptRunner } from '../features/scripts.js';

/** The experiment a request belongs to, from the router's headers. */
export interface ExperimentTag {
  readonly namespace: string;
  readonly name: string;
  readonly variant: string;
  readonly ttlSeconds: number;
}

const VARIANT = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Longest TTL accepted (a year): a bad header must not pin keys forever. */
const MAX_TTL_SECONDS = 366 * 86_400;

/** The experiment tag of a request, or undefined when it carries none (or a malformed one). */
export function experimentTagOf(headers: IncomingHttpHeaders): ExperimentTag | undefined {
  const id = headers[EXPERIMENT_HEADERS.experiment];
  const variant = headers[EXPERIMENT_HEADERS.variant];
  const ttl = Number(headers[EXPERIMENT_HEADERS.ttlSeconds]);
  if (typeof id !== 'string' || typeof variant !== 'string' || !VARIANT.test(variant)) return undefined;
  const parsed = parseExperimentId(id);
  if (!parsed || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) return undefined;
  return { ...parsed, variant, ttlSeconds: ttl };
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
 * KEYS[1] = the user's hash; ARGV = variant, ttl, x:conversion, x:orderValue, x:attachRate
 * ('' = no covariate). Returns 1 when this is the user's first exposure, 0 otherwise.
 */
const EXPOSE = defineScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'c', 0, 't', 0, 'a', 0)
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'x:conversion', ARGV[3], 'x:orderValue', ARGV[4], 'x:attachRate', ARGV[5])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
`);

/**
 * KEYS[1] = the user's hash; ARGV = order value ('' = unknown), 1 when the order carries an
 * add-on. Nothing for a user never exposed; else {variant, converted now (0/1), old total, new
 * total, attached now (0/1), x:conversion, x:orderValue, x:attachRate}, numbers as strings
 * (Lua would truncate them to integers).
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
return {f[1], tostring(converted), tostring(old), tostring(new), tostring(attached), f[5] or '', f[6] or '', f[7] or ''}
`);

/** Counter increments: per metric, per stat. */
export type SumIncrements = Partial<Record<ExperimentMetric, Partial<Record<ExperimentStat, number>>>>;

/** What one exposure adds to the sums (outcomes start at 0; only covariate sums move). */
export function exposureIncrements(x: Record<ExperimentMetric, number> | undefined): SumIncrements {
  const out: SumIncrements = {};
  for (const m of EXPERIMENT_METRICS) {
    out[m] = x ? { sumX: x[m], sumXX: x[m] * x[m] } : { nWithoutCovariate: 1 };
  }
  return out;
}

/** The user's outcome change from one order, as the ORDER script reports it. */
export interface OrderChange {
  readonly converted: boolean;
  readonly oldTotal: number;
  readonly newTotal: number;
  readonly attached: boolean;
  readonly x?: Record<ExperimentMetric, number>;
}

/**
 * What one order adds to the sums: Y moves from its old to its new per-user value, so sumY grows
 * by the difference and sumYY by the difference of squares (never negative: Y only grows).
 */
export function orderIncrements(c: OrderChange): SumIncrements {
  const deltas: Record<ExperimentMetric, [before: number, after: number]> = {
    conversion: [0, c.converted ? 1 : 0],
    orderValue: [c.oldTotal, c.newTotal],
    attachRate: [0, c.attached ? 1 : 0],
  };
  const out: SumIncrements = {};
  for (const m of EXPERIMENT_METRICS) {
    const [before, after] = deltas[m];
    const d = after - before;
    if (d <= 0) continue;
    out[m] = {
      sumY: d,
      sumYY: after * after - before * before,
      ...(c.x ? { sumXY: c.x[m] * d } : {}),
    };
  }
  return out;
}

/** The experiment counters of one serving process and the scripts that feed them. */
export class ExperimentCounting {
  readonly users: Counter<string>;
  readonly sums: Counter<string>;
  /** Script calls that failed (Redis down): the exposure or order was not counted. */
  readonly failures: Counter<string>;

  constructor(
    registry: Registry,
    private readonly model: string,
    private readonly scripts: ScriptRunner,
  ) {
    this.users = new Counter({
      name: EXPERIMENT_COUNTERS.users.name,
      help: 'Users exposed to an experiment variant, each counted once per experiment.',
      labelNames: EXPERIMENT_COUNTERS.users.labels,
      registers: [registry],
    });
    this.sums = new Counter({
      name: EXPERIMENT_COUNTERS.sums.name,
      help: 'Sufficient statistics (sumY, sumYY, CUPED sums) of each experiment metric over exposed users.',
      labelNames: EXPERIMENT_COUNTERS.sums.labels,
      registers: [registry],
    });
    this.failures = new Counter({
      name: 'crema_experiment_count_failures_total',
      help: 'Exposures or orders of experiment users not counted because Redis failed, by kind.',
      labelNames: ['kind'],
      registers: [registry],
    });
  }

  private add(tag: ExperimentTag, variant: string, inc: SumIncrements): void {
    const base = { experiment: tag.name, variant, model: this.model, namespace: tag.namespace };
    for (const [metric, stats] of Object.entries(inc)) {
      for (const [stat, v] of Object.entries(stats ?? {})) {
        if (v !== undefined && v > 0) this.sums.inc({ ...base, metric, stat }, v);
      }
    }
  }

  /** Records the user's exposure (counted once per experiment); `features` are their batch features. */
  async expose(
    tag: ExperimentTag,
    userId: string,
    features: ArrayLike<number> | undefined,
  ): Promise<boolean> {
    const x = covariatesOf(features);
    let first: unknown;
    try {
      first = await this.scripts.run({
        script: EXPOSE,
        keys: [experimentUserKey(tag.namespace, tag.name, userId)],
        args: [
          tag.variant,
          String(tag.ttlSeconds),
          ...(x ? EXPERIMENT_METRICS.map((m) => String(x[m])) : ['', '', '']),
        ],
      });
    } catch (err) {
      this.failures.inc({ kind: 'exposure' });
      throw err;
    }
    if (first !== 1) return false;
    this.users.inc({
      experiment: tag.name,
      variant: tag.variant,
      model: this.model,
      namespace: tag.namespace,
    });
    this.add(tag, tag.variant, exposureIncrements(x));
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
        keys: [experimentUserKey(tag.namespace, tag.name, userId)],
        args: [value === undefined ? '' : String(value), hasAddon ? '1' : '0'],
      });
    } catch (err) {
      this.failures.inc({ kind: 'order' });
      throw err;
    }
    if (!Array.isArray(r)) return false;
    const [variant, converted, oldT, newT, attached, xc, xv, xa] = (r as Array<string | Buffer>).map(String);
    const x =
      xc !== '' && xv !== '' && xa !== ''
        ? { conversion: Number(xc), orderValue: Number(xv), attachRate: Number(xa) }
        : undefined;
    this.add(
      tag,
      variant!,
      orderIncrements({
        converted: converted === '1',
        oldTotal: Number(oldT),
        newTotal: Number(newT),
        attached: attached === '1',
        ...(x ? { x } : {}),
      }),
    );
    return true;
  }
}
