/**
 * Rolling distributions of the features and scores a ranking model sees in production,
 * compared with the baseline shipped in its metadata. Only features that are the same on every
 * row of a request (user and context features) are monitored; item features are constant per
 * version.
 *
 * Like with like (ADR 0010): each request is tagged with its drift context (store timezone,
 * local hour, weekend), and a feature with per-context training counts is compared with the
 * mixture of its per-context baselines weighted by the window's own contexts,
 * expected[bin] = Σ_c share_c · baseline_c[bin]. A window of the morning rush in the East is
 * thus compared with the East's morning rush in training, not with the whole day. Features
 * without per-context counts (weather, and every feature of models trained before them) are
 * compared with `baseline.features` as a whole.
 */
import {
  binOf,
  computeDriftContext,
  DRIFT_CONTEXT_SCHEME,
  type DriftContext,
} from '../../../contracts/drift-binning.js';
import type { ModelMetadata } from '../../../contracts/model-metadata.js';
import { computePsi, RollingHistogram } from './psi.js';

/**
 * Observations a window needs before its PSI is reported. PSI over a handful of requests is
 * large by chance alone (about bins/n): a canary's first hundred requests read 0.2–0.3 on a
 * healthy model and tripped the drift alert, which rolls a canary back at once.
 */
export const DRIFT_MIN_OBSERVATIONS = 500;

/**
 * Pseudo-requests a context's baseline borrows from its local hour's (the same hour and day
 * type in every timezone), so a context training saw rarely is not compared with a noisy
 * handful of requests. The hour's own distribution is not smoothed further: for the clock
 * features it is exact (every context of one hour has the same hour_sin), and mixing in the
 * whole day would put mass in bins an hour can never reach.
 */
export const CONTEXT_PRIOR_WEIGHT = 20;

/** Contexts one monitor tells apart; more (a flood of unknown timezones) share the last slot. */
const MAX_CONTEXTS = 1024;
const MISSING = 0xffff;

/** A PSI reading. */
export interface DriftReading {
  readonly feature: string;
  /** Undefined until the window holds `minObservations` values. */
  readonly psi: number | undefined;
  readonly observations: number;
  /** Observed share per baseline bin. */
  readonly shares: readonly number[];
  /** The share per bin the baseline expects for this window's contexts. */
  readonly expected: readonly number[];
}

/** Per-context expected distributions of one feature. */
interface ContextBaselines {
  /** Per training context, the smoothed distribution. */
  readonly trained: readonly Float64Array[];
  /** Per local hour and day type (hourKey), the distribution over all timezones. */
  readonly byHour: ReadonlyMap<number, Float64Array>;
  /** The whole training window. */
  readonly all: Float64Array;
}

/** One monitored feature and its share of the rolling window. */
interface Monitored {
  readonly feature: string;
  /** Position in the feature list given to the constructor. */
  readonly position: number;
  readonly edges: readonly number[];
  readonly baseline: Float64Array;
  readonly contexts: ContextBaselines | undefined;
  /** Bin of each window slot, MISSING when the value was not finite. */
  readonly ring: Uint16Array;
  readonly counts: Float64Array;
  /** Observations per context in the window (only for features compared per context). */
  readonly contextCounts: Float64Array | undefined;
  observations: number;
}

const hourKey = (c: { hour: number; weekend: number }) => c.hour * 2 + c.weekend;

export class DriftMonitor {
  private readonly monitored: Monitored[] = [];
  private readonly score: { window: RollingHistogram; baseline: readonly number[] } | undefined;
  /** Contexts by index: training's first, then new ones seen in traffic. */
  private readonly contexts: DriftContext[] = [];
  /** Per timezone, the context index of each hourKey (-1 = not registered yet). */
  private readonly byTimezone = new Map<string, Int32Array>();
  private readonly window: Uint16Array;
  private next = 0;
  private filled = 0;
  /** True when the metadata has per-context baselines this serving understands. */
  readonly perContext: boolean;

  /** `features` are the names observed per request; others in the baseline are ignored. */
  constructor(
    readonly meta: ModelMetadata,
    features: readonly string[],
    readonly windowSize = 5000,
    private readonly minObservations = Math.min(DRIFT_MIN_OBSERVATIONS, windowSize),
  ) {
    this.window = new Uint16Array(windowSize);
    const ctx = meta.baseline.contexts;
    this.perContext = ctx?.scheme === DRIFT_CONTEXT_SCHEME && Array.isArray(ctx.contexts);
    if (this.perContext) for (const c of ctx!.contexts) this.register(c);
    features.forEach((feature, position) => {
      const b = meta.baseline.features[feature];
      if (!b || b.edges.length !== b.probs.length + 1 || b.probs.length === 0) return;
      const table = this.perContext ? ctx!.counts[feature] : undefined;
      const contexts = table ? contextBaselines(table, this.contexts, b.probs.length) : undefined;
      this.monitored.push({
        feature,
        position,
        edges: b.edges,
        baseline: Float64Array.from(b.probs),
        contexts,
        ring: new Uint16Array(windowSize),
        counts: new Float64Array(b.probs.length),
        contextCounts: contexts ? new Float64Array(MAX_CONTEXTS) : undefined,
        observations: 0,
      });
    });
    const s = meta.baseline.score;
    if (s.edges.length === s.probs.length + 1 && s.probs.length > 0) {
      this.score = { window: new RollingHistogram(s.edges, windowSize * 20), baseline: s.probs };
    }
  }

  /** The context index of a request at a store in `timezone` at local `hour` on `weekday` (0 = Sunday). */
  contextOf(timezone: string, hour: number, weekday: number): number {
    // No object on the hot path (it doubled the cost of observing a request).
    const h = Number.isInteger(hour) && hour >= 0 && hour < 24 ? hour : 0;
    const known = this.byTimezone.get(timezone)?.[h * 2 + (weekday === 0 || weekday === 6 ? 1 : 0)];
    return known !== undefined && known >= 0
      ? known
      : this.register(computeDriftContext(timezone, h, weekday));
  }

  private register(c: DriftContext): number {
    let slots = this.byTimezone.get(c.timezone);
    if (!slots) {
      if (this.contexts.length >= MAX_CONTEXTS) return MAX_CONTEXTS - 1;
      slots = new Int32Array(48).fill(-1);
      this.byTimezone.set(c.timezone, slots);
    }
    const k = hourKey(c);
    if (slots[k]! >= 0) return slots[k]!;
    if (this.contexts.length >= MAX_CONTEXTS) return MAX_CONTEXTS - 1;
    slots[k] = this.contexts.length;
    this.contexts.push(c);
    return slots[k]!;
  }

  /**
   * Records one request: its context (from contextOf) and the value of each monitored feature,
   * `valueOf(position)` by its position in the constructor's feature list. Non-finite values
   * are not counted.
   */
  observe(context: number, valueOf: (position: number) => number): void {
    const slot = this.next;
    if (this.filled === this.windowSize) {
      const old = this.window[slot]!;
      for (const m of this.monitored) {
        const b = m.ring[slot]!;
        if (b === MISSING) continue;
        m.counts[b]!--;
        if (m.contextCounts) m.contextCounts[old]!--;
        m.observations--;
      }
    } else this.filled++;
    this.window[slot] = context;
    for (const m of this.monitored) {
      const v = valueOf(m.position);
      if (!Number.isFinite(v)) {
        m.ring[slot] = MISSING;
        continue;
      }
      const b = binOf(m.edges, v);
      m.ring[slot] = b;
      m.counts[b]!++;
      if (m.contextCounts) m.contextCounts[context]!++;
      m.observations++;
    }
    this.next = (slot + 1) % this.windowSize;
  }

  /** Names of the monitored features. */
  features(): string[] {
    return this.monitored.map((m) => m.feature);
  }

  /** Records model scores. */
  observeScores(scores: ArrayLike<number>, count = scores.length): void {
    if (!this.score) return;
    for (let i = 0; i < count; i++) this.score.window.observe(scores[i]!);
  }

  /** PSI of each monitored feature over the window. */
  featureReadings(): DriftReading[] {
    return this.monitored.map((m) => {
      const expected = m.contexts ? this.mixture(m, m.contexts) : m.baseline;
      return reading(m.feature, expected, m.counts, m.observations, this.minObservations);
    });
  }

  /** PSI of the score distribution, when the baseline has one. */
  scoreReading(): DriftReading | undefined {
    if (!this.score) return undefined;
    const w = this.score.window;
    return reading('score', this.score.baseline, w.binCounts(), w.size, this.minObservations);
  }

  /** Σ_c share_c · baseline_c over the contexts of the window. */
  private mixture(m: Monitored, b: ContextBaselines): Float64Array {
    const out = new Float64Array(m.counts.length);
    if (m.observations === 0) return b.all;
    for (let c = 0; c < this.contexts.length; c++) {
      const n = m.contextCounts![c]!;
      if (n <= 0) continue;
      const p = b.trained[c] ?? b.byHour.get(hourKey(this.contexts[c]!)) ?? b.all;
      const share = n / m.observations;
      for (let i = 0; i < out.length; i++) out[i]! += share * p[i]!;
    }
    return out;
  }
}

/**
 * Per-context distributions from training counts: a context borrows CONTEXT_PRIOR_WEIGHT
 * requests from its hour (all timezones); contexts of an hour training never saw are compared
 * with the whole window.
 */
function contextBaselines(
  table: readonly (readonly number[])[],
  contexts: readonly DriftContext[],
  bins: number,
): ContextBaselines | undefined {
  if (table.length !== contexts.length || table.some((r) => r.length !== bins)) return undefined;
  const k = CONTEXT_PRIOR_WEIGHT;
  const total = new Float64Array(bins);
  const hours = new Map<number, Float64Array>();
  table.forEach((row, c) => {
    const h = hourKey(contexts[c]!);
    let acc = hours.get(h);
    if (!acc) hours.set(h, (acc = new Float64Array(bins)));
    row.forEach((x, i) => {
      total[i]! += x;
      acc[i]! += x;
    });
  });
  const smooth = (counts: ArrayLike<number>, prior: Float64Array, weight: number) => {
    let n = 0;
    for (let i = 0; i < bins; i++) n += counts[i]!;
    return Float64Array.from(prior, (p, i) => (counts[i]! + weight * p) / (n + weight));
  };
  const uniform = new Float64Array(bins).fill(1 / bins);
  const all = smooth(total, uniform, 1e-9);
  const byHour = new Map<number, Float64Array>();
  for (const [h, acc] of hours) byHour.set(h, smooth(acc, all, 1e-9));
  const trained = table.map((row, c) => smooth(row, byHour.get(hourKey(contexts[c]!))!, k));
  return { trained, byHour, all };
}

function reading(
  feature: string,
  expected: ArrayLike<number>,
  counts: ArrayLike<number>,
  n: number,
  minObservations: number,
): DriftReading {
  return {
    feature,
    psi: n >= minObservations ? computePsi(expected, counts) : undefined,
    observations: n,
    shares: Array.from(counts, (c) => (n === 0 ? 0 : c / n)),
    expected: Array.from(expected),
  };
}
