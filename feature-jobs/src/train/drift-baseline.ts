/**
 * The drift baseline of the ranking model's request-level features (user and context), as
 * serving will see them (ADR 0010): one value per request, not per ranking row; user features
 * of the nightly batch before the request (a fresh snapshot per day, so recency_days means what
 * it means in serving); the cold-start vector for users without features; counts per drift
 * context (store timezone, local hour, weekend). Binned with contracts/drift-binning.ts, the
 * binning serving uses for its windows.
 */
import {
  computeBaselineEdges,
  computeDriftContext,
  countsToProbs,
  driftComparison,
  driftContextKey,
  binOf,
  DRIFT_CONTEXT_SCHEME,
  type BaselineHistogram,
  type DriftContext,
} from '../../../contracts/drift-binning.js';
import { USER_FEATURES } from '../../../contracts/features.js';
import type { DriftContextBaseline } from '../../../contracts/model-metadata.js';
import {
  addToSegments,
  computeSegmentMeans,
  computeUserFeatures,
  newSegmentSums,
  type UserAggregates,
} from '../batch/features.js';
import { computeSnapshot, type FeatureSnapshot } from '../batch/snapshot.js';
import { Rng, mixSeed } from '../common/rng.js';
import type { Dataset } from '../generate/dataset.js';
import { CONTEXT_COLS, USER_NUMERIC, writeContextColumns } from './examples.js';

/** The ranking model's features that are the same on every row of a request: what serving monitors. */
export const REQUEST_FEATURES: readonly string[] = [...USER_NUMERIC, ...CONTEXT_COLS];

export interface DriftBaseline {
  readonly features: Record<string, BaselineHistogram>;
  readonly contexts: DriftContextBaseline;
  /** Requests sampled. */
  readonly requests: number;
}

export interface DriftBaselineOptions {
  readonly seed: number;
  readonly windowDays: number;
  /** Requests sampled over all days (uniformly). Default 400,000. */
  readonly maxRequests?: number;
  /** The snapshot as of the first day, when the caller has it already. */
  readonly firstSnapshot?: FeatureSnapshot;
}

/** The cold-start vector serving answers users without features with (segment 0's means). */
export function computeColdStartFeatures(agg: UserAggregates): Float32Array {
  const sums = newSegmentSums();
  const v = new Float32Array(USER_FEATURES.length);
  for (let u = 0; u < agg.n; u++) if (computeUserFeatures(agg, u, v)) addToSegments(sums, v);
  return computeSegmentMeans([sums]).slice(0, USER_FEATURES.length);
}

/**
 * Samples the requests of `days` (each day: the orders between its 00:00 UTC and the next, with
 * features as of its 00:00 UTC) and builds the histograms of REQUEST_FEATURES: per-context
 * counts for the features compared per context, support bins for the others.
 */
export function buildDriftBaseline(
  ds: Dataset,
  days: readonly string[],
  o: DriftBaselineOptions,
): DriftBaseline {
  const nf = REQUEST_FEATURES.length;
  const rng = new Rng(mixSeed(o.seed, 7));
  const total = days.reduce((s, d) => s + (ds.manifest.counts.ordersByDay[d] ?? 0), 0);
  const p = Math.min(1, (o.maxRequests ?? 400_000) / Math.max(1, total));
  let rows = new Float32Array(nf * 4096);
  let ctx = new Uint32Array(4096);
  let n = 0;
  const contextIndex = new Map<string, number>();
  const contexts: DriftContext[] = [];
  const user = new Float32Array(USER_FEATURES.length);
  for (const [k, day] of days.entries()) {
    const snap = k === 0 && o.firstSnapshot ? o.firstSnapshot : computeSnapshot(ds, day, o.windowDays);
    const coldStart = computeColdStartFeatures(snap.agg);
    const from = Date.parse(`${day}T00:00:00Z`) / 1000;
    const to = from + 86_400;
    // A UTC day holds the end of the previous store-local day (Pacific evening) and most of this one.
    const di = ds.days.indexOf(day);
    for (const local of ds.days.slice(Math.max(0, di - 1), di + 1)) {
      const orders = ds.orders(local);
      const w = ds.weather.days.indexOf(local);
      for (let i = 0; i < orders.n; i++) {
        const ts = orders.ts[i]!;
        if (ts < from || ts >= to || rng.next() >= p) continue;
        if (n === ctx.length) {
          const r = new Float32Array(rows.length * 2);
          r.set(rows);
          rows = r;
          const c = new Uint32Array(ctx.length * 2);
          c.set(ctx);
          ctx = c;
        }
        const store = ds.stores[orders.store[i]!]!;
        const c = computeDriftContext(store.timezone, orders.hour[i]!, orders.dow[i]!);
        const key = driftContextKey(c);
        let ci = contextIndex.get(key);
        if (ci === undefined) {
          ci = contexts.length;
          contextIndex.set(key, ci);
          contexts.push(c);
        }
        ctx[n] = ci;
        const u = computeUserFeatures(snap.agg, orders.user[i]!, user) ? user : coldStart;
        const off = n * nf;
        for (let f = 0; f < USER_NUMERIC.length; f++) rows[off + f] = u[f]!;
        writeContextColumns(rows, off + USER_NUMERIC.length, {
          hour: orders.hour[i]!,
          weekend: c.weekend,
          temperatureC: ds.weather.tempC[w]?.[store.regionIndex] ?? 15,
          rain: ds.weather.rain[w]?.[store.regionIndex] ?? 0,
          store: orders.store[i]!,
        });
        n++;
      }
    }
  }
  // Contexts in a stable order (timezone, hour, weekend), so the file diffs cleanly.
  const order = contexts
    .map((_, i) => i)
    .sort((a, b) => {
      const ka = driftContextKey(contexts[a]!);
      const kb = driftContextKey(contexts[b]!);
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    });
  const rank = new Uint32Array(contexts.length);
  order.forEach((ci, r) => (rank[ci] = r));
  const requests = new Array<number>(contexts.length).fill(0);
  for (let r = 0; r < n; r++) requests[rank[ctx[r]!]!]!++;
  const features: Record<string, BaselineHistogram> = {};
  const counts: Record<string, number[][]> = {};
  const column = new Float32Array(n);
  REQUEST_FEATURES.forEach((name, f) => {
    for (let r = 0; r < n; r++) column[r] = rows[r * nf + f]!;
    const edges = computeBaselineEdges(name, column);
    const perContext = contexts.map(() => new Array<number>(edges.length - 1).fill(0));
    const all = new Array<number>(edges.length - 1).fill(0);
    for (let r = 0; r < n; r++) {
      const b = binOf(edges, column[r]!);
      perContext[rank[ctx[r]!]!]![b]!++;
      all[b]!++;
    }
    features[name] = { edges, probs: countsToProbs(all) };
    if (driftComparison(name) === 'context') counts[name] = perContext;
  });
  return {
    features,
    contexts: { scheme: DRIFT_CONTEXT_SCHEME, contexts: order.map((i) => contexts[i]!), requests, counts },
    requests: n,
  };
}
