/** Loads the history window of a dataset and computes every batch feature as of a cutoff. */
import { ITEM_FEATURES } from '../../../contracts/features.js';
import type { Dataset } from '../generate/dataset.js';
import {
  accumulateOrders,
  categoryLookup,
  computeItemFeatures,
  countItems,
  countStoreHours,
  newUserAggregates,
  type UserAggregates,
} from './features.js';
import { shardOfUser, type Shard } from './shard.js';

export interface FeatureSnapshot {
  /** Unix seconds: features describe history strictly before this instant. */
  readonly asOf: number;
  readonly agg: UserAggregates;
  /** Item counts over the window (drinks and add-ons). */
  readonly itemCounts: Float64Array;
  /** [items × ITEM_FEATURES] */
  readonly items: Float32Array;
  /** Raw store × hour × item counts. */
  readonly storeHourCounts: Float64Array;
}

/** Dates of the dataset within [asOfDate - windowDays, asOfDate). */
export function windowDates(days: readonly string[], asOfDate: string, windowDays: number): string[] {
  const end = Date.parse(`${asOfDate}T00:00:00Z`);
  const start = end - windowDays * 86_400_000;
  // One extra day before the window: a store-local date can begin on the previous UTC day.
  return days.filter((d) => {
    const t = Date.parse(`${d}T00:00:00Z`);
    return t >= start - 86_400_000 && t <= end;
  });
}

/**
 * Computes the snapshot as of 00:00 UTC of `asOfDate` over `windowDays` of history. Only this
 * shard's users are aggregated; item and store features always use every order.
 */
export function computeSnapshot(
  ds: Dataset,
  asOfDate: string,
  windowDays: number,
  shard: Shard = { index: 0, count: 1 },
  onDay: (date: string) => void = () => {},
): FeatureSnapshot {
  const asOf = Date.parse(`${asOfDate}T00:00:00Z`) / 1000;
  if (Number.isNaN(asOf)) throw new RangeError(`bad as-of date ${asOfDate}`);
  const from = asOf - windowDays * 86_400;
  const nItems = ds.catalog.items.length;
  const agg = newUserAggregates(ds.manifest.counts.users, asOf);
  const itemCounts = new Float64Array(nItems);
  const storeHourCounts = new Float64Array(ds.stores.length * 24 * nItems);
  const categories = categoryLookup(ds.catalog);
  const include = shard.count === 1 ? () => true : shardFilter(agg.n, shard);
  for (const date of windowDates(ds.days, asOfDate, windowDays)) {
    const o = ds.orders(date);
    // Trim to [from, asOf) by scanning the sorted ts column once.
    let lo = 0;
    while (lo < o.n && o.ts[lo]! < from) lo++;
    const view = lo === 0 ? o : sliceOrders(o, lo);
    accumulateOrders(agg, view, categories, include);
    countItems(itemCounts, view, asOf);
    countStoreHours(storeHourCounts, nItems, view, asOf);
    onDay(date);
  }
  const items = computeItemFeatures(ds.catalog, itemCounts);
  if (items.length !== nItems * ITEM_FEATURES.length) throw new Error('item matrix size');
  return { asOf, agg, itemCounts, items, storeHourCounts };
}

function shardFilter(n: number, shard: Shard): (u: number) => boolean {
  const mine = new Uint8Array(n);
  for (let u = 0; u < n; u++) mine[u] = shardOfUser(`u${u}`, shard.count) === shard.index ? 1 : 0;
  return (u) => mine[u] === 1;
}

function sliceOrders<T extends { n: number }>(o: T, from: number): T {
  const out: Record<string, unknown> = { n: o.n - from };
  for (const [k, v] of Object.entries(o))
    if (ArrayBuffer.isView(v)) out[k] = (v as unknown as Uint8Array).subarray(from);
  return out as T;
}
