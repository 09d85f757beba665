/**
 * Synthetic users with hidden tastes: category weights, five favourite drinks, a favourite
 * add-on, an add-on propensity, a time-of-day habit, a home store, temperature sensitivity and
 * a churn propensity. Features never read these; they exist so models can be judged.
 */
import { Rng, mixSeed } from '../common/rng.js';
import type { GenStore } from './stores.js';

/** Habits drive hour and weekday of orders. */
export const HABITS = ['morning_commuter', 'afternoon_treat', 'weekend', 'mixed'] as const;

export const FAVOURITES = 5;

export interface Users {
  readonly n: number;
  readonly homeStore: Uint16Array;
  readonly habit: Uint8Array;
  /** Expected orders per day while fully active. */
  readonly activity: Float32Array;
  /** Churn propensity in [0, 1]. */
  readonly churnPropensity: Float32Array;
  /** Day index (from the dataset start) after which the user stops ordering; -1 = never. */
  readonly churnDay: Int16Array;
  readonly addonPropensity: Float32Array;
  readonly sizePref: Uint8Array;
  readonly tempSensitivity: Float32Array;
  /** n × 4 category weights (hot, iced, blended, energy). */
  readonly categoryWeights: Float32Array;
  /** n × FAVOURITES drink indices. */
  readonly favourites: Uint16Array;
  /** Index into the add-on list (0-based among add-ons). */
  readonly favouriteAddon: Uint8Array;
}

/**
 * Builds `n` users. `drinksByCategory` lists drink indices per category; `meanOrdersPerDay`
 * is the target mean of `activity` (orders per active user per day).
 */
export function buildUsers(opts: {
  seed: number;
  n: number;
  days: number;
  stores: readonly GenStore[];
  drinksByCategory: readonly (readonly number[])[];
  addonCount: number;
  meanOrdersPerDay: number;
}): Users {
  const { n } = opts;
  const rng = new Rng(mixSeed(opts.seed, 4));
  const u: Users = {
    n,
    homeStore: new Uint16Array(n),
    habit: new Uint8Array(n),
    activity: new Float32Array(n),
    churnPropensity: new Float32Array(n),
    churnDay: new Int16Array(n),
    addonPropensity: new Float32Array(n),
    sizePref: new Uint8Array(n),
    tempSensitivity: new Float32Array(n),
    categoryWeights: new Float32Array(n * 4),
    favourites: new Uint16Array(n * FAVOURITES),
    favouriteAddon: new Uint8Array(n),
  };
  // Home stores are drawn in proportion to capacity so busy stores get more users.
  const storeW = opts.stores.map((s) => s.capacityPerHour);
  const storeTotal = storeW.reduce((a, b) => a + b, 0);
  const storeCum = new Float64Array(storeW.length);
  storeW.reduce((acc, w, i) => (storeCum[i] = acc + w), 0);
  // lognormal(σ=0.9) has mean exp(σ²/2); divide it out so the mean is meanOrdersPerDay.
  const lognormMean = Math.exp(0.81 / 2);
  for (let i = 0; i < n; i++) {
    const x = rng.next() * storeTotal;
    let lo = 0;
    let hi = storeCum.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (storeCum[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    u.homeStore[i] = lo;
    u.habit[i] = rng.weighted([0.35, 0.25, 0.15, 0.25], 1);
    u.activity[i] = (opts.meanOrdersPerDay * Math.exp(0.9 * rng.normal())) / lognormMean;
    const churny = rng.next() < 0.25;
    const p = churny ? rng.range(0.3, 0.9) : rng.range(0, 0.08);
    u.churnPropensity[i] = p;
    // A churner stops on a day inside (or shortly after) the generated window.
    u.churnDay[i] = rng.next() < p ? rng.int(opts.days + 14) : -1;
    u.addonPropensity[i] = rng.next() < 0.35 ? rng.range(0.4, 0.9) : rng.range(0, 0.2);
    u.sizePref[i] = rng.weighted([0.25, 0.5, 0.25], 1);
    u.tempSensitivity[i] = rng.range(0.3, 1.6);
    // Peaked category tastes: one dominant category most of the time.
    const dominant = rng.int(4);
    let sum = 0;
    for (let c = 0; c < 4; c++) {
      const w = (c === dominant ? 3 : 0.3) * rng.range(0.2, 1);
      u.categoryWeights[i * 4 + c] = w;
      sum += w;
    }
    for (let c = 0; c < 4; c++) u.categoryWeights[i * 4 + c]! /= sum;
    for (let f = 0; f < FAVOURITES; f++) {
      const cat = rng.next() < 0.7 ? dominant : rng.int(4);
      const list = opts.drinksByCategory[cat]!;
      // Favourites lean towards the head of each category (popular drinks stay popular).
      const r = Math.floor(list.length * Math.pow(rng.next(), 1.8));
      u.favourites[i * FAVOURITES + f] = list[r]!;
    }
    u.favouriteAddon[i] = Math.floor(opts.addonCount * Math.pow(rng.next(), 1.5));
  }
  return u;
}
