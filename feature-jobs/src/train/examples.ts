/**
 * Training and evaluation examples from a dataset. Time is split into two windows of
 * `evalDays`: features as of the start of the first window, labels inside it (training), and
 * features as of the start of the second window, labels inside it (held-out evaluation). Every
 * feature is computed with the batch job's own functions and named in serving's vocabulary.
 */
import { USER_FEATURES, computeClockFeatures, type CatalogItem } from '../../../contracts/features.js';
import { computeStorePopularity, computeUserFeatures } from '../batch/features.js';
import { computeSnapshot, type FeatureSnapshot } from '../batch/snapshot.js';
import { drainQueue } from '../common/queue.js';
import { Rng, mixSeed } from '../common/rng.js';
import { inSeason } from '../generate/catalog.js';
import type { Dataset } from '../generate/dataset.js';
import type { OrderColumns } from '../generate/orders.js';

/** User features used by the models (the recent_* slots and the segment id are not numeric). */
export const USER_NUMERIC = USER_FEATURES.slice(0, 15) as readonly (typeof USER_FEATURES)[number][];
const ITEM_COLS = [
  'popularity',
  'price',
  'prep_complexity',
  'is_hot',
  'is_iced',
  'is_blended',
  'is_energy',
  'is_seasonal',
];
/** Context features of a ranking row, in column order (writeContextColumns). */
export const CONTEXT_COLS = ['hour_sin', 'hour_cos', 'is_weekend', 'temperature_c', 'is_precipitation'];
const CROSS_COLS = ['category_affinity', 'recently_ordered', 'store_hour_popularity'];

/** Ranking / add-on attach input: one row per (user, item) in context, serving's names. */
export const RANKING_FEATURES: readonly string[] = [
  ...USER_NUMERIC,
  ...ITEM_COLS,
  ...CONTEXT_COLS,
  ...CROSS_COLS,
];
/** Add-on attach input: one row per (user, drink, add-on) pair, serving's pair names. */
export const ADDON_FEATURES: readonly string[] = [
  ...USER_NUMERIC,
  ...ITEM_COLS.map((f) => `drink_${f}`),
  ...ITEM_COLS.map((f) => `addon_${f}`),
];
/** Negative add-ons sampled per order for the attach model. */
export const ADDON_NEGATIVES = 4;
/** Pickup-time input, serving's names. */
export const PICKUP_FEATURES: readonly string[] = [
  'queue',
  'prep_load',
  'order_items',
  'order_complexity',
  'capacity_per_hour',
  'hour_sin',
  'hour_cos',
  'is_weekend',
];
/** Churn input: user features only. */
export const CHURN_FEATURES: readonly string[] = USER_NUMERIC;

/** Row-major float32 rows that grow as they are appended. */
export class RowBuffer {
  x: Float32Array;
  y: Float64Array;
  rows = 0;
  readonly groups: number[] = [0];
  constructor(readonly cols: number) {
    this.x = new Float32Array(cols * 1024);
    this.y = new Float64Array(1024);
  }
  /** Reserves a row and returns its offset into `x`. */
  add(label: number): number {
    if (this.rows === this.y.length) {
      const x = new Float32Array(this.x.length * 2);
      x.set(this.x);
      this.x = x;
      const y = new Float64Array(this.y.length * 2);
      y.set(this.y);
      this.y = y;
    }
    this.y[this.rows] = label;
    return this.rows++ * this.cols;
  }
  /** Closes the current group (a ranking list); single-row tasks close after each row. */
  endGroup(): void {
    this.groups.push(this.rows);
  }
  toSet(): { cols: number; x: Float32Array; y: Float64Array; offsets: Uint32Array } {
    return {
      cols: this.cols,
      x: this.x.subarray(0, this.rows * this.cols),
      y: this.y.subarray(0, this.rows),
      offsets: Uint32Array.from(this.groups),
    };
  }
}

/** Everything known at one cutoff: snapshot, per-store popularity, user vectors on demand. */
export interface Cutoff {
  readonly asOfDate: string;
  readonly snapshot: FeatureSnapshot;
  /** store index → [24 × items] */
  readonly popularity: Float32Array[];
}

export function buildCutoff(ds: Dataset, asOfDate: string, windowDays: number): Cutoff {
  const snapshot = computeSnapshot(ds, asOfDate, windowDays);
  const items = ds.catalog.items;
  const isDrink = Uint8Array.from(items, (i) => (i.kind === 'drink' ? 1 : 0));
  let drinks = 0;
  items.forEach((it, j) => (drinks += it.kind === 'drink' ? snapshot.itemCounts[j]! : 0));
  const global = Float32Array.from(items, (_, j) => (drinks ? snapshot.itemCounts[j]! / drinks : 0));
  const popularity = ds.stores.map((_, s) =>
    computeStorePopularity(snapshot.storeHourCounts, s, isDrink, global),
  );
  return { asOfDate, snapshot, popularity };
}

/** The request context of an order, as serving computes it. */
export interface OrderContext {
  readonly hour: number;
  readonly weekend: number;
  readonly temperatureC: number;
  readonly rain: number;
  readonly store: number;
}

const CAT_COLUMN: Record<CatalogItem['category'], number> = {
  hot: USER_FEATURES.indexOf('cat_hot'),
  iced: USER_FEATURES.indexOf('cat_iced'),
  blended: USER_FEATURES.indexOf('cat_blended'),
  energy: USER_FEATURES.indexOf('cat_energy'),
  addon: USER_FEATURES.indexOf('addon_attach_rate'),
};
const RECENT0 = USER_FEATURES.indexOf('recent_1');

/** Writes one ranking row for (user vector, item, context) at `out[off]`. */
export function writeRankingRow(
  out: Float32Array | Float64Array,
  off: number,
  user: Float32Array,
  item: CatalogItem,
  itemRow: Float32Array,
  ctx: OrderContext,
  storeHourPop: number,
): void {
  let k = off;
  for (let i = 0; i < USER_NUMERIC.length; i++) out[k++] = user[i]!;
  for (let i = 0; i < ITEM_COLS.length; i++) out[k++] = itemRow[i]!;
  k = writeContextColumns(out, k, ctx);
  out[k++] = user[CAT_COLUMN[item.category]]!;
  let recent = 0;
  for (let r = 0; r < 5; r++) if (user[RECENT0 + r] === item.index) recent = 1;
  out[k++] = recent;
  out[k++] = storeHourPop;
}

/** Writes the CONTEXT_COLS values of `ctx` at `out[off]`; returns the offset after them. */
export function writeContextColumns(
  out: Float32Array | Float64Array,
  off: number,
  ctx: OrderContext,
): number {
  const clock = computeClockFeatures(ctx.hour, ctx.weekend ? 0 : 1);
  out[off] = clock.hour_sin;
  out[off + 1] = clock.hour_cos;
  out[off + 2] = ctx.weekend;
  out[off + 3] = ctx.temperatureC;
  out[off + 4] = ctx.rain;
  return off + 5;
}

/** The split of a dataset's days into a training and an evaluation label window. */
export interface Split {
  readonly trainAsOf: string;
  readonly evalAsOf: string;
  readonly trainDays: readonly string[];
  readonly evalDays: readonly string[];
}

export function computeSplit(days: readonly string[], evalDays: number): Split {
  if (days.length < 2 * evalDays + 1) {
    throw new RangeError(
      `need at least ${2 * evalDays + 1} days of history for --eval-days ${evalDays}, have ${days.length}`,
    );
  }
  const n = days.length;
  return {
    trainAsOf: days[n - 2 * evalDays]!,
    evalAsOf: days[n - evalDays]!,
    trainDays: days.slice(n - 2 * evalDays, n - evalDays),
    evalDays: days.slice(n - evalDays),
  };
}

/** Per-window example sets for all four tasks. */
export interface WindowExamples {
  readonly ranking: RowBuffer; // softmax groups: drinks (positive + negatives) and add-ons
  readonly rankingEval: Array<{
    row0: number;
    candidates: number[];
    target: number;
    ctx: OrderContext;
    user: number;
  }>;
  readonly addon: RowBuffer; // (user, drink, add-on) pairs, label = attached
  readonly pickup: RowBuffer;
  readonly churn: RowBuffer;
  readonly churnRecency: number[];
  readonly orders: number;
  readonly knownUserOrders: number;
}

export interface ExampleOptions {
  readonly seed: number;
  /** Ranking lists sampled from the window's orders. */
  readonly maxRankingGroups: number;
  /** Negatives per ranking list during training (evaluation ranks every candidate). */
  readonly negatives: number;
  readonly maxRows: number;
  /** Build ranking lists for full evaluation instead of sampled training lists. */
  readonly evaluation: boolean;
}

/**
 * Builds examples for one window: labels from `days`, features from `cut`. Sampling rates are
 * fixed up front from the manifest's order counts so a pass over the days is enough.
 */
export function buildWindowExamples(
  ds: Dataset,
  cut: Cutoff,
  days: readonly string[],
  opt: ExampleOptions,
): WindowExamples {
  const items = ds.catalog.items;
  const nItems = items.length;
  const itemRows = items.map((_, j) =>
    cut.snapshot.items.subarray(j * ITEM_COLS.length, (j + 1) * ITEM_COLS.length),
  );
  const addons = items.filter((it) => it.kind === 'addon');
  const rng = new Rng(mixSeed(opt.seed, opt.evaluation ? 2 : 1));
  const total = days.reduce((s, d) => s + (ds.manifest.counts.ordersByDay[d] ?? 0), 0);
  const pRank = Math.min(1, opt.maxRankingGroups / Math.max(1, total));
  const pRow = Math.min(1, opt.maxRows / Math.max(1, total));
  const ranking = new RowBuffer(RANKING_FEATURES.length);
  const addon = new RowBuffer(ADDON_FEATURES.length);
  const pickup = new RowBuffer(PICKUP_FEATURES.length);
  const churn = new RowBuffer(CHURN_FEATURES.length);
  const rankingEval: WindowExamples['rankingEval'] = [];
  const userVec = new Float32Array(USER_FEATURES.length);
  const agg = cut.snapshot.agg;
  const orderedInWindow = new Uint8Array(agg.n);
  const unavailable = ds.stores.map((s) => new Set(s.unavailable));
  let orders = 0;
  let known = 0;
  for (const date of days) {
    const o = ds.orders(date);
    const dateObj = new Date(`${date}T00:00:00Z`);
    const sellable = items.map((it) => it.kind === 'drink' && inSeason(it, dateObj));
    const w = ds.weather.days.indexOf(date);
    replayQueues(ds, o, (i, queue, prepLoad) => {
      orders++;
      const u = o.user[i]!;
      orderedInWindow[u] = 1;
      const s = o.store[i]!;
      const store = ds.stores[s]!;
      const drink = items[o.drink[i]!]!;
      const nAdd = (o.addon1[i]! >= 0 ? 1 : 0) + (o.addon2[i]! >= 0 ? 1 : 0);
      const ctx: OrderContext = {
        hour: o.hour[i]!,
        weekend: o.dow[i] === 0 || o.dow[i] === 6 ? 1 : 0,
        temperatureC: ds.weather.tempC[w]?.[store.regionIndex] ?? 15,
        rain: ds.weather.rain[w]?.[store.regionIndex] ?? 0,
        store: s,
      };
      if (rng.next() < pRow) {
        const off = pickup.add(o.pickupSec[i]! / 60);
        const clock = computeClockFeatures(ctx.hour, o.dow[i]!);
        pickup.x.set(
          [
            queue,
            prepLoad,
            1 + nAdd,
            drink.prepComplexity + nAdd,
            store.capacityPerHour,
            clock.hour_sin,
            clock.hour_cos,
            clock.is_weekend,
          ],
          off,
        );
        pickup.endGroup();
      }
      const sampleRank = rng.next() < pRank;
      const sampleAddon = rng.next() < pRow;
      if (!sampleRank && !sampleAddon) return;
      if (!computeUserFeatures(agg, u, userVec)) return;
      known++;
      const pop = cut.popularity[s]!;
      if (sampleAddon) {
        // The attached add-ons are positives; a few other add-ons are negatives.
        const attached = [o.addon1[i]!, o.addon2[i]!].filter((a) => a >= 0);
        const pairs = [...attached];
        while (pairs.length < attached.length + ADDON_NEGATIVES) {
          const a = addons[rng.int(addons.length)]!.index;
          if (!pairs.includes(a)) pairs.push(a);
        }
        for (const a of pairs) {
          const off = addon.add(attached.includes(a) ? 1 : 0);
          for (let f = 0; f < USER_NUMERIC.length; f++) addon.x[off + f] = userVec[f]!;
          addon.x.set(itemRows[drink.index]!, off + USER_NUMERIC.length);
          addon.x.set(itemRows[a]!, off + USER_NUMERIC.length + ITEM_COLS.length);
          addon.endGroup();
        }
      }
      if (!sampleRank) return;
      const candidates: number[] = [];
      for (const it of items)
        if (sellable[it.index] && !unavailable[s]!.has(it.id)) candidates.push(it.index);
      if (!candidates.includes(drink.index)) candidates.push(drink.index);
      const list = opt.evaluation ? candidates : sampleNegatives(rng, candidates, drink.index, opt.negatives);
      const row0 = ranking.rows;
      for (const j of list) {
        const off = ranking.add(j === drink.index ? 1 : 0);
        writeRankingRow(ranking.x, off, userVec, items[j]!, itemRows[j]!, ctx, pop[ctx.hour * nItems + j]!);
      }
      ranking.endGroup();
      if (opt.evaluation) rankingEval.push({ row0, candidates: list, target: drink.index, ctx, user: u });
      // Add-on choice: the attached add-on among all add-ons, same model (serving ranks both).
      if (!opt.evaluation && o.addon1[i]! >= 0) {
        const choice = addons.map((a) => a.index);
        for (const a of sampleNegatives(rng, choice, o.addon1[i]!, opt.negatives).map((j) => items[j]!)) {
          const off = ranking.add(a.index === o.addon1[i] ? 1 : 0);
          writeRankingRow(
            ranking.x,
            off,
            userVec,
            a,
            itemRows[a.index]!,
            ctx,
            pop[ctx.hour * nItems + a.index]!,
          );
        }
        ranking.endGroup();
      }
    });
  }
  // Churn: users known at the cutoff; label = no order in the window.
  const churnRecency: number[] = [];
  const pUser = Math.min(1, opt.maxRows / Math.max(1, agg.n));
  for (let u = 0; u < agg.n; u++) {
    if (rng.next() >= pUser || !computeUserFeatures(agg, u, userVec)) continue;
    const off = churn.add(orderedInWindow[u] ? 0 : 1);
    for (let k = 0; k < CHURN_FEATURES.length; k++) churn.x[off + k] = userVec[k]!;
    churnRecency.push(userVec[0]!);
    churn.endGroup();
  }
  return { ranking, rankingEval, addon, pickup, churn, churnRecency, orders, knownUserOrders: known };
}

function sampleNegatives(rng: Rng, candidates: readonly number[], positive: number, k: number): number[] {
  const out = [positive];
  const seen = new Set(out);
  const want = Math.min(k + 1, candidates.length);
  while (out.length < want) {
    const c = candidates[rng.int(candidates.length)]!;
    if (!seen.has(c)) {
      seen.add(c);
      out.push(c);
    }
  }
  return out;
}

/**
 * Replays a day's orders through each store's queue (the shared drain model, prep load draining
 * in proportion) and calls `f(order, queueBefore, prepLoadBefore)` in time order — the values
 * the stream job holds in Redis at the moment of the order.
 */
export function replayQueues(
  ds: Dataset,
  o: OrderColumns,
  f: (i: number, queue: number, prepLoad: number) => void,
): void {
  const q = new Float64Array(ds.stores.length);
  const load = new Float64Array(ds.stores.length);
  const at = new Float64Array(ds.stores.length);
  const items = ds.catalog.items;
  for (let i = 0; i < o.n; i++) {
    const s = o.store[i]!;
    const now = o.ts[i]! * 1000;
    const cap = ds.stores[s]!.capacityPerHour;
    const nq = drainQueue(q[s]!, at[s]!, now, cap);
    load[s] = q[s]! > 0 ? (load[s]! * nq) / q[s]! : 0;
    q[s] = nq;
    if (now > at[s]!) at[s] = now;
    f(i, q[s]!, load[s]!);
    const nAdd = (o.addon1[i]! >= 0 ? 1 : 0) + (o.addon2[i]! >= 0 ? 1 : 0);
    q[s]! += 1;
    load[s]! += items[o.drink[i]!]!.prepComplexity + nAdd;
  }
}
