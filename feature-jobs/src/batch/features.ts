/**
 * History → features, as pure functions over order columns. The batch job writes these to
 * Redis; training computes the very same vectors at its cutoffs, so what a model learns on is
 * what serving reads.
 */
import {
  ITEM_FEATURES,
  SEGMENTS,
  USER_FEATURES,
  itemFeatureRow,
  type Catalog,
} from '../../../contracts/features.js';
import type { OrderColumns } from '../generate/orders.js';

export const RECENT = 5;
const DAY = 86_400;

/** Per-user running aggregates, struct-of-arrays so millions of users fit in a few hundred MB. */
export interface UserAggregates {
  readonly n: number;
  readonly asOf: number;
  readonly lastTs: Uint32Array;
  readonly orders: Uint16Array;
  readonly spend: Float64Array;
  readonly orders30: Uint16Array;
  readonly spend30: Float64Array;
  /** n × 4 drinks per category (hot, iced, blended, energy). */
  readonly cat: Uint16Array;
  /** n × 5 orders per time-of-day bucket. */
  readonly tod: Uint16Array;
  readonly weekday: Uint16Array;
  readonly addons: Uint16Array;
  /** n × RECENT drink indices, most recent first, -1 = none. */
  readonly recent: Int16Array;
}

export function newUserAggregates(n: number, asOf: number): UserAggregates {
  return {
    n,
    asOf,
    lastTs: new Uint32Array(n),
    orders: new Uint16Array(n),
    spend: new Float64Array(n),
    orders30: new Uint16Array(n),
    spend30: new Float64Array(n),
    cat: new Uint16Array(n * 4),
    tod: new Uint16Array(n * 5),
    weekday: new Uint16Array(n),
    addons: new Uint16Array(n),
    recent: new Int16Array(n * RECENT).fill(-1),
  };
}

/** Time-of-day bucket of a local hour: 05-09, 09-12, 12-14, 14-17, 17-22 (night folds into the ends). */
export function todBucket(hour: number): number {
  if (hour < 9) return 0;
  if (hour < 12) return 1;
  if (hour < 14) return 2;
  if (hour < 17) return 3;
  return 4;
}

const CATEGORY_INDEX: Record<string, number> = { hot: 0, iced: 1, blended: 2, energy: 3 };

/** Drink index → category index (0..3), -1 for add-ons. */
export function categoryLookup(catalog: Catalog): Int8Array {
  return Int8Array.from(catalog.items, (i) => CATEGORY_INDEX[i.category] ?? -1);
}

/**
 * Folds one day of orders (sorted by time, days fed in order) into the aggregates. Orders at
 * or after `asOf` are ignored; `include(user)` selects this shard's users.
 */
export function accumulateOrders(
  agg: UserAggregates,
  o: OrderColumns,
  categories: Int8Array,
  include: (user: number) => boolean = () => true,
): void {
  const since30 = agg.asOf - 30 * DAY;
  for (let i = 0; i < o.n; i++) {
    const t = o.ts[i]!;
    if (t >= agg.asOf) continue;
    const u = o.user[i]!;
    if (u >= agg.n || !include(u)) continue;
    if (t > agg.lastTs[u]!) agg.lastTs[u] = t;
    agg.orders[u] = Math.min(65_535, agg.orders[u]! + 1);
    const dollars = o.cents[i]! / 100;
    agg.spend[u]! += dollars;
    if (t >= since30) {
      agg.orders30[u] = Math.min(65_535, agg.orders30[u]! + 1);
      agg.spend30[u]! += dollars;
    }
    const c = categories[o.drink[i]!]!;
    if (c >= 0) agg.cat[u * 4 + c]!++;
    agg.tod[u * 5 + todBucket(o.hour[i]!)]!++;
    const dow = o.dow[i]!;
    if (dow >= 1 && dow <= 5) agg.weekday[u]!++;
    agg.addons[u]! += (o.addon1[i]! >= 0 ? 1 : 0) + (o.addon2[i]! >= 0 ? 1 : 0);
    const r = u * RECENT;
    for (let k = RECENT - 1; k > 0; k--) agg.recent[r + k] = agg.recent[r + k - 1]!;
    agg.recent[r] = o.drink[i]!;
  }
}

const F = Object.fromEntries(USER_FEATURES.map((f, i) => [f, i])) as Record<
  (typeof USER_FEATURES)[number],
  number
>;

/** Segment id (index into SEGMENTS) from a filled feature vector; a rule, not a model. */
export function computeSegment(v: ArrayLike<number>, orders: number): number {
  if (orders < 2) return 0;
  if (v[F.recency_days]! > 14) return 4;
  if (v[F.weekday_share]! < 0.45) return 3;
  const morning = v[F.tod_early]! + v[F.tod_morning]!;
  const afternoon = v[F.tod_midday]! + v[F.tod_afternoon]! + v[F.tod_evening]!;
  return morning >= afternoon ? 1 : 2;
}

/** Writes user `u`'s feature vector (USER_FEATURES order) into `out`; returns false when the user has no orders. */
export function computeUserFeatures(agg: UserAggregates, u: number, out: Float32Array): boolean {
  const orders = agg.orders[u]!;
  if (orders === 0) return false;
  out[F.recency_days] = Math.min(90, (agg.asOf - agg.lastTs[u]!) / DAY);
  out[F.frequency_30d] = agg.orders30[u]!;
  out[F.monetary_30d] = agg.spend30[u]!;
  out[F.avg_order_value] = agg.spend[u]! / orders;
  let drinks = 0;
  for (let c = 0; c < 4; c++) drinks += agg.cat[u * 4 + c]!;
  for (let c = 0; c < 4; c++) out[F.cat_hot + c] = drinks ? agg.cat[u * 4 + c]! / drinks : 0;
  for (let b = 0; b < 5; b++) out[F.tod_early + b] = agg.tod[u * 5 + b]! / orders;
  out[F.weekday_share] = agg.weekday[u]! / orders;
  out[F.addon_attach_rate] = drinks ? agg.addons[u]! / drinks : 0;
  out[F.segment] = 0;
  for (let k = 0; k < RECENT; k++) out[F.recent_1 + k] = agg.recent[u * RECENT + k]!;
  out[F.segment] = computeSegment(out, orders);
  return true;
}

/** Item feature matrix [items × ITEM_FEATURES] from drink counts (add-on rows: attach share). */
export function computeItemFeatures(catalog: Catalog, counts: Float64Array): Float32Array {
  const k = ITEM_FEATURES.length;
  let drinks = 0;
  catalog.items.forEach((it, i) => {
    if (it.kind === 'drink') drinks += counts[i]!;
  });
  const m = new Float32Array(catalog.items.length * k);
  catalog.items.forEach((it, i) => {
    m.set(itemFeatureRow(it, drinks ? counts[i]! / drinks : 0), i * k);
  });
  return m;
}

/** Item order counts (drinks and add-ons) over the orders before asOf. */
export function countItems(counts: Float64Array, o: OrderColumns, asOf: number): void {
  for (let i = 0; i < o.n; i++) {
    if (o.ts[i]! >= asOf) continue;
    counts[o.drink[i]!]!++;
    if (o.addon1[i]! >= 0) counts[o.addon1[i]!]!++;
    if (o.addon2[i]! >= 0) counts[o.addon2[i]!]!++;
  }
}

/** Accumulates raw store × local hour × item counts (`counts` has stores × 24 × items cells). */
export function countStoreHours(counts: Float64Array, items: number, o: OrderColumns, asOf: number): void {
  for (let i = 0; i < o.n; i++) {
    if (o.ts[i]! >= asOf) continue;
    const row = (o.store[i]! * 24 + o.hour[i]!) * items;
    counts[row + o.drink[i]!]!++;
    if (o.addon1[i]! >= 0) counts[row + o.addon1[i]!]!++;
    if (o.addon2[i]! >= 0) counts[row + o.addon2[i]!]!++;
  }
}

/**
 * One store's [24 × items] popularity: per local hour, each item's share of that hour's drinks,
 * smoothed towards the store's all-day mix (weight `alpha` drinks) and that towards `global`.
 */
export function computeStorePopularity(
  counts: Float64Array,
  store: number,
  isDrink: Uint8Array,
  global: Float32Array,
  alpha = 5,
): Float32Array {
  const items = isDrink.length;
  const day = new Float64Array(items);
  let dayDrinks = 0;
  for (let h = 0; h < 24; h++) {
    const row = (store * 24 + h) * items;
    for (let j = 0; j < items; j++) {
      day[j]! += counts[row + j]!;
      if (isDrink[j]) dayDrinks += counts[row + j]!;
    }
  }
  const dayShare = new Float64Array(items);
  for (let j = 0; j < items; j++) dayShare[j] = (day[j]! + alpha * global[j]!) / (dayDrinks + alpha);
  const out = new Float32Array(24 * items);
  for (let h = 0; h < 24; h++) {
    const row = (store * 24 + h) * items;
    let drinks = 0;
    for (let j = 0; j < items; j++) if (isDrink[j]) drinks += counts[row + j]!;
    for (let j = 0; j < items; j++)
      out[h * items + j] = (counts[row + j]! + alpha * dayShare[j]!) / (drinks + alpha);
  }
  return out;
}

/** Running per-segment sums of feature vectors (for cold-start means). */
export interface SegmentSums {
  readonly sums: number[];
  readonly counts: number[];
}

export function newSegmentSums(): SegmentSums {
  return {
    sums: new Array(SEGMENTS.length * USER_FEATURES.length).fill(0),
    counts: new Array(SEGMENTS.length).fill(0),
  };
}

export function addToSegments(s: SegmentSums, v: Float32Array): void {
  const seg = v[F.segment]!;
  s.counts[seg]!++;
  for (let k = 0; k < v.length; k++) s.sums[seg * v.length + k]! += v[k]!;
}

/** Merges shard sums and returns the [SEGMENTS × USER_FEATURES] mean matrix (recent_* = -1). */
export function computeSegmentMeans(parts: readonly SegmentSums[]): Float32Array {
  const k = USER_FEATURES.length;
  const out = new Float32Array(SEGMENTS.length * k);
  for (let s = 0; s < SEGMENTS.length; s++) {
    let n = 0;
    for (const p of parts) n += p.counts[s]!;
    for (let f = 0; f < k; f++) {
      let sum = 0;
      for (const p of parts) sum += p.sums[s * k + f]!;
      out[s * k + f] = n ? sum / n : 0;
    }
    out[s * k + F.segment] = s;
    for (let r = 0; r < RECENT; r++) out[s * k + F.recent_1 + r] = -1;
  }
  return out;
}
