/**
 * The one binning of drift histograms and the request context they are conditioned on, shared
 * by training (the baselines in a model's metadata) and serving (the live windows). ADR 0010.
 *
 * - A value is rounded to float32 before it is binned: the model sees float32, training rows are
 *   float32, and serving's context values are float64 (`Math.cos`), so without the rounding a
 *   value on an edge (hour 16's hour_cos, -0.5 in float32, -0.5000000000000004 in float64) lands
 *   in one bin in training and the next one in serving. Edges are float32 values too.
 * - Edge rule: bin i holds [edges[i], edges[i+1]); below the first edge → bin 0, at or above the
 *   last → the last bin, so every value counts.
 * - Discrete features get one bin per value (declared values, so a value training never saw
 *   still has its own bin); continuous ones get quantile bins; features that vary per region
 *   and day rather than per request get support bins (below / within / above the training range).
 */
import { computeClockFeatures } from './features.js';

/** Quantile bins of a continuous feature. */
export const QUANTILE_BINS = 10;
/** A feature with at most this many distinct training values gets one bin per value. */
export const MAX_VALUE_BINS = 16;
/** Support bins widen the training range by this share of its width on each side. */
export const SUPPORT_MARGIN = 0.25;

/** A histogram over fixed bin edges: `edges` has one more entry than `probs`; probs sum to 1. */
export interface BaselineHistogram {
  readonly edges: readonly number[];
  readonly probs: readonly number[];
}

/**
 * How serving compares a monitored feature with its baseline:
 * - `context`: the window against the mixture of per-context baselines weighted by the window's
 *   own contexts (user features, and the clock features, which then match by construction);
 * - `support`: the window against the training range, unconditioned. For features with one
 *   value per region and day (weather), a window of requests holds a handful of independent
 *   values, so a distribution test measures today's weather; only values outside anything
 *   training saw are drift.
 */
export type DriftComparison = 'context' | 'support';

/** Features compared by support; every other monitored feature is compared per context. */
export const SUPPORT_FEATURES: readonly string[] = ['temperature_c', 'is_precipitation'];

/** How serving compares `feature` (see DriftComparison). */
export function driftComparison(feature: string): DriftComparison {
  return SUPPORT_FEATURES.includes(feature) ? 'support' : 'context';
}

const BINARY = [0, 1] as const;
const hourValues = (k: 'hour_sin' | 'hour_cos') =>
  Array.from({ length: 24 }, (_, h) => computeClockFeatures(h, 1)[k]);

/**
 * Values a discrete feature can take. Declared, not learned: a feature that is always 0 in
 * training still gets a bin for 1, so serving can see 1s arrive. Add-on pair features
 * (`drink_is_hot`, `addon_is_hot`) share their item feature's values.
 */
const DECLARED_VALUES: Readonly<Record<string, readonly number[]>> = {
  hour_sin: hourValues('hour_sin'),
  hour_cos: hourValues('hour_cos'),
  is_weekend: BINARY,
  is_precipitation: BINARY,
  channel_app: BINARY,
  channel_web: BINARY,
  channel_kiosk: BINARY,
  recently_ordered: BINARY,
  is_hot: BINARY,
  is_iced: BINARY,
  is_blended: BINARY,
  is_energy: BINARY,
  is_seasonal: BINARY,
};

/** The declared values of a discrete feature (float32, ascending, distinct), if it has any. */
export function declaredValues(feature: string): readonly number[] | undefined {
  const v = DECLARED_VALUES[feature] ?? DECLARED_VALUES[feature.replace(/^(drink|addon)_/, '')];
  return v ? distinct(float32Sorted(v)) : undefined;
}

/** Bin of `value` (rounded to float32) over `edges`; see the edge rule above. */
export function binOf(edges: readonly number[], value: number): number {
  const bins = edges.length - 1;
  if (bins <= 0) return 0;
  const v = Math.fround(value);
  let lo = 0;
  let hi = bins - 1;
  // last bin whose left edge <= v
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (v >= edges[mid]!) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Float32 values of `values`, sorted ascending (NaN and infinities dropped). */
function float32Sorted(values: ArrayLike<number>): Float64Array {
  const out: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const v = Math.fround(values[i]!);
    if (Number.isFinite(v)) out.push(v);
  }
  return Float64Array.from(out).sort();
}

/** The distinct values of an ascending array. */
function distinct(sorted: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < sorted.length; i++)
    if (out.length === 0 || sorted[i]! > out.at(-1)!) out.push(sorted[i]!);
  return out;
}

/** The float32 midway between two float32 values (strictly between them when they differ by more than one step). */
const mid32 = (a: number, b: number) => Math.fround(a + (b - a) / 2);

/** One bin per value: edges [v0, mid(v0,v1), …, mid(vk-1,vk), vk] (k+1 values → k+1 bins). */
export function computeValueEdges(values: readonly number[]): number[] {
  const v = distinct(float32Sorted(values));
  if (v.length === 0) return [0, 1];
  if (v.length === 1) return [v[0]!, Math.fround(v[0]! + 1)];
  const edges = [v[0]!];
  for (let i = 1; i < v.length; i++) edges.push(mid32(v[i - 1]!, v[i]!));
  edges.push(v.at(-1)!);
  return edges;
}

/** Up to `bins` quantile bins of the (float32) values: distinct ascending edges from min to max. */
export function computeQuantileEdges(values: ArrayLike<number>, bins = QUANTILE_BINS): number[] {
  const sorted = float32Sorted(values);
  const n = sorted.length;
  if (n === 0) return [0, 1];
  const edges: number[] = [];
  for (let b = 0; b <= bins; b++) {
    const v = sorted[Math.min(n - 1, Math.floor((b / bins) * n))]!;
    if (edges.length === 0 || v > edges.at(-1)!) edges.push(v);
  }
  if (edges.at(-1)! < sorted[n - 1]!) edges.push(sorted[n - 1]!);
  // A constant feature still gets one bin with a width.
  if (edges.length === 1) edges.push(Math.fround(edges[0]! + 1));
  return edges;
}

/**
 * Three bins: below, within and above the training range of `feature`. The range is widened by
 * SUPPORT_MARGIN of its width on each side (a constant feature: by a quarter of its value, at
 * least 1); a discrete feature's range covers the values training saw, up to half a step.
 */
export function computeSupportEdges(feature: string, values: ArrayLike<number>): number[] {
  const sorted = float32Sorted(values);
  if (sorted.length === 0) return [-2, -1, 1, 2];
  const lo = sorted[0]!;
  const hi = sorted[sorted.length - 1]!;
  const declared = declaredValues(feature);
  let low: number;
  let high: number;
  if (declared && declared.length > 1) {
    let step = Infinity;
    for (let i = 1; i < declared.length; i++) step = Math.min(step, declared[i]! - declared[i - 1]!);
    low = lo - step / 2;
    high = hi + step / 2;
  } else {
    const margin = hi > lo ? SUPPORT_MARGIN * (hi - lo) : Math.max(SUPPORT_MARGIN * Math.abs(lo), 1);
    low = lo - margin;
    high = hi + margin;
  }
  const width = high - low;
  return [low - width, low, high, high + width].map(Math.fround);
}

/** The bin edges of a baseline histogram of `feature` over its training values. */
export function computeBaselineEdges(feature: string, values: ArrayLike<number>): number[] {
  if (driftComparison(feature) === 'support') return computeSupportEdges(feature, values);
  const declared = declaredValues(feature);
  if (declared) return computeValueEdges(declared);
  const sorted = float32Sorted(values);
  const values32 = distinct(sorted);
  if (values32.length >= 2 && values32.length <= MAX_VALUE_BINS) return computeValueEdges(values32);
  return computeQuantileEdges(sorted);
}

/** Counts of `values` per bin of `edges` (non-finite values are not counted). */
export function countBins(edges: readonly number[], values: ArrayLike<number>): number[] {
  const counts = new Array<number>(Math.max(1, edges.length - 1)).fill(0);
  for (let i = 0; i < values.length; i++) {
    if (Number.isFinite(values[i]!)) counts[binOf(edges, values[i]!)]!++;
  }
  return counts;
}

/** Probabilities from counts, rounded to 6 decimals (a uniform histogram when there are none). */
export function countsToProbs(counts: readonly number[]): number[] {
  const n = counts.reduce((a, b) => a + b, 0);
  return counts.map((c) => (n === 0 ? 1 / counts.length : Math.round((c / n) * 1e6) / 1e6));
}

/** The baseline histogram of `feature` over its training values. */
export function computeBaselineHistogram(feature: string, values: ArrayLike<number>): BaselineHistogram {
  const edges = computeBaselineEdges(feature, values);
  return { edges, probs: countsToProbs(countBins(edges, values)) };
}

/**
 * The request context drift baselines are conditioned on (ADR 0010): the store's timezone, the
 * store-local hour and weekend or weekday. The local hour and day type decide who orders (the
 * 06–09 commuters are not the 14–16 crowd); the timezone decides how long ago the nightly
 * 00:00 UTC feature batch ran at that local hour, which shifts features like recency_days.
 */
export const DRIFT_CONTEXT_SCHEME = 'timezone-hour-weekend/1';

/** One drift context. */
export interface DriftContext {
  readonly timezone: string;
  /** Store-local hour, 0..23. */
  readonly hour: number;
  /** 1 on a store-local Saturday or Sunday. */
  readonly weekend: 0 | 1;
}

/** The drift context of a request at a store in `timezone` at local `hour` on `weekday` (0 = Sunday). */
export function computeDriftContext(timezone: string, hour: number, weekday: number): DriftContext {
  return { timezone, hour, weekend: weekday === 0 || weekday === 6 ? 1 : 0 };
}

/** A stable text key of a context (map keys, sorting). */
export function driftContextKey(c: DriftContext): string {
  return `${c.timezone}|${String(c.hour).padStart(2, '0')}|${c.weekend}`;
}
