import { describe, expect, it } from 'vitest';
import { USER_FEATURES, type Catalog } from '../../../contracts/features.js';
import type { OrderColumns } from '../generate/orders.js';
import {
  accumulateOrders,
  categoryLookup,
  computeItemFeatures,
  computeSegmentMeans,
  computeStorePopularity,
  computeUserFeatures,
  countItems,
  newSegmentSums,
  addToSegments,
  newUserAggregates,
  todBucket,
} from './features.js';
import { parseShard, shardOfUser } from './shard.js';

const catalog: Catalog = {
  items: [
    { id: 'd0', index: 0, name: 'Latte', kind: 'drink', category: 'hot', price: 4, prepComplexity: 2 },
    { id: 'd1', index: 1, name: 'Cold Brew', kind: 'drink', category: 'iced', price: 5, prepComplexity: 1 },
    {
      id: 'd2',
      index: 2,
      name: 'Frappe',
      kind: 'drink',
      category: 'blended',
      price: 6,
      prepComplexity: 4,
      season: { start: '06-01', end: '08-31' },
    },
    { id: 'a3', index: 3, name: 'Oat Milk', kind: 'addon', category: 'addon', price: 0.5, prepComplexity: 1 },
  ],
};

const t = (iso: string) => Date.parse(iso) / 1000;
type Row = {
  user: number;
  at: string;
  drink: number;
  addon?: number;
  cents: number;
  hour: number;
  dow: number;
};
function orders(rows: Row[]): OrderColumns {
  const n = rows.length;
  return {
    n,
    user: Uint32Array.from(rows, (r) => r.user),
    store: new Uint16Array(n),
    ts: Uint32Array.from(rows, (r) => t(r.at)),
    drink: Uint16Array.from(rows, (r) => r.drink),
    size: new Uint8Array(n),
    addon1: Int16Array.from(rows, (r) => r.addon ?? -1),
    addon2: new Int16Array(n).fill(-1),
    cents: Uint32Array.from(rows, (r) => r.cents),
    pickupSec: new Uint16Array(n),
    hour: Uint8Array.from(rows, (r) => r.hour),
    dow: Uint8Array.from(rows, (r) => r.dow),
  };
}

const F = (name: (typeof USER_FEATURES)[number]) => USER_FEATURES.indexOf(name);

describe('user features on a hand-checked fixture', () => {
  const asOf = t('2026-10-10T00:00:00Z');
  const agg = newUserAggregates(3, asOf);
  // Fed oldest day first, like the batch job does.
  accumulateOrders(
    agg,
    orders([{ user: 0, at: '2026-09-01T15:00:00Z', drink: 1, cents: 500, hour: 15, dow: 2 }]),
    categoryLookup(catalog),
  );
  accumulateOrders(
    agg,
    orders([
      { user: 0, at: '2026-10-01T08:00:00Z', drink: 0, addon: 3, cents: 450, hour: 8, dow: 4 },
      { user: 0, at: '2026-10-04T10:00:00Z', drink: 0, cents: 400, hour: 10, dow: 0 },
      { user: 1, at: '2026-10-09T23:00:00Z', drink: 1, cents: 500, hour: 19, dow: 5 },
      // At the cutoff: must not count.
      { user: 1, at: '2026-10-10T00:00:00Z', drink: 2, cents: 600, hour: 20, dow: 5 },
    ]),
    categoryLookup(catalog),
  );

  it('computes recency, frequency, monetary, shares, attach rate, segment and recent drinks', () => {
    const v = new Float32Array(USER_FEATURES.length);
    expect(computeUserFeatures(agg, 0, v)).toBe(true);
    const want: Record<string, number> = {
      recency_days: 5 + 14 / 24, // 10-04 10:00 → 10-10 00:00
      frequency_30d: 2, // 09-01 is older than 30 days
      monetary_30d: 8.5,
      avg_order_value: 4.5, // (5 + 4.5 + 4) / 3
      cat_hot: 2 / 3,
      cat_iced: 1 / 3,
      cat_blended: 0,
      cat_energy: 0,
      tod_early: 1 / 3,
      tod_morning: 1 / 3,
      tod_midday: 0,
      tod_afternoon: 1 / 3,
      tod_evening: 0,
      weekday_share: 2 / 3, // Tuesday and Thursday; Sunday is not
      addon_attach_rate: 1 / 3,
      segment: 1, // morning_commuter: 2/3 of orders before noon, mostly weekdays
      recent_1: 0,
      recent_2: 0,
      recent_3: 1,
      recent_4: -1,
      recent_5: -1,
    };
    for (const [k, x] of Object.entries(want)) expect(v[F(k as never)], k).toBeCloseTo(x, 5);
  });

  it('marks a one-order user cold start, ignores orders at the cutoff, and skips users with no orders', () => {
    const v = new Float32Array(USER_FEATURES.length);
    expect(computeUserFeatures(agg, 1, v)).toBe(true);
    expect(v[F('segment')]).toBe(0);
    expect(v[F('frequency_30d')]).toBe(1);
    expect(v[F('cat_blended')]).toBe(0);
    expect(v[F('recency_days')]).toBeCloseTo(1 / 24, 5);
    expect(computeUserFeatures(agg, 2, v)).toBe(false);
  });

  it('buckets local hours into the five time-of-day bands', () => {
    expect([5, 8, 9, 11, 12, 13, 14, 16, 17, 21].map(todBucket)).toEqual([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
  });
});

describe('item, store and segment features', () => {
  it('item rows: popularity share of drinks, price, complexity, category flags, seasonal flag', () => {
    const counts = new Float64Array(4);
    countItems(
      counts,
      orders([
        { user: 0, at: '2026-10-01T08:00:00Z', drink: 0, addon: 3, cents: 450, hour: 8, dow: 4 },
        { user: 0, at: '2026-10-01T09:00:00Z', drink: 0, cents: 400, hour: 9, dow: 4 },
        { user: 0, at: '2026-10-01T10:00:00Z', drink: 2, cents: 600, hour: 10, dow: 4 },
        { user: 0, at: '2026-10-01T11:00:00Z', drink: 1, cents: 500, hour: 11, dow: 4 },
      ]),
      t('2026-10-02T00:00:00Z'),
    );
    const m = computeItemFeatures(catalog, counts);
    expect(Array.from(m.subarray(0, 8))).toEqual([0.5, 4, 2, 1, 0, 0, 0, 0]);
    expect(Array.from(m.subarray(16, 24))).toEqual([0.25, 6, 4, 0, 0, 1, 0, 1]);
    expect(m[24]).toBeCloseTo(0.25); // add-on row: attachments per drink
  });

  it('store × hour popularity: hour shares smoothed toward the store day mix, empty hours get the day mix', () => {
    // one store, 3 items (2 drinks + 1 add-on); hour 8: drink0 ×3, drink1 ×1
    const counts = new Float64Array(24 * 3);
    counts[8 * 3 + 0] = 3;
    counts[8 * 3 + 1] = 1;
    const pop = computeStorePopularity(
      counts,
      0,
      Uint8Array.from([1, 1, 0]),
      Float32Array.from([0.5, 0.5, 0]),
      1,
    );
    // day mix: (3 + 0.5) / 5 = 0.7, (1 + 0.5) / 5 = 0.3; hour 8: (3 + 0.7) / 5, (1 + 0.3) / 5
    expect(pop[8 * 3]).toBeCloseTo(0.74, 6);
    expect(pop[8 * 3 + 1]).toBeCloseTo(0.26, 6);
    expect(pop[9 * 3]).toBeCloseTo(0.7, 6);
    expect(pop[9 * 3 + 1]).toBeCloseTo(0.3, 6);
  });

  it('segment means merge shard sums and blank the recent-drink slots', () => {
    const a = newSegmentSums();
    const b = newSegmentSums();
    const v = new Float32Array(USER_FEATURES.length);
    v[F('segment')] = 2;
    v[F('frequency_30d')] = 4;
    v[F('recent_1')] = 7;
    addToSegments(a, v);
    v[F('frequency_30d')] = 8;
    addToSegments(b, v);
    const m = computeSegmentMeans([a, b]);
    const row = 2 * USER_FEATURES.length;
    expect(m[row + F('frequency_30d')]).toBe(6);
    expect(m[row + F('segment')]).toBe(2);
    expect(m[row + F('recent_1')]).toBe(-1);
    expect(m[F('segment')]).toBe(0);
  });
});

describe('sharding', () => {
  it('parses i/N and rejects bad input with the flag named', () => {
    expect(parseShard('2/8')).toEqual({ index: 2, count: 8 });
    expect(() => parseShard('8/8')).toThrow(/--shard "8\/8"/);
    expect(() => parseShard('x')).toThrow(/expected i\/N/);
  });

  it('spreads users evenly and every user lands in exactly one shard', () => {
    const counts = new Array<number>(4).fill(0);
    for (let u = 0; u < 40_000; u++) counts[shardOfUser(`u${u}`, 4)]!++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(500);
  });
});
