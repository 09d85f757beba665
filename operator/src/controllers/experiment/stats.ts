/**
 * The Experiment's statistics (pure): from per-variant sufficient statistics to a decision that
 * stays valid however often the controller looks (ADR 0011).
 *
 * - Comparisons with control: mixture sequential probability ratio test (mSPRT, normal mixture
 *   over the difference of means; Johari et al. 2017, Optimizely's Stats Engine), whose dual is
 *   the normal-mixture confidence sequence (Howard et al. 2021, GrowthBook's variant). Always-valid
 *   p-value 1/Λ; the relative lift interval is the difference's interval at the same boundary
 *   over the control mean.
 * - Several comparisons: Holm's step-down over the always-valid p-values.
 * - CUPED: one θ pooled over the variants; a user without pre-experiment data has X = 0 (no prior
 *   orders), so their outcome enters unadjusted.
 * - Sample ratio mismatch: sequential Dirichlet-multinomial test (Lindon & Malek 2022) at
 *   p < 0.001; a variant with weight > 0 and no exposures counts, one with weight 0 and exposures
 *   is a mismatch.
 */
import type { Analysis, AnalysisInput, Comparison, MetricSums, VariantInput } from './stats-api.js';

/** SRM p-value below which the split is declared broken. */
export const SRM_ALPHA = 0.001;
/** Conversions each variant of a binary metric needs before a decision (Optimizely's 25). */
export const MIN_CONVERSIONS = 25;
/** plannedSamplesPerVariant when the input has none: this many times minSamplesPerVariant. */
export const DEFAULT_PLANNED_FACTOR = 10;

/** Input the statistics cannot use; `field` is its path, e.g. `variants[1].sums.sumY`. */
export class StatsInputError extends Error {
  override readonly name = 'StatsInputError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Special functions

const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0 (Lanczos, g = 7; relative error ~1e-15). */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const z = x - 1;
  let a = LANCZOS[0]!;
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i]! / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularized upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above). */
export function upperGammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  if (!Number.isFinite(x)) return 0;
  const lnPre = a * Math.log(x) - x - logGamma(a);
  if (x < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 10_000; n++) {
      term *= x / (a + n);
      sum += term;
      if (Math.abs(term) < Math.abs(sum) * 1e-16) break;
    }
    return Math.max(0, 1 - sum * Math.exp(lnPre));
  }
  // Lentz's continued fraction for Q.
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10_000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.min(1, Math.exp(lnPre) * h);
}

/** P(χ²_df ≥ x). */
export function chiSquareSurvival(x: number, df: number): number {
  return upperGammaQ(df / 2, x / 2);
}

/** Standard normal quantile (Acklam's rational approximation refined by one Halley step). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile(${p}): p must be in (0, 1)`);
  const a = [
    -39.69683028665376, 220.9460984245205, -275.928510446969, 138.357751867269, -30.66479806614716,
    2.506628277459239,
  ];
  const b = [
    -54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572,
  ];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  let x: number;
  if (p < lo || p > 1 - lo) {
    const q = Math.sqrt(-2 * Math.log(p < lo ? p : 1 - p));
    x =
      (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) /
      ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
    if (p > 1 - lo) x = -x;
  } else {
    const q = p - 0.5;
    const r = q * q;
    x =
      ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) /
      (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
  }
  const e = 0.5 * erfc(-x / Math.SQRT2) - p;
  const u = e * Math.sqrt(2 * Math.PI) * Math.exp((x * x) / 2);
  return x - u / (1 + (x * u) / 2);
}

/** Complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7). */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + z / 2);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 +
                            t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

// ---------------------------------------------------------------------------------------------
// Normal-mixture sequential test

/**
 * The mixture constant c(α) = −2 ln α + ln(1 − 2 ln α): with mixture variance τ² = c · V(N*),
 * the confidence sequence is narrowest when the estimate's variance is V(N*) (Howard et al.,
 * eq. 14; GrowthBook's ρ). 7.93 at α = 0.05.
 */
export function mixtureConstant(alpha: number): number {
  const l = -2 * Math.log(alpha);
  return l + Math.log(1 + l);
}

/**
 * ln Λ of the normal-mixture SPRT of H0: δ = 0 for an estimate `diff` ~ N(δ, variance), mixing
 * δ ~ N(0, tau2): Λ = √(V/(V+τ²)) · exp(τ² d² / (2 V (V+τ²))). Rejecting when Λ ≥ 1/α is valid
 * at every look (Ville's inequality on the mixture martingale).
 */
export function mixtureLogLikelihoodRatio(diff: number, variance: number, tau2: number): number {
  return (
    0.5 * Math.log(variance / (variance + tau2)) + (tau2 * diff * diff) / (2 * variance * (variance + tau2))
  );
}

/** Half-width of the always-valid interval at `level`: the δ0 for which Λ(d − δ0) = 1/level. */
export function mixtureHalfWidth(variance: number, tau2: number, level: number): number {
  return Math.sqrt(
    ((variance * (variance + tau2)) / tau2) *
      (2 * Math.log(1 / level) + Math.log((variance + tau2) / variance)),
  );
}

/**
 * Exposures per variant an A/B test of a binary metric needs for `power` at relative lift
 * `relLift` over `baseRate`, when the mixture is tuned at that same size (then the boundary in
 * z units is √((1 + 1/c)(ln(1 + c) + 2 ln(1/α))), 3.03 at α = 0.05, instead of 1.96). Counts the
 * last look only, so looks before it only add power.
 */
export function planSamplesPerVariant(
  baseRate: number,
  relLift: number,
  alpha: number,
  power: number,
): number {
  const c = mixtureConstant(alpha);
  const boundary = Math.sqrt((1 + 1 / c) * (Math.log(1 + c) + 2 * Math.log(1 / alpha)));
  const p2 = baseRate * (1 + relLift);
  const delta = p2 - baseRate;
  const z = boundary + normalQuantile(power);
  return Math.ceil((z * z * (baseRate * (1 - baseRate) + p2 * (1 - p2))) / (delta * delta));
}

// ---------------------------------------------------------------------------------------------
// Sample ratio mismatch

/** Chi-square goodness of fit of `counts` to the shares `probs` (a zero share with counts → p 0). */
export function chiSquareSrm(counts: readonly number[], probs: readonly number[]): number {
  const n = counts.reduce((s, x) => s + x, 0);
  if (n === 0) return 1;
  let stat = 0;
  let df = -1;
  for (let i = 0; i < counts.length; i++) {
    if (probs[i]! === 0) {
      if (counts[i]! > 0) return 0;
      continue;
    }
    const e = n * probs[i]!;
    stat += ((counts[i]! - e) * (counts[i]! - e)) / e;
    df++;
  }
  return df < 1 ? 1 : chiSquareSurvival(stat, df);
}

/**
 * ln of the Bayes factor of a Dirichlet(concentration · probs) mixture against the planned
 * multinomial (Lindon & Malek 2022): a nonnegative martingale under a correct split, so 1/BF
 * is an always-valid p-value. Variants with share 0 are left out (exposures there → +∞).
 */
export function sequentialSrmLogBayesFactor(
  counts: readonly number[],
  probs: readonly number[],
  concentration: number,
): number {
  let n = 0;
  let out = 0;
  for (let i = 0; i < counts.length; i++) {
    const x = counts[i]!;
    const p = probs[i]!;
    if (p === 0) {
      if (x > 0) return Infinity;
      continue;
    }
    const a = concentration * p;
    n += x;
    out += logGamma(a + x) - logGamma(a) - x * Math.log(p);
  }
  return out + logGamma(concentration) - logGamma(concentration + n);
}

/** The SRM Dirichlet's concentration: the mixture tuned at the planned total exposures. */
export function srmConcentration(plannedTotal: number): number {
  return Math.max(1, plannedTotal / mixtureConstant(SRM_ALPHA) - 1);
}

// ---------------------------------------------------------------------------------------------
// Holm

/** Holm's step-down adjusted p-values, in the input's order. */
export function holmAdjust(pValues: readonly number[]): number[] {
  const k = pValues.length;
  const order = pValues.map((p, i) => ({ p, i })).sort((a, b) => a.p - b.p);
  const out = new Array<number>(k);
  let running = 0;
  order.forEach(({ p, i }, rank) => {
    running = Math.max(running, Math.min(1, (k - rank) * p));
    out[i] = running;
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Per-variant estimates

/** Mean and variance of the mean of one variant, plain and after CUPED. */
interface ArmEstimate {
  readonly n: number;
  readonly mean: number;
  /** Var(Ȳ), the plain estimate. */
  readonly varMean: number;
  /** Per-user variance (plain), for the mixture's scale. */
  readonly varUnit: number;
  readonly cuped?: { readonly mean: number; readonly varMean: number; readonly varUnit: number };
}

/** CUPED's pooled θ and the pooled covariate mean, or null when it cannot apply. */
export interface CupedFit {
  readonly theta: number;
  readonly meanX: number;
}

/** Centered sums of one variant: S_YY, S_WY, S_WW with W = X (0 for users without one). */
function centered(s: MetricSums): { syy: number; swy: number; sww: number } {
  const syy = Math.max(0, s.sumYY - (s.sumY * s.sumY) / s.n);
  if (s.sumX === undefined || s.sumXX === undefined || s.sumXY === undefined) return { syy, swy: 0, sww: 0 };
  return {
    syy,
    swy: s.sumXY - (s.sumX * s.sumY) / s.n,
    sww: Math.max(0, s.sumXX - (s.sumX * s.sumX) / s.n),
  };
}

/**
 * θ = Σ S_WY / Σ S_WW over the variants (within-variant, so a treatment effect on Y does not
 * leak into θ), when every variant carries covariate sums and some user has one.
 */
export function fitCuped(sums: readonly MetricSums[]): CupedFit | null {
  let swy = 0;
  let sww = 0;
  let sumX = 0;
  let n = 0;
  for (const s of sums) {
    if (s.n < 2 || s.sumX === undefined || s.sumXX === undefined || s.sumXY === undefined) return null;
    if (s.n - (s.nWithoutCovariate ?? 0) <= 0) continue;
    const c = centered(s);
    swy += c.swy;
    sww += c.sww;
    sumX += s.sumX;
    n += s.n;
  }
  if (!(sww > 0) || n === 0) return null;
  return { theta: swy / sww, meanX: sumX / n };
}

function estimateArm(s: MetricSums, fit: CupedFit | null): ArmEstimate {
  const mean = s.sumY / s.n;
  const c = centered(s);
  const varUnit = c.syy / (s.n - 1);
  const base = { n: s.n, mean, varMean: varUnit / s.n, varUnit };
  if (!fit || s.sumX === undefined) return base;
  const { theta, meanX } = fit;
  const cupedUnit = Math.max(0, (c.syy - 2 * theta * c.swy + theta * theta * c.sww) / (s.n - 1));
  return {
    ...base,
    cuped: { mean: mean - theta * (s.sumX / s.n - meanX), varMean: cupedUnit / s.n, varUnit: cupedUnit },
  };
}

// ---------------------------------------------------------------------------------------------
// Comparisons

/** One comparison before Holm: enough to fill a Comparison once the levels are known. */
interface RawComparison {
  readonly variant: string;
  readonly diff: number;
  readonly varDiff: number;
  readonly tau2: number;
  readonly lift: number;
  readonly varLift: number;
  readonly tau2Lift: number;
  readonly logLR: number;
  readonly pValue: number;
  readonly varianceReduction: number;
}

function compare(
  name: string,
  ctl: ArmEstimate,
  v: ArmEstimate,
  planned: number,
  alpha: number,
): RawComparison | null {
  // CUPED is used only when it helps this comparison; it can lose a little when θ, pooled over
  // every variant, fits this pair badly.
  const plainVar = ctl.varMean + v.varMean;
  const useCuped = ctl.cuped && v.cuped && ctl.cuped.varMean + v.cuped.varMean < plainVar;
  const a = useCuped ? ctl.cuped! : ctl;
  const b = useCuped ? v.cuped! : v;
  const varDiff = a.varMean + b.varMean;
  if (!(varDiff > 0) || !(a.mean > 0)) return null;
  const diff = b.mean - a.mean;
  // τ²: c(α) times the variance the difference will have at the planned size per variant.
  const tau2 = mixtureConstant(alpha) * ((a.varUnit + b.varUnit) / planned);
  const logLR = mixtureLogLikelihoodRatio(diff, varDiff, tau2);
  // Relative lift b/a − 1, and its interval: the difference's confidence sequence divided by
  // the control mean (δ/μ_control; the mixture scales with it). The control mean is taken as
  // known here, as the test on the difference does, so the interval excludes 0 exactly when
  // the test rejects. The delta method's extra term for the control mean's own noise made
  // wide intervals around 0 next to p = 0.026 (a person auditing status sees a contradiction).
  const lift = b.mean / a.mean - 1;
  const varLift = varDiff / (a.mean * a.mean);
  return {
    variant: name,
    diff,
    varDiff,
    tau2,
    lift,
    varLift,
    tau2Lift: tau2 / (a.mean * a.mean),
    logLR,
    pValue: Math.min(1, Math.exp(-logLR)),
    varianceReduction: useCuped ? 1 - varDiff / plainVar : 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Validation

function validate(input: AnalysisInput): void {
  const { variants, alpha, minSamplesPerVariant: min, plannedSamplesPerVariant: planned } = input;
  if (!Array.isArray(variants) || variants.length < 2)
    throw new StatsInputError('variants', 'needs a control and at least one other variant');
  if (!(alpha > 0 && alpha <= 0.5)) throw new StatsInputError('alpha', `${alpha} is not in (0, 0.5]`);
  if (!(Number.isInteger(min) && min >= 1))
    throw new StatsInputError('minSamplesPerVariant', `${min} is not a positive integer`);
  if (planned !== undefined && !(Number.isFinite(planned) && planned >= 1))
    throw new StatsInputError('plannedSamplesPerVariant', `${planned} is not a number ≥ 1`);
  const names = new Set<string>();
  variants.forEach((v, i) => {
    const at = `variants[${i}]`;
    if (names.has(v.name))
      throw new StatsInputError(`${at}.name`, `duplicate variant ${JSON.stringify(v.name)}`);
    names.add(v.name);
    if (!(Number.isFinite(v.weight) && v.weight >= 0))
      throw new StatsInputError(`${at}.weight`, `${v.weight} is not a weight ≥ 0`);
    const s = v.sums;
    if (!(Number.isInteger(s.n) && s.n >= 0))
      throw new StatsInputError(`${at}.sums.n`, `${s.n} is not a count`);
    for (const k of ['sumY', 'sumYY', 'sumX', 'sumXX', 'sumXY'] as const) {
      const x = s[k];
      if (x !== undefined && !Number.isFinite(x))
        throw new StatsInputError(`${at}.sums.${k}`, `${x} is not finite`);
    }
    if (s.sumYY < 0) throw new StatsInputError(`${at}.sums.sumYY`, `${s.sumYY} is negative`);
    if (s.sumXX !== undefined && s.sumXX < 0)
      throw new StatsInputError(`${at}.sums.sumXX`, `${s.sumXX} is negative`);
    const withX = [s.sumX, s.sumXX, s.sumXY].filter((x) => x !== undefined).length;
    if (withX !== 0 && withX !== 3)
      throw new StatsInputError(`${at}.sums.sumX`, 'sumX, sumXX and sumXY come together or not at all');
    if (
      s.nWithoutCovariate !== undefined &&
      !(Number.isInteger(s.nWithoutCovariate) && s.nWithoutCovariate >= 0 && s.nWithoutCovariate <= s.n)
    )
      throw new StatsInputError(
        `${at}.sums.nWithoutCovariate`,
        `${s.nWithoutCovariate} is not a count ≤ n (${s.n})`,
      );
    if (input.binary && !(s.sumY >= 0 && s.sumY <= s.n))
      throw new StatsInputError(`${at}.sums.sumY`, `${s.sumY} conversions is not within 0..n (${s.n})`);
  });
  if (!variants.some((v) => v.weight > 0)) throw new StatsInputError('variants', 'every weight is 0');
}

// ---------------------------------------------------------------------------------------------
// Formatting

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const signedPct = (x: number) => `${x >= 0 ? '+' : ''}${pct(x)}`;
/** 12345 → "12,345" (toLocaleString is slow enough to matter at a look per reconcile). */
const count = (x: number) => String(Math.round(x)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
/** `label=p` with two significant digits, or `label<0.0001`. */
export function formatP(label: string, p: number): string {
  if (p < 0.0001) return `${label}<0.0001`;
  return `${label}=${p >= 0.995 ? '1' : String(Number(p.toPrecision(2)))}`;
}
const describe = (c: Comparison) =>
  `${c.variant} ${signedPct(c.lift)} [${pct(c.liftInterval[0])}, ${pct(c.liftInterval[1])}]`;

// ---------------------------------------------------------------------------------------------
// Decision chain: each check returns a decision or null; the first decision wins.

interface Context {
  readonly input: AnalysisInput;
  readonly control: VariantInput;
  /** Variants with weight > 0 other than control, in spec order. */
  readonly treatments: readonly VariantInput[];
  readonly srm: Analysis['srm'];
  readonly comparisons: readonly Comparison[];
}

type Verdict = Pick<Analysis, 'decision' | 'winner' | 'reason'>;
type Check = (ctx: Context) => Verdict | null;

const srmCheck: Check = ({ input, srm }) =>
  srm.mismatch
    ? {
        decision: 'blocked',
        reason: `sample ratio mismatch: exposures ${input.variants.map((v) => `${v.name} ${count(v.sums.n)}`).join(' / ')} for weights ${input.variants.map((v) => v.weight).join('/')} (${formatP('sequential SRM p', srm.pValue)} < ${SRM_ALPHA}); the split is broken, no decision until it is fixed`,
      }
    : null;

const controlCheck: Check = ({ control }) =>
  control.weight > 0
    ? null
    : { decision: 'blocked', reason: `control ${control.name} has weight 0: nothing to compare with` };

const treatmentCheck: Check = ({ treatments }) =>
  treatments.length > 0
    ? null
    : {
        decision: 'blocked',
        reason: 'no variant other than control has a weight above 0: nothing to compare',
      };

const minSamplesCheck: Check = ({ input, control, treatments }) => {
  const short = [control, ...treatments].filter((v) => v.sums.n < input.minSamplesPerVariant);
  if (short.length === 0) return null;
  const list = short.map((v) => `${v.name} ${count(v.sums.n)}`).join(', ');
  return {
    decision: 'blocked',
    reason: `too few samples: ${list} of ${count(input.minSamplesPerVariant)} exposures needed per variant`,
  };
};

const minConversionsCheck: Check = ({ input, control, treatments }) => {
  if (!input.binary) return null;
  const short = [control, ...treatments].filter((v) => v.sums.sumY < MIN_CONVERSIONS);
  if (short.length === 0) return null;
  const list = short.map((v) => `${v.name} ${count(v.sums.sumY)}`).join(', ');
  return {
    decision: 'blocked',
    reason: `too few conversions: ${list} of ${MIN_CONVERSIONS} needed per variant`,
  };
};

const computableCheck: Check = ({ control, treatments, comparisons }) => {
  const missing = treatments.filter((t) => !comparisons.some((c) => c.variant === t.name));
  if (missing.length === 0) return null;
  return {
    decision: 'blocked',
    reason: `no estimate for ${missing.map((v) => v.name).join(', ')}: zero variance or a control mean of 0 (${control.name})`,
  };
};

function pClause(c: Comparison, k: number, alpha: number, op: '<' | '≥'): string {
  return k > 1
    ? `${formatP('always-valid p', c.pValue)}, ${formatP('Holm-adjusted p', c.adjustedPValue)} ${op} ${alpha} (${k} comparisons)`
    : `${formatP('always-valid p', c.pValue)} ${op} ${alpha}`;
}

const winnerCheck: Check = ({ input, control, comparisons }) => {
  const better = comparisons.filter((c) => c.significant && c.lift > 0).sort((a, b) => b.lift - a.lift);
  const best = better[0];
  if (!best) return null;
  return {
    decision: 'winner',
    winner: best.variant,
    reason: `${best.variant} beats ${control.name}: lift ${signedPct(best.lift)} [${pct(best.liftInterval[0])}, ${pct(best.liftInterval[1])}], ${pClause(best, comparisons.length, input.alpha, '<')}`,
  };
};

const controlWinsCheck: Check = ({ input, control, comparisons }) => {
  if (!comparisons.every((c) => c.significant && c.lift < 0)) return null;
  const k = comparisons.length;
  return {
    decision: 'winner',
    winner: control.name,
    reason: `${control.name} beats every variant: ${comparisons.map((c) => `${describe(c)} ${pClause(c, k, input.alpha, '<')}`).join('; ')}`,
  };
};

const continueCheck: Check = ({ input, comparisons }) => {
  const k = comparisons.length;
  const worse = comparisons.filter((c) => c.significant && c.lift < 0).map((c) => c.variant);
  const open = comparisons
    .filter((c) => !c.significant)
    .map((c) => `${describe(c)} ${pClause(c, k, input.alpha, '≥')}`);
  return {
    decision: 'continue',
    reason: `no winner yet: ${open.join('; ')}${worse.length ? `; significantly worse than control: ${worse.join(', ')}` : ''}`,
  };
};

const CHAIN: readonly Check[] = [
  srmCheck,
  controlCheck,
  treatmentCheck,
  minSamplesCheck,
  minConversionsCheck,
  computableCheck,
  winnerCheck,
  controlWinsCheck,
  continueCheck,
];

// ---------------------------------------------------------------------------------------------

/** Analyzes one look at an experiment: SRM, comparisons with control (Holm), decision and reason. */
export function analyze(input: AnalysisInput): Analysis {
  validate(input);
  const { variants, alpha } = input;
  const control = variants[0]!;
  const treatments = variants.slice(1).filter((v) => v.weight > 0);
  const planned = input.plannedSamplesPerVariant ?? DEFAULT_PLANNED_FACTOR * input.minSamplesPerVariant;

  // 1. Sample ratio: every variant, including those with no exposures (GrowthBook #4427).
  const totalWeight = variants.reduce((s, v) => s + v.weight, 0);
  const probs = variants.map((v) => v.weight / totalWeight);
  const counts = variants.map((v) => v.sums.n);
  const activeCount = variants.filter((v) => v.weight > 0).length;
  const srmP = Math.min(
    1,
    Math.exp(-sequentialSrmLogBayesFactor(counts, probs, srmConcentration(planned * activeCount))),
  );
  const srm = { pValue: srmP, mismatch: srmP < SRM_ALPHA, chiSquarePValue: chiSquareSrm(counts, probs) };

  // 2. Comparisons with control, CUPED θ pooled over control and the active variants.
  const arms = control.weight > 0 ? [control, ...treatments] : [];
  const fit = arms.every((v) => v.sums.n >= 2) ? fitCuped(arms.map((v) => v.sums)) : null;
  const raw: (RawComparison | null)[] = treatments.map((t) =>
    control.sums.n >= 2 && t.sums.n >= 2 && control.weight > 0
      ? compare(t.name, estimateArm(control.sums, fit), estimateArm(t.sums, fit), planned, alpha)
      : null,
  );

  // 3. Holm over every active variant (one without an estimate counts, with p = 1).
  const k = treatments.length;
  const adjusted = holmAdjust(raw.map((r) => r?.pValue ?? 1));
  const rankOf = raw
    .map((r, i) => ({ p: r?.pValue ?? 1, i }))
    .sort((a, b) => a.p - b.p)
    .reduce((m, x, rank) => m.set(x.i, rank), new Map<number, number>());
  const comparisons: Comparison[] = [];
  raw.forEach((r, i) => {
    if (!r) return;
    const significant = adjusted[i]! <= alpha;
    // The interval at the level Holm tested this comparison at (α/(k − rank)); α/k when Holm
    // stopped before it, so an interval excludes 0 exactly when Holm rejects.
    const level = significant ? alpha / (k - rankOf.get(i)!) : alpha / k;
    const h = mixtureHalfWidth(r.varLift, r.tau2Lift, level);
    comparisons.push({
      variant: r.variant,
      lift: r.lift,
      liftInterval: [r.lift - h, r.lift + h],
      statistic: r.logLR,
      pValue: r.pValue,
      adjustedPValue: adjusted[i]!,
      significant,
      varianceReduction: r.varianceReduction,
    });
  });

  const ctx: Context = { input, control, treatments, srm, comparisons };
  for (const check of CHAIN) {
    const verdict = check(ctx);
    if (verdict) return { srm, comparisons, ...verdict };
  }
  throw new Error('unreachable: continueCheck always decides');
}
