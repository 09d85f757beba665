/**
 * bench/experiments/cuped: how much variance CUPED removes on the project's own synthetic chain,
 * measured with Crema's own code end to end.
 *
 *   npm run bench:experiments:cuped -- [--users 500000] [--start 2026-05-04] [--seed 11] [--splits 10]
 *       [--decision-runs 100] [--decision-lift 0.03] [--look-minutes 30] [--out <file>]
 *
 * 1. Orders from the feature-jobs generator (buildWorld, generateDay: 840 stores, 0.4 orders per
 *    user per day) for the 31 local dates before the experiment's start and the 14 from it.
 * 2. Pre-experiment covariates exactly as serving gets them: the batch feature job's snapshot as of
 *    00:00 UTC of the start date over its default 30-day window (computeSnapshot with the orders
 *    generated in memory instead of read from disk), computeUserFeatures, then serving's
 *    covariatesOf (frequency_30d, monetary_30d, addon_attach_rate, as float32 from the blob). The
 *    job writes no features for a user without an order in the window (computeUserFeatures
 *    returns false), and serving then passes no covariate: that user counts in
 *    nWithoutCovariate. The generator has no sign-ups (every user exists from day 0), so "new"
 *    users are those without an order in the 30 days (low activity or churned).
 * 3. Outcomes per user over the 14 days from exposure, as serving counts them
 *    (serving/src/experiments/counting.ts): conversion (ordered at least once, 0/1), orderValue
 *    (dollars), attachRate (an order carried an add-on, 0/1). Two exposure models:
 *    - `start`: every generated user is exposed at the start (the longest outcome window);
 *    - `staggered`: bench:experiments' traffic assumption: 80 % of users open the app in the
 *      14 days, the first time after an exponential with a 3-day mean, independent of their
 *      activity (the generator models orders, not app opens); outcomes count from exposure.
 * 4. A/A: users split 50/50 by the sticky hash (contracts/variant-hash.ts assignVariant, user id
 *    `u<index>` as the feature job keys users) under `--splits` salts; per variant the sums of
 *    stats-api.ts; analyze() gives each comparison's varianceReduction (1 − V_cuped/V_plain).
 *    The planned sample size per variant at +3 % relative conversion lift (planSamplesPerVariant,
 *    80 % power) shrinks by the same factor.
 * 5. Days to a decision at +3 % relative (conversion; order value), with the sums serving exports
 *    and with the same sums minus X: the staggered population as the controller sees it (X added
 *    at exposure, Y as orders arrive), a look every 30 min, `--decision-runs` random splits.
 *    `--decision-lift 0` makes it an A/A (false positives with outcomes that mature after entry).
 * 6. Sanity check (SYNTHETIC, not the chain): Y = 2 + 0.5·X + ε with corr(X, Y)² = 0.81, all users
 *    with a covariate: the reduction analyze() reports must be ≈ 0.81.
 *
 * Prints JSON as its last line and writes bench/results/experiments-cuped.json (or `--out`).
 */
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXPERIMENT_METRICS, type ExperimentMetric } from '../../contracts/experiments.js';
import { USER_FEATURES } from '../../contracts/features.js';
import { assignVariant } from '../../contracts/variant-hash.js';
import { computeUserFeatures } from '../../feature-jobs/src/batch/features.js';
import { computeSnapshot } from '../../feature-jobs/src/batch/snapshot.js';
import { Rng, mixSeed } from '../../feature-jobs/src/common/rng.js';
import { buildWorld, dateRange, type Dataset } from '../../feature-jobs/src/generate/dataset.js';
import { generateDay, type OrderColumns } from '../../feature-jobs/src/generate/orders.js';
import { analyze, planSamplesPerVariant } from '../../operator/src/controllers/experiment/stats.js';
import type { MetricSums } from '../../operator/src/controllers/experiment/stats-api.js';
import { covariatesOf } from '../../serving/src/experiments/counting.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : def;
};
const USERS = Number(arg('users', '500000'));
const START = arg('start', '2026-05-04'); // a Monday
const SEED = Number(arg('seed', '11'));
const SPLITS = Number(arg('splits', '10'));
const STORES = 840;
const WINDOW_DAYS = 30; // the batch job's default --window-days
const PRE_DATES = WINDOW_DAYS + 1; // the snapshot reads one local date more (windowDates)
const EXPERIMENT_DAYS = 14;
const ACTIVE_SHARE = 0.8; // bench:experiments
const MEAN_FIRST_DAY = 3; // bench:experiments
const ALPHA = 0.05;
const DAY = 86_400;
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const log = (line: string) => console.error(`bench:experiments:cuped ${line}`);
const round = (x: number, d = 4) => Number(x.toFixed(d));
const t0 = performance.now();

// 1. The world and its days (generated lazily; each local date once).
const startMs = Date.parse(`${START}T00:00:00Z`);
const dates = dateRange(
  new Date(startMs - PRE_DATES * DAY * 1000).toISOString().slice(0, 10),
  PRE_DATES + EXPERIMENT_DAYS,
);
const world = buildWorld({ seed: SEED, users: USERS, stores: STORES, start: dates[0]!, days: dates.length });
const cache = new Map<string, OrderColumns>();
let ordersGenerated = 0;
function ordersOf(date: string): OrderColumns {
  let o = cache.get(date);
  if (!o) {
    o = generateDay(world, dates.indexOf(date), date);
    ordersGenerated += o.n;
    cache.set(date, o);
    // The snapshot reads dates in order and the outcomes start one date before START: keep 2.
    if (cache.size > 2) cache.delete(cache.keys().next().value!);
  }
  return o;
}

// 2. Covariates: the batch job's snapshot as of START over 30 days, then serving's covariatesOf.
const inMemory = {
  manifest: { counts: { users: USERS } },
  catalog: world.catalog,
  stores: world.stores,
  days: dates,
  orders: ordersOf,
} as unknown as Dataset; // computeSnapshot reads only these members
const snapshot = computeSnapshot(inMemory, START, WINDOW_DAYS);
const asOf = snapshot.asOf;
const hasX = new Uint8Array(USERS);
const X: Record<ExperimentMetric, Float64Array> = {
  conversion: new Float64Array(USERS),
  orderValue: new Float64Array(USERS),
  attachRate: new Float64Array(USERS),
};
const vec = new Float32Array(USER_FEATURES.length);
for (let u = 0; u < USERS; u++) {
  const x = computeUserFeatures(snapshot.agg, u, vec) ? covariatesOf(vec) : undefined;
  if (!x) continue;
  hasX[u] = 1;
  for (const m of EXPERIMENT_METRICS) X[m][u] = x[m];
}
const preMs = performance.now() - t0;
log(`covariates (${ordersGenerated} orders generated) in ${(preMs / 1000).toFixed(1)} s`);

// 3. Outcomes per user from exposure to the end, for both exposure models.
const SCENARIOS = ['start', 'staggered'] as const;
type Scenario = (typeof SCENARIOS)[number];
const exposedAt: Record<Scenario, Float64Array> = {
  start: new Float64Array(USERS).fill(asOf),
  staggered: new Float64Array(USERS).fill(Infinity),
};
const end = asOf + EXPERIMENT_DAYS * DAY;
const exposureRng = new Rng(mixSeed(SEED, 1001));
for (let u = 0; u < USERS; u++) {
  const active = exposureRng.next() < ACTIVE_SHARE;
  const t = asOf + -Math.log(1 - exposureRng.next()) * MEAN_FIRST_DAY * DAY;
  if (active && t < end) exposedAt.staggered[u] = t;
}
const Y: Record<Scenario, Record<ExperimentMetric, Float64Array>> = {
  start: {
    conversion: new Float64Array(USERS),
    orderValue: new Float64Array(USERS),
    attachRate: new Float64Array(USERS),
  },
  staggered: {
    conversion: new Float64Array(USERS),
    orderValue: new Float64Array(USERS),
    attachRate: new Float64Array(USERS),
  },
};
let experimentOrders = 0;
/** Orders after a user's staggered exposure, for the decision-time sweep (step 5). */
const staggeredOrders = { t: [] as number[], u: [] as number[], dollars: [] as number[] };
// Local dates from START − 1 (its evening is after 00:00 UTC of START) to START + 13.
for (const date of dates.slice(PRE_DATES - 1)) {
  const o = ordersOf(date);
  for (let i = 0; i < o.n; i++) {
    const t = o.ts[i]!;
    if (t < asOf || t >= end) continue;
    experimentOrders++;
    const u = o.user[i]!;
    const addon = o.addon1[i]! >= 0 || o.addon2[i]! >= 0;
    if (t >= exposedAt.staggered[u]!) {
      staggeredOrders.t.push(t);
      staggeredOrders.u.push(u);
      staggeredOrders.dollars.push(o.cents[i]! / 100);
    }
    for (const s of SCENARIOS) {
      if (t < exposedAt[s][u]!) continue;
      Y[s].conversion[u] = 1;
      Y[s].orderValue[u]! += o.cents[i]! / 100;
      if (addon) Y[s].attachRate[u] = 1;
    }
  }
}
const genMs = performance.now() - t0;
log(`outcomes from ${experimentOrders} experiment orders; ${(genMs / 1000).toFixed(1)} s so far`);

// 4. A/A splits: sums per variant as serving keeps them, then analyze().
const VARIANTS = [
  { name: 'control', weight: 50 },
  { name: 'treatment', weight: 50 },
];
const inControl: Uint8Array[] = [];
for (let k = 0; k < SPLITS; k++) {
  const salt = `default/cuped-aa-${k}`;
  const a = new Uint8Array(USERS);
  for (let u = 0; u < USERS; u++) a[u] = assignVariant(`u${u}`, salt, VARIANTS) === 'control' ? 1 : 0;
  inControl.push(a);
}

interface Acc {
  n: number;
  sumY: number;
  sumYY: number;
  sumX: number;
  sumXX: number;
  sumXY: number;
  nWithoutCovariate: number;
}
const newAcc = (): Acc => ({ n: 0, sumY: 0, sumYY: 0, sumX: 0, sumXX: 0, sumXY: 0, nWithoutCovariate: 0 });
function add(a: Acc, y: number, x: number | undefined): void {
  a.n++;
  a.sumY += y;
  a.sumYY += y * y;
  if (x === undefined) a.nWithoutCovariate++;
  else {
    a.sumX += x;
    a.sumXX += x * x;
    a.sumXY += x * y;
  }
}

/** varianceReduction of analyze() for the A/A comparison of these two arms. */
function reductionOf(control: MetricSums, treatment: MetricSums, binary: boolean): number {
  const r = analyze({
    variants: [
      { ...VARIANTS[0]!, sums: control },
      { ...VARIANTS[1]!, sums: treatment },
    ],
    alpha: ALPHA,
    minSamplesPerVariant: 1000,
    binary,
  });
  const c = r.comparisons[0];
  if (!c) throw new Error(`no comparison: ${r.reason}`);
  return c.varianceReduction;
}

/** Squared correlation of X (0 without a covariate, as analyze() treats it) and Y over the exposed. */
function corr2(x: Float64Array, y: Float64Array, exposed: (u: number) => boolean): number {
  let n = 0;
  let sx = 0;
  let sy = 0;
  let sxx = 0;
  let syy = 0;
  let sxy = 0;
  for (let u = 0; u < x.length; u++) {
    if (!exposed(u)) continue;
    n++;
    sx += x[u]!;
    sy += y[u]!;
    sxx += x[u]! * x[u]!;
    syy += y[u]! * y[u]!;
    sxy += x[u]! * y[u]!;
  }
  const cxy = sxy - (sx * sy) / n;
  return (cxy * cxy) / ((sxx - (sx * sx) / n) * (syy - (sy * sy) / n));
}

/**
 * R² of Y on (has a covariate, X) over the exposed: the reduction two-strata CUPED (ADR 0011: a
 * θ among users with history, new users on their own mean) would give.
 */
function twoStrataR2(x: Float64Array, y: Float64Array, exposed: (u: number) => boolean): number {
  const s = { n: 0, h: 0, x: 0, y: 0, hh: 0, hx: 0, xx: 0, hy: 0, xy: 0, yy: 0 };
  for (let u = 0; u < x.length; u++) {
    if (!exposed(u)) continue;
    const h = hasX[u]!;
    const xu = x[u]!;
    const yu = y[u]!;
    s.n++;
    s.h += h;
    s.x += xu;
    s.y += yu;
    s.hh += h * h;
    s.hx += h * xu;
    s.xx += xu * xu;
    s.hy += h * yu;
    s.xy += xu * yu;
    s.yy += yu * yu;
  }
  const cov = (ab: number, a: number, b: number) => ab - (a * b) / s.n;
  const [a11, a12, a22] = [cov(s.hh, s.h, s.h), cov(s.hx, s.h, s.x), cov(s.xx, s.x, s.x)];
  const [b1, b2] = [cov(s.hy, s.h, s.y), cov(s.xy, s.x, s.y)];
  const det = a11 * a22 - a12 * a12;
  const explained = (b1 * (a22 * b1 - a12 * b2) + b2 * (a11 * b2 - a12 * b1)) / det;
  return explained / cov(s.yy, s.y, s.y);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const results: Record<string, unknown> = {};
for (const s of SCENARIOS) {
  const exposed = (u: number) => exposedAt[s][u]! < end;
  let nExposed = 0;
  let nWithout = 0;
  let nWithoutChurned = 0;
  for (let u = 0; u < USERS; u++) {
    if (!exposed(u)) continue;
    nExposed++;
    if (hasX[u]) continue;
    nWithout++;
    const churnDay = world.users.churnDay[u]!;
    if (churnDay >= 0 && churnDay <= PRE_DATES) nWithoutChurned++;
  }
  const metrics: Record<string, unknown> = {};
  for (const m of EXPERIMENT_METRICS) {
    const binary = m !== 'orderValue';
    const reductions: number[] = [];
    for (const a of inControl) {
      const arms = [newAcc(), newAcc()];
      for (let u = 0; u < USERS; u++) {
        if (!exposed(u)) continue;
        add(arms[a[u]! ? 0 : 1]!, Y[s][m][u]!, hasX[u] ? X[m][u]! : undefined);
      }
      reductions.push(reductionOf(arms[0]!, arms[1]!, binary));
    }
    // Outcome means for users with and without a covariate (what the covariate can tell apart).
    let yWith = 0;
    let yWithout = 0;
    for (let u = 0; u < USERS; u++) {
      if (!exposed(u)) continue;
      if (hasX[u]) yWith += Y[s][m][u]!;
      else yWithout += Y[s][m][u]!;
    }
    const r = median(reductions);
    // One covariate, θ pooled over an A/A split: the reduction is corr(X, Y)² up to sampling.
    const c2 = corr2(X[m], Y[s][m], exposed);
    if (Math.abs(r - c2) > 0.01) throw new Error(`${s} ${m}: reduction ${r} but corr² ${c2}`);
    // For contrast only (not what serving uses): the 0/1 outcomes saturate while their
    // covariates are a count and a per-drink rate; the chance of the outcome in 14 days at the
    // user's 30-day rates saturates like them. corr² is the reduction a single covariate gives.
    const alt = new Float64Array(USERS);
    for (let u = 0; u < USERS; u++) {
      const orders = (X.conversion[u]! * EXPERIMENT_DAYS) / WINDOW_DAYS;
      alt[u] =
        m === 'conversion'
          ? 1 - Math.exp(-orders)
          : m === 'attachRate'
            ? 1 - Math.pow(1 - Math.min(1, X.attachRate[u]!), orders)
            : X[m][u]!;
    }
    metrics[m] = {
      covariate: { conversion: 'frequency_30d', orderValue: 'monetary_30d', attachRate: 'addon_attach_rate' }[
        m
      ],
      meanY: round((yWith + yWithout) / nExposed),
      meanYWithCovariate: round(yWith / (nExposed - nWithout)),
      meanYWithoutCovariate: nWithout ? round(yWithout / nWithout) : null,
      varianceReduction: round(r),
      varianceReductionRange: [round(Math.min(...reductions)), round(Math.max(...reductions))],
      corrXY2: round(c2),
      sampleSizeSaving: round(r),
      twoStrataR2: round(twoStrataR2(X[m], Y[s][m], exposed)),
      ...(binary
        ? {
            contrast: {
              covariate:
                m === 'conversion'
                  ? '1 − exp(−frequency_30d·14/30)'
                  : '1 − (1 − addon_attach_rate)^(frequency_30d·14/30)',
              corrXY2: round(corr2(alt, Y[s][m], exposed)),
            },
          }
        : {}),
    };
  }
  const base = (metrics.conversion as { meanY: number; varianceReduction: number }).meanY;
  const plain = planSamplesPerVariant(base, 0.03, ALPHA, 0.8);
  results[s] = {
    exposedUsers: nExposed,
    withoutCovariate: nWithout,
    withoutCovariateShare: round(nWithout / nExposed),
    /** Of those, users the generator had stop ordering for good before the start (the rest: low activity). */
    withoutCovariateChurned: nWithoutChurned,
    metrics,
    plannedSamplesPerVariantAt3PctConversionLift: {
      plain,
      cuped: Math.ceil(plain * (1 - (metrics.conversion as { varianceReduction: number }).varianceReduction)),
    },
  };
  log(`${s}: ${JSON.stringify(results[s])}`);
}

// 5. Days to a decision at +3 % relative, with and without CUPED: the staggered population as
// the controller sees it, a look every LOOK_MINUTES; serving adds X at exposure and Y as orders
// arrive. Each run splits the users 50/50 at random (what the hash does) and adds the lift to
// the treatment arm: conversion: non-converters of the treatment convert with probability q at
// a uniform time in their window (q = 3 % of the mean over the non-converters' share); order
// value: every treatment order is worth 3 % more.
const LOOK_MINUTES = Number(arg('look-minutes', '30'));
const DECISION_RUNS = Number(arg('decision-runs', '100'));
const LIFT = Number(arg('decision-lift', '0.03'));
const expOrder = Uint32Array.from(
  Array.from({ length: USERS }, (_, u) => u).filter((u) => exposedAt.staggered[u]! < end),
).sort((a, b) => exposedAt.staggered[a]! - exposedAt.staggered[b]!);
const ordIdx = Uint32Array.from(staggeredOrders.t, (_, i) => i).sort(
  (a, b) => staggeredOrders.t[a]! - staggeredOrders.t[b]!,
);
const ordT = Float64Array.from(ordIdx, (i) => staggeredOrders.t[i]!);
const ordU = Uint32Array.from(ordIdx, (i) => staggeredOrders.u[i]!);
const ordV = Float64Array.from(ordIdx, (i) => staggeredOrders.dollars[i]!);
const baseConversion = (results.staggered as { metrics: { conversion: { meanY: number } } }).metrics
  .conversion.meanY;
const q = (LIFT * baseConversion) / (1 - baseConversion);

interface RunOutcome {
  cuped?: { day: number; winner: string };
  plain?: { day: number; winner: string };
}

function decisionRun(metric: 'conversion' | 'orderValue', run: number): RunOutcome {
  const rng = new Rng(mixSeed(SEED, 3003, run, metric === 'conversion' ? 0 : 1));
  const treat = new Uint8Array(USERS);
  for (let u = 0; u < USERS; u++) treat[u] = rng.next() < 0.5 ? 1 : 0;
  // Extra conversions of the treatment (conversion lift), sorted by time.
  const extra: { t: number; u: number }[] = [];
  if (metric === 'conversion') {
    for (const u of expOrder) {
      if (!treat[u] || Y.staggered.conversion[u]) continue;
      if (rng.next() < q)
        extra.push({ t: exposedAt.staggered[u]! + rng.next() * (end - exposedAt.staggered[u]!), u });
    }
    extra.sort((a, b) => a.t - b.t);
  }
  const arms = [newAcc(), newAcc()];
  const y = new Float64Array(USERS);
  const x = X[metric];
  const outcome = (u: number, after: number) => {
    const before = y[u]!;
    if (after === before) return;
    y[u] = after;
    const a = arms[treat[u]!]!;
    a.sumY += after - before;
    a.sumYY += after * after - before * before;
    if (hasX[u]) a.sumXY += x[u]! * (after - before);
  };
  let ie = 0;
  let io = 0;
  let ix = 0;
  const out: RunOutcome = {};
  for (let look = 1; look * LOOK_MINUTES * 60 <= EXPERIMENT_DAYS * DAY; look++) {
    const at = asOf + look * LOOK_MINUTES * 60;
    for (; ie < expOrder.length && exposedAt.staggered[expOrder[ie]!]! < at; ie++) {
      const u = expOrder[ie]!;
      add(arms[treat[u]!]!, 0, hasX[u] ? x[u]! : undefined);
    }
    for (; io < ordT.length && ordT[io]! < at; io++) {
      const u = ordU[io]!;
      if (metric === 'conversion') outcome(u, 1);
      else outcome(u, y[u]! + ordV[io]! * (treat[u] ? 1 + LIFT : 1));
    }
    for (; ix < extra.length && extra[ix]!.t < at; ix++) outcome(extra[ix]!.u, 1);
    if (arms[0]!.n < 2 || arms[1]!.n < 2) continue;
    const day = (at - asOf) / DAY;
    for (const kind of ['cuped', 'plain'] as const) {
      if (out[kind]) continue;
      const sums = arms.map((a) => (kind === 'cuped' ? { ...a } : { n: a.n, sumY: a.sumY, sumYY: a.sumYY }));
      const r = analyze({
        variants: [
          { ...VARIANTS[0]!, sums: sums[0]! },
          { ...VARIANTS[1]!, sums: sums[1]! },
        ],
        alpha: ALPHA,
        minSamplesPerVariant: 1000, // the controller's defaults (decide.ts buildAnalysisInput)
        binary: metric === 'conversion',
      });
      if (r.decision === 'winner') out[kind] = { day, winner: r.winner! };
    }
    if (out.cuped && out.plain) break;
  }
  return out;
}

const quantile = (xs: number[], p: number) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
const decisions: Record<string, unknown> = {};
for (const metric of ['conversion', 'orderValue'] as const) {
  const outs = Array.from({ length: DECISION_RUNS }, (_, r) => decisionRun(metric, r));
  const summary = (kind: 'cuped' | 'plain') => {
    // Undecided runs count as 14+ days, so the median is over every run.
    const days = outs.map((o) => (o[kind] ? o[kind].day : Infinity));
    const decided = outs.filter((o) => o[kind]);
    return {
      decidedIn14Days: round(decided.length / outs.length, 3),
      correctWinner: decided.length
        ? round(decided.filter((o) => o[kind]!.winner === 'treatment').length / decided.length, 3)
        : null,
      medianDays: quantile(days, 0.5) === Infinity ? '> 14' : round(quantile(days, 0.5)!, 3),
      p90Days: quantile(days, 0.9) === Infinity ? '> 14' : round(quantile(days, 0.9)!, 3),
    };
  };
  decisions[metric] = { runs: DECISION_RUNS, cuped: summary('cuped'), plain: summary('plain') };
  log(`decision ${metric}: ${JSON.stringify(decisions[metric])}`);
}

// 6. Sanity check on a SYNTHETIC population with corr(X, Y)² = 0.81.
const synRng = new Rng(mixSeed(SEED, 2002));
const SYN_USERS = 200_000;
const synArms = [newAcc(), newAcc()];
const noiseSd = Math.sqrt(0.25 * 9 * (1 / 0.81 - 1));
for (let u = 0; u < SYN_USERS; u++) {
  const x = 10 + 3 * synRng.normal();
  const y = 2 + 0.5 * x + noiseSd * synRng.normal();
  add(synArms[inControl[0]![u % USERS]! ? 0 : 1]!, y, x);
}
const synthetic = {
  label: 'SYNTHETIC population, not the chain: checks the CUPED path recovers corr(X, Y)²',
  users: SYN_USERS,
  model: 'X ~ N(10, 3²); Y = 2 + 0.5·X + ε, ε ~ N(0, 0.528); every user has X',
  expectedReduction: 0.81,
  varianceReduction: round(reductionOf(synArms[0]!, synArms[1]!, false)),
};
log(`synthetic: ${JSON.stringify(synthetic)}`);
if (Math.abs(synthetic.varianceReduction - synthetic.expectedReduction) > 0.01)
  throw new Error(`synthetic check failed: reduction ${synthetic.varianceReduction}, expected 0.81`);

const result = {
  bench: 'experiments-cuped',
  command: `npm run bench:experiments:cuped -- --users ${USERS} --start ${START} --seed ${SEED} --splits ${SPLITS}`,
  assumptions: {
    users: USERS,
    stores: STORES,
    ordersPerUserPerDay: 0.4,
    seed: SEED,
    experimentStart: START,
    experimentDays: EXPERIMENT_DAYS,
    generatedLocalDates: [dates[0], dates[dates.length - 1]],
    covariates:
      'batch feature job snapshot as of 00:00 UTC of the start over its default 30-day window (computeSnapshot, computeUserFeatures), read as serving does (covariatesOf on the float32 vector); no features (no order in the window) = no covariate (nWithoutCovariate), X = 0 in analyze()',
    newUsers:
      'the generator has no sign-ups: users without a covariate are those with no order in the 30 days (low activity or churned)',
    outcomes:
      'per exposed user over the 14 days from exposure: conversion (any order), orderValue (dollars), attachRate (an order with an add-on), as serving counts them',
    exposure: {
      start: 'every generated user exposed at 00:00 UTC of the start',
      staggered: `${ACTIVE_SHARE * 100} % of users exposed, after an exponential with a ${MEAN_FIRST_DAY}-day mean (bench:experiments), independent of activity`,
    },
    split: `A/A 50/50 by assignVariant(u<index>, default/cuped-aa-<k>), ${SPLITS} salts; varianceReduction is analyze()'s, median and range over the salts`,
    sampled: false,
  },
  preWindowOrders: snapshot.agg.orders30.reduce((a, b) => a + b, 0),
  experimentOrders,
  ...results,
  daysToDecisionAt3PctLift: {
    assumptions: `staggered exposure, a look every ${LOOK_MINUTES} min over 14 days, analyze() with the controller's defaults (alpha 0.05, minSamplesPerVariant 1000, planned 10,000); random 50/50 split per run; conversion: treatment non-converters convert with q = ${round(q)}; order value: treatment orders x1.03; cuped = the sums serving exports, plain = the same without the X sums`,
    ...decisions,
  },
  synthetic,
  seconds: round((performance.now() - t0) / 1000, 1),
};
await writeFile(
  arg('out', join(root, 'bench', 'results', 'experiments-cuped.json')),
  JSON.stringify(result, null, 2) + '\n',
);
console.log(JSON.stringify(result));
