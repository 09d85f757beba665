/**
 * bench/experiments: the Experiment statistics (operator/src/controllers/experiment/stats.ts)
 * under continuous monitoring, simulated with sufficient statistics.
 *
 *   npm run bench:experiments -- [--runs 2000] [--look-minutes 10] [--share 0.1] [--seed 1]
 *
 * Traffic (assumptions, the chain: 5M app users, 2M orders a day): 80 % of the app users
 * open the app within a two-week window, each on a first day drawn from an exponential with a
 * 3-day mean, so the users new to an experiment on day t are 4M · (e^{-(t-1)/3} − e^{-t/3}) ·
 * share (1.13M · share on day 1, 0.16M · share on day 7, 4M · share in 14 days). An experiment
 * sees `--share` of them (default 10 %: a model serving one region of ten, or a tenth of the
 * traffic); a user counts once, at their first exposure, with one outcome (conversion 0/1).
 *
 * Each look (every `--look-minutes`: 10, the operator's default resync of a primary object) adds the new users of
 * that interval, split over the variants by a binomial draw, and their conversions by a binomial
 * (normal approximation above 40 trials) draw, then calls analyze() on the running sums, exactly
 * as the controller does. No per-user loop.
 *
 * Scenarios: A/A (false positives; sequential SRM false alarms; and what a fixed-horizon z-test
 * and a chi-square SRM checked at every look would do), A/B at +3 % relative on a 25 % base up to
 * the planned sample size (power, correct winner, days to decision), SRM with a skewed split up
 * to 100k exposures, and A/B/n with 4 equal variants (family-wise false positives).
 *
 * Prints a JSON summary as its last line and writes it to bench/results/experiments.json.
 */
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync, fork } from 'node:child_process';
import {
  analyze,
  planSamplesPerVariant,
  SRM_ALPHA,
} from '../../operator/src/controllers/experiment/stats.js';
import type { VariantInput } from '../../operator/src/controllers/experiment/stats-api.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const RUNS = Number(arg('--runs', '2000'));
const SRM_RUNS = Number(arg('--srm-runs', '1000'));
const LOOK_MINUTES = Number(arg('--look-minutes', '10'));
const SHARE = Number(arg('--share', '0.1'));
const SEED = Number(arg('--seed', '1'));
const DAYS = 14;
const ALPHA = 0.05;
const BASE = 0.25;
const LIFT = 0.03;
const POWER = 0.8;
const APP_USERS = 5_000_000;
const ACTIVE_SHARE = 0.8;
const MEAN_FIRST_DAY = 3;
const MIN_SAMPLES = 1000;
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const log = (line: string) => console.error(`bench:experiments ${line}`);

// --- random numbers (xoshiro128**, seeded by splitmix32) -----------------------------------------
class Rng {
  private s = new Uint32Array(4);
  private spare: number | null = null;
  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  uniform(): number {
    const s = this.s;
    const r = Math.imul(((Math.imul(s[1]!, 5) << 7) | (Math.imul(s[1]!, 5) >>> 25)) >>> 0, 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = ((s[3]! << 11) | (s[3]! >>> 21)) >>> 0;
    return (r + 0.5) / 4294967296;
  }
  normal(): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return z;
    }
    const u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  binomial(n: number, p: number): number {
    if (n <= 0 || p <= 0) return 0;
    if (p >= 1) return n;
    if (n < 40) {
      let k = 0;
      for (let i = 0; i < n; i++) if (this.uniform() < p) k++;
      return k;
    }
    const k = Math.round(n * p + Math.sqrt(n * p * (1 - p)) * this.normal());
    return Math.min(n, Math.max(0, k));
  }
  poisson(mean: number): number {
    if (mean < 30) {
      const l = Math.exp(-mean);
      let k = 0;
      let p = this.uniform();
      while (p > l) {
        k++;
        p *= this.uniform();
      }
      return k;
    }
    return Math.max(0, Math.round(mean + Math.sqrt(mean) * this.normal()));
  }
}

// --- traffic ---------------------------------------------------------------------------------
const LOOKS = Math.round((DAYS * 24 * 60) / LOOK_MINUTES);
/** Expected new users entering the experiment in each look interval. */
const ARRIVALS: number[] = Array.from({ length: LOOKS }, (_, i) => {
  const t0 = (i * LOOK_MINUTES) / 1440;
  const t1 = ((i + 1) * LOOK_MINUTES) / 1440;
  return APP_USERS * ACTIVE_SHARE * SHARE * (Math.exp(-t0 / MEAN_FIRST_DAY) - Math.exp(-t1 / MEAN_FIRST_DAY));
});
const day = (look: number) => ((look + 1) * LOOK_MINUTES) / 1440;

interface Arm {
  readonly name: string;
  readonly weight: number;
  /** True share of new users (differs from weight/100 under an SRM). */
  readonly share: number;
  readonly rate: number;
  n: number;
  conv: number;
}

/** Adds one look's users: multinomial split by true shares, binomial conversions. */
function step(rng: Rng, arms: Arm[], arrivals: number): void {
  let left = rng.poisson(arrivals);
  let shareLeft = 1;
  arms.forEach((a, i) => {
    const x = i === arms.length - 1 ? left : rng.binomial(left, a.share / shareLeft);
    left -= x;
    shareLeft -= a.share;
    a.n += x;
    a.conv += rng.binomial(x, a.rate);
  });
}

const variantsOf = (arms: Arm[]): VariantInput[] =>
  arms.map((a) => ({ name: a.name, weight: a.weight, sums: { n: a.n, sumY: a.conv, sumYY: a.conv } }));

/** |z| of the plain two-proportion test (what a fixed-horizon dashboard would show). */
function naiveZ(a: Arm, b: Arm): number {
  if (a.n < 2 || b.n < 2) return 0;
  const pa = a.conv / a.n;
  const pb = b.conv / b.n;
  const v = (pa * (1 - pa)) / a.n + (pb * (1 - pb)) / b.n;
  return v > 0 ? Math.abs(pb - pa) / Math.sqrt(v) : 0;
}

const PLANNED = planSamplesPerVariant(BASE, LIFT, ALPHA, POWER);
const median = (xs: number[]) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
};
const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const round = (x: number, d = 4) => Number(x.toFixed(d));

function makeArms(count: number, rates: number[], shares?: number[]): Arm[] {
  const w = 100 / count;
  return rates.map((rate, i) => ({
    name: i === 0 ? 'control' : `v${i + 1}`,
    weight: w,
    share: shares?.[i] ?? 1 / count,
    rate,
    n: 0,
    conv: 0,
  }));
}

// --- scenarios -----------------------------------------------------------------------------------
let analyses = 0;

/** A/A or A/B/n with equal rates over 14 days: any winner, any significant comparison, SRM alarms. */
function nullRuns(variantCount: number, seed: number) {
  const rng = new Rng(seed);
  let winners = 0;
  let anySignificant = 0;
  let srmAlarms = 0;
  let chiSquareEveryLookAlarms = 0;
  let naivePeekingFp = 0;
  let naiveFinalFp = 0;
  let exposures = 0;
  for (let r = 0; r < RUNS; r++) {
    const arms = makeArms(variantCount, new Array<number>(variantCount).fill(BASE));
    let won = false;
    let sig = false;
    let srm = false;
    let chi = false;
    let peek = false;
    for (let look = 0; look < LOOKS; look++) {
      step(rng, arms, ARRIVALS[look]!);
      const a = analyze({
        variants: variantsOf(arms),
        alpha: ALPHA,
        minSamplesPerVariant: MIN_SAMPLES,
        binary: true,
        plannedSamplesPerVariant: PLANNED,
      });
      analyses++;
      if (a.srm.mismatch) srm = true;
      if ((a.srm.chiSquarePValue ?? 1) < SRM_ALPHA) chi = true;
      if (a.comparisons.some((c) => c.significant)) sig = true;
      if (variantCount === 2 && arms[0]!.n >= MIN_SAMPLES && naiveZ(arms[0]!, arms[1]!) > 1.959964)
        peek = true;
      if (a.decision === 'winner') {
        won = true;
        break;
      }
    }
    if (won) winners++;
    if (sig) anySignificant++;
    if (srm) srmAlarms++;
    if (chi) chiSquareEveryLookAlarms++;
    if (peek) naivePeekingFp++;
    if (variantCount === 2 && naiveZ(arms[0]!, arms[1]!) > 1.959964) naiveFinalFp++;
    exposures += arms.reduce((s, x) => s + x.n, 0);
  }
  return {
    runs: RUNS,
    meanExposuresPerExperiment: Math.round(exposures / RUNS),
    winnerDeclaredRate: round(winners / RUNS),
    anySignificantComparisonRate: round(anySignificant / RUNS),
    srmFalseAlarmRate: round(srmAlarms / RUNS),
    chiSquareSrmEveryLookFalseAlarmRate: round(chiSquareEveryLookAlarms / RUNS),
    ...(variantCount === 2
      ? {
          fixedHorizonZPeekingFalsePositiveRate: round(naivePeekingFp / RUNS),
          fixedHorizonZAtDay14FalsePositiveRate: round(naiveFinalFp / RUNS),
        }
      : {}),
  };
}

/** A/B with a true lift, looking until each arm reaches the planned size (or 14 days). */
function powerRuns(seed: number) {
  const rng = new Rng(seed);
  let v2Wins = 0;
  let controlWins = 0;
  const days: number[] = [];
  const liftCovered: boolean[] = [];
  let plannedReachedDays = 0;
  for (let r = 0; r < RUNS; r++) {
    const arms = makeArms(2, [BASE, BASE * (1 + LIFT)]);
    for (let look = 0; look < LOOKS; look++) {
      step(rng, arms, ARRIVALS[look]!);
      const a = analyze({
        variants: variantsOf(arms),
        alpha: ALPHA,
        minSamplesPerVariant: MIN_SAMPLES,
        binary: true,
        plannedSamplesPerVariant: PLANNED,
      });
      analyses++;
      if (a.decision === 'winner') {
        if (a.winner === 'v2') v2Wins++;
        else controlWins++;
        days.push(day(look));
        const c = a.comparisons[0]!;
        liftCovered.push(c.liftInterval[0] <= LIFT && LIFT <= c.liftInterval[1]);
        break;
      }
      if (Math.min(arms[0]!.n, arms[1]!.n) >= PLANNED) {
        plannedReachedDays += day(look);
        break;
      }
    }
  }
  const decided = v2Wins + controlWins;
  return {
    runs: RUNS,
    plannedSamplesPerVariant: PLANNED,
    power: round(v2Wins / RUNS),
    correctWinnerShareOfDecisions: decided ? round(v2Wins / decided) : null,
    wrongWinner: controlWins,
    medianDaysToDecision: median(days) === null ? null : round(median(days)!, 2),
    p90DaysToDecision: quantile(days, 0.9) === null ? null : round(quantile(days, 0.9)!, 2),
    daysToPlannedSize: RUNS - decided ? round(plannedReachedDays / (RUNS - decided), 2) : null,
    intervalCoversTrueLiftAtDecision: round(
      liftCovered.filter(Boolean).length / Math.max(1, liftCovered.length),
    ),
  };
}

/** A skewed split (the treatment loses `skew` of its users) looked at until 100k exposures. */
function srmRuns(skew: number, seed: number, upTo = 100_000) {
  const rng = new Rng(seed);
  const treat = (0.5 * (1 - skew)) / (1 - 0.5 * skew);
  let detected = 0;
  let chiEveryLook = 0;
  let chiOnceAtEnd = 0;
  for (let r = 0; r < SRM_RUNS; r++) {
    const arms = makeArms(2, [BASE, BASE], [1 - treat, treat]);
    let det = false;
    let chi = false;
    let last = 1;
    for (let look = 0; look < LOOKS; look++) {
      step(rng, arms, ARRIVALS[look]!);
      const total = arms[0]!.n + arms[1]!.n;
      const a = analyze({
        variants: variantsOf(arms),
        alpha: ALPHA,
        minSamplesPerVariant: MIN_SAMPLES,
        binary: true,
        plannedSamplesPerVariant: PLANNED,
      });
      analyses++;
      if (a.srm.mismatch) det = true;
      last = a.srm.chiSquarePValue ?? 1;
      if (last < SRM_ALPHA) chi = true;
      if (total >= upTo) break;
    }
    if (det) detected++;
    if (chi) chiEveryLook++;
    if (last < SRM_ALPHA) chiOnceAtEnd++;
  }
  return {
    skew: `${skew * 100} % of the treatment's exposures lost (split ${round(100 * (1 - treat), 2)}/${round(100 * treat, 2)})`,
    runs: SRM_RUNS,
    exposures: upTo,
    detectionRate: round(detected / SRM_RUNS),
    chiSquareEveryLookDetectionRate: round(chiEveryLook / SRM_RUNS),
    chiSquareOnceAtEndDetectionRate: round(chiOnceAtEnd / SRM_RUNS),
  };
}

type Task = 'aa' | 'ab' | 'srm' | 'abn';
function runTask(task: Task): unknown {
  if (task === 'aa') return nullRuns(2, SEED);
  if (task === 'ab') return powerRuns(SEED + 1);
  if (task === 'srm') return [0.01, 0.02, 0.05].map((s, i) => srmRuns(s, SEED + 10 + i));
  return nullRuns(4, SEED + 2);
}

const WORKER_TASKS = process.env['BENCH_EXPERIMENTS_TASKS'];
if (WORKER_TASKS) {
  const tasks = WORKER_TASKS.split(',') as Task[];
  const out: Record<string, unknown> = {};
  for (const t of tasks) {
    const t1 = Date.now();
    out[t] = runTask(t);
    log(`${t} done in ${((Date.now() - t1) / 1000).toFixed(0)} s: ${JSON.stringify(out[t])}`);
  }
  process.send!({ out, analyses }, () => process.exit(0));
  await new Promise(() => {});
}

const t0 = Date.now();
log(
  `planned ${PLANNED} per variant; ${LOOKS} looks (every ${LOOK_MINUTES} min); ${Math.round(ARRIVALS.reduce((s, x) => s + x, 0))} users enter an experiment in ${DAYS} days at share ${SHARE}; 2 processes`,
);
// Two processes (the machine has 2 cores): the two 14-day null scenarios are the heavy ones.
const parts = await Promise.all(
  [
    ['aa', 'ab'],
    ['abn', 'srm'],
  ].map(
    (tasks) =>
      new Promise<{ out: Record<string, unknown>; analyses: number }>((resolve, reject) => {
        const w = fork(fileURLToPath(import.meta.url), process.argv.slice(2), {
          env: { ...process.env, BENCH_EXPERIMENTS_TASKS: tasks.join(',') },
        });
        w.once('message', resolve);
        w.once('error', reject);
        w.once(
          'exit',
          (code) => code !== 0 && reject(new Error(`bench process ${tasks.join('+')} exited ${code}`)),
        );
      }),
  ),
);
const results = Object.assign({}, ...parts.map((p) => p.out)) as Record<Task, unknown>;
analyses = parts.reduce((s, p) => s + p.analyses, 0);
const { aa, ab, srm, abn } = results;
const seconds = (Date.now() - t0) / 1000;

let gitCommit = 'unknown';
try {
  gitCommit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
} catch {
  /* not a checkout */
}
const result = {
  bench: 'experiments',
  at: new Date().toISOString(),
  gitCommit,
  assumptions: {
    appUsers: APP_USERS,
    ordersPerDay: 2_000_000,
    activeShareIn14Days: ACTIVE_SHARE,
    meanDaysToFirstExposure: MEAN_FIRST_DAY,
    experimentShare: SHARE,
    usersEnteringDay1: Math.round(ARRIVALS.slice(0, 1440 / LOOK_MINUTES).reduce((s, x) => s + x, 0)),
    usersEnteringIn14Days: Math.round(ARRIVALS.reduce((s, x) => s + x, 0)),
    lookEveryMinutes: LOOK_MINUTES,
    looks: LOOKS,
    alpha: ALPHA,
    minSamplesPerVariant: MIN_SAMPLES,
    baseRate: BASE,
    relativeLift: LIFT,
    seed: SEED,
  },
  goals: {
    aaFalsePositiveRate: '≤ 0.05',
    abPower: '≥ 0.80',
    correctWinner: '≥ 0.90',
    abnFamilyWiseFalsePositiveRate: '≤ 0.05',
  },
  aa,
  ab,
  srm,
  abn,
  analyses,
  seconds: round(seconds, 1),
  wallMicrosecondsPerAnalysisPerWorker: round((2 * seconds * 1e6) / analyses, 2),
};
await writeFile(join(root, 'bench', 'results', 'experiments.json'), JSON.stringify(result, null, 2) + '\n');
console.log(JSON.stringify(result));
