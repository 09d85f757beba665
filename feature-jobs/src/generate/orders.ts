/**
 * One day of orders. Every (seed, day) has its own random stream, so days are generated
 * independently and any subset of days matches a full run.
 */
import type { Catalog } from '../../../contracts/features.js';
import { drainQueue, queueWaitSeconds } from '../common/queue.js';
import { Categorical, Rng, mixSeed } from '../common/rng.js';
import { inSeason } from './catalog.js';
import type { GenStore, Weather } from './stores.js';
import { tzOffsetMinutes } from './stores.js';
import { FAVOURITES, type Users } from './users.js';

/** A day of orders as columns, sorted by time. One order = one drink with up to two add-ons. */
export interface OrderColumns {
  readonly n: number;
  readonly user: Uint32Array;
  readonly store: Uint16Array;
  /** Unix seconds (UTC). */
  readonly ts: Uint32Array;
  /** Drink item index into the catalog. */
  readonly drink: Uint16Array;
  /** 0 small, 1 medium, 2 large. */
  readonly size: Uint8Array;
  /** Add-on item indices, -1 when none. */
  readonly addon1: Int16Array;
  readonly addon2: Int16Array;
  /** Order value in cents. */
  readonly cents: Uint32Array;
  /** Seconds from order to pickup-ready. */
  readonly pickupSec: Uint16Array;
  /** Store-local hour (0-23) and weekday (0 = Sunday). */
  readonly hour: Uint8Array;
  readonly dow: Uint8Array;
}

export const ORDER_COLUMNS = {
  user: 'u32',
  store: 'u16',
  ts: 'u32',
  drink: 'u16',
  size: 'u8',
  addon1: 'i16',
  addon2: 'i16',
  cents: 'u32',
  pickupSec: 'u16',
  hour: 'u8',
  dow: 'u8',
} as const;

/** Local-hour weights per habit; all share the 06-09 and 14-16 peaks. */
const BASE_HOURS = [
  0, 0, 0, 0, 0, 0.3, 1.3, 2.1, 2.1, 1.3, 0.7, 0.6, 0.8, 0.7, 1.3, 1.5, 1.2, 0.6, 0.4, 0.3, 0.2, 0.1, 0, 0,
];
const HOUR_PROFILES = [
  BASE_HOURS.map((w, h) => (h >= 6 && h < 9 ? w * 3.5 : w)),
  BASE_HOURS.map((w, h) => (h >= 14 && h < 16 ? w * 3.5 : w)),
  BASE_HOURS.map((w, h) => (h >= 9 && h < 12 ? w * 2.2 : w)),
  BASE_HOURS,
].map((w) => new Categorical(w));
/** Weekday multipliers per habit: [weekday, weekend]. */
const DOW_FACTOR = [
  [1.2, 0.5],
  [1.0, 1.0],
  [0.65, 2.0],
  [1.0, 1.0],
];
const SIZE_PRICE = [0.85, 1, 1.18];
const FAV_WEIGHTS = [0.35, 0.25, 0.18, 0.12, 0.1];

export interface World {
  readonly seed: number;
  readonly catalog: Catalog;
  readonly stores: readonly GenStore[];
  readonly users: Users;
  readonly weather: Weather;
}

/** Generates day `dayIndex` (0-based from the dataset start) for `date` (YYYY-MM-DD). */
export function generateDay(world: World, dayIndex: number, date: string): OrderColumns {
  const { catalog, stores, users, weather } = world;
  const rng = new Rng(mixSeed(world.seed, 5, dayIndex));
  const dayStart = Date.parse(`${date}T00:00:00Z`);
  const dateObj = new Date(dayStart);
  const weekend = dateObj.getUTCDay() === 0 || dateObj.getUTCDay() === 6 ? 1 : 0;
  const items = catalog.items;
  const drinks = items.filter((i) => i.kind === 'drink');
  const addons = items.filter((i) => i.kind === 'addon');
  const addonZipf = new Categorical(addons.map((_, i) => 1 / (i + 1)));
  const cats = ['hot', 'iced', 'blended', 'energy'] as const;
  // Per category: in-season drinks weighted by a Zipf head (catalog order = popularity rank).
  const byCat = cats.map((c) => drinks.filter((d) => d.category === c && inSeason(d, dateObj)));
  const byCatDist = byCat.map((list) => new Categorical(list.map((_, r) => 1 / Math.pow(r + 1, 0.8))));
  const sellable = new Uint8Array(items.length);
  for (const d of drinks) sellable[d.index] = inSeason(d, dateObj) ? 1 : 0;
  const storesByRegion: number[][] = weather.regions.map(() => []);
  stores.forEach((s, i) => storesByRegion[s.regionIndex]!.push(i));
  const unavailable = stores.map(
    (s) => new Set(s.unavailable.map((id) => items.findIndex((x) => x.id === id))),
  );
  // Local midnight of this date per timezone, as a UTC offset in seconds.
  const tzOffset = new Map<string, number>();
  for (const s of stores) {
    if (!tzOffset.has(s.timezone))
      tzOffset.set(s.timezone, tzOffsetMinutes(s.timezone, new Date(dayStart + 12 * 3_600_000)) * 60);
  }
  const storeOffset = Int32Array.from(stores, (s) => tzOffset.get(s.timezone)!);
  const dayW = weather.days.indexOf(date);
  if (dayW < 0) throw new RangeError(`no weather for ${date}`);
  const temp = weather.tempC[dayW]!;
  const rain = weather.rain[dayW]!;

  let cap = 1024;
  let n = 0;
  let user = new Uint32Array(cap);
  let store = new Uint16Array(cap);
  let ts = new Uint32Array(cap);
  let drink = new Uint16Array(cap);
  let size = new Uint8Array(cap);
  let addon1 = new Int16Array(cap);
  let addon2 = new Int16Array(cap);
  let cents = new Uint32Array(cap);
  let hour = new Uint8Array(cap);
  const grow = () => {
    cap *= 2;
    const g = <T extends Uint32Array | Uint16Array | Uint8Array | Int16Array>(a: T): T => {
      const b = new (a.constructor as new (n: number) => T)(cap);
      b.set(a);
      return b;
    };
    user = g(user);
    store = g(store);
    ts = g(ts);
    drink = g(drink);
    size = g(size);
    addon1 = g(addon1);
    addon2 = g(addon2);
    cents = g(cents);
    hour = g(hour);
  };
  const catW = new Float64Array(4);
  for (let u = 0; u < users.n; u++) {
    const churnDay = users.churnDay[u]!;
    if (churnDay >= 0 && dayIndex >= churnDay) continue;
    // Churners fade out over the ten days before they stop.
    const fade = churnDay >= 0 ? Math.min(1, Math.max(0.15, (churnDay - dayIndex) / 10)) : 1;
    const habit = users.habit[u]!;
    const home = users.homeStore[u]!;
    const region = stores[home]!.regionIndex;
    const lambda = users.activity[u]! * DOW_FACTOR[habit]![weekend]! * fade * (rain[region] ? 0.9 : 1);
    let k = rng.poisson(lambda);
    while (k-- > 0) {
      if (n === cap) grow();
      const s = rng.next() < 0.85 ? home : storesByRegion[region]![rng.int(storesByRegion[region]!.length)]!;
      const h = HOUR_PROFILES[habit]!.sample(rng);
      const t = temp[stores[s]!.regionIndex]!;
      let d = -1;
      if (rng.next() < 0.55) {
        const f = users.favourites[u * FAVOURITES + rng.weighted(FAV_WEIGHTS, 1)]!;
        if (sellable[f] && !unavailable[s]!.has(f)) d = f;
      }
      if (d < 0) {
        const sens = users.tempSensitivity[u]!;
        const warm = Math.exp(((t - 16) / 9) * sens);
        for (let c = 0; c < 4; c++) catW[c] = users.categoryWeights[u * 4 + c]!;
        catW[0]! /= warm;
        catW[1]! *= warm;
        catW[2]! *= warm;
        if (h >= 13 && h < 18) catW[3]! *= 1.6;
        if (h < 9) catW[0]! *= 1.3;
        const c = rng.weighted(catW);
        const list = byCat[c]!;
        d = list[byCatDist[c]!.sample(rng)]!.index;
        if (unavailable[s]!.has(d)) d = list[0]!.index;
      }
      const item = items[d]!;
      const sz = rng.next() < 0.7 ? users.sizePref[u]! : rng.int(3);
      let value = item.price * SIZE_PRICE[sz]!;
      let a1 = -1;
      let a2 = -1;
      const pAddon =
        users.addonPropensity[u]! *
        (item.category === 'blended' ? 1.25 : item.category === 'energy' ? 0.6 : 1);
      if (rng.next() < pAddon) {
        a1 = addons[rng.next() < 0.6 ? users.favouriteAddon[u]! : addonZipf.sample(rng)]!.index;
        value += items[a1]!.price;
        if (rng.next() < 0.25) {
          a2 = addons[addonZipf.sample(rng)]!.index;
          value += items[a2]!.price;
        }
      }
      user[n] = u;
      store[n] = s;
      ts[n] = Math.floor(dayStart / 1000) + h * 3600 + rng.int(3600) - storeOffset[s]!;
      drink[n] = d;
      size[n] = sz;
      addon1[n] = a1;
      addon2[n] = a2;
      cents[n] = Math.round(value * 100);
      hour[n] = h;
      n++;
    }
  }
  // Sort by time: a stable counting sort on the second (a local day spans < 3 UTC days).
  let minT = Infinity;
  for (let i = 0; i < n; i++) if (ts[i]! < minT) minT = ts[i]!;
  const buckets = new Uint32Array(3 * 86_400 + 1);
  for (let i = 0; i < n; i++) buckets[ts[i]! - minT]!++;
  for (let b = 0, acc = 0; b < buckets.length; b++) {
    const c = buckets[b]!;
    buckets[b] = acc;
    acc += c;
  }
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[buckets[ts[i]! - minT]!++] = i;
  const out: OrderColumns = {
    n,
    user: new Uint32Array(n),
    store: new Uint16Array(n),
    ts: new Uint32Array(n),
    drink: new Uint16Array(n),
    size: new Uint8Array(n),
    addon1: new Int16Array(n),
    addon2: new Int16Array(n),
    cents: new Uint32Array(n),
    pickupSec: new Uint16Array(n),
    hour: new Uint8Array(n),
    dow: new Uint8Array(n).fill(dateObj.getUTCDay()),
  };
  for (let i = 0; i < n; i++) {
    const j = order[i]!;
    out.user[i] = user[j]!;
    out.store[i] = store[j]!;
    out.ts[i] = ts[j]!;
    out.drink[i] = drink[j]!;
    out.size[i] = size[j]!;
    out.addon1[i] = addon1[j]!;
    out.addon2[i] = addon2[j]!;
    out.cents[i] = cents[j]!;
    out.hour[i] = hour[j]!;
  }
  // Ground-truth pickup: wait for the queue ahead (the shared drain model) plus this drink's prep.
  const q = new Float64Array(stores.length);
  const qAt = new Float64Array(stores.length);
  const noise = new Rng(mixSeed(world.seed, 6, dayIndex));
  for (let i = 0; i < n; i++) {
    const s = out.store[i]!;
    const nowMs = out.ts[i]! * 1000;
    const capH = stores[s]!.capacityPerHour;
    const before = drainQueue(q[s]!, qAt[s]!, nowMs, capH);
    const nAdd = (out.addon1[i]! >= 0 ? 1 : 0) + (out.addon2[i]! >= 0 ? 1 : 0);
    const prep = 45 + 35 * items[out.drink[i]!]!.prepComplexity + 12 * out.size[i]! + 20 * nAdd;
    const sec = queueWaitSeconds(before, capH) + prep + 25 * Math.abs(noise.normal());
    out.pickupSec[i] = Math.min(65_535, Math.round(sec));
    q[s] = before + 1;
    qAt[s] = nowMs;
  }
  return out;
}
