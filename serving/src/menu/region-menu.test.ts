import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RegionMenuConfig } from '../../../contracts/region-menu.js';
import type { FeatureSnapshot } from '../features/store.js';
import { candidatesFor } from '../routes/recommendations.js';
import { buildCatalog, buildStores } from '../../test/fixtures.js';
import { boundByCapacity, estimateMinutesFromQueue, type PickupFeature } from '../pickup/estimate.js';
import { buildRegionMenu, FULL_MENU, parseRegionMenu, RegionMenuFile } from './region-menu.js';

const catalog = buildCatalog(30, 4);
const stores = buildStores(3);
const snap = {
  version: 'v1',
  catalog,
  indexById: new Map(catalog.items.map((it) => [it.id, it.index])),
  stores: new Map(stores.map((s) => [s.id, s])),
} as unknown as FeatureSnapshot;
const config: RegionMenuConfig = {
  version: 1,
  model: 'drinks',
  regions: [
    // drink-19 is a Nov-Jan item in the catalog; drink-29 too, listed by no region.
    { name: 'north', stores: ['store-0'], seasonal: ['drink-19'], unavailable: ['drink-4', 'addon-1'] },
    { name: 'south', stores: ['store-2'], seasonal: [], unavailable: [], drinksPerHourPerStore: 30 },
  ],
};
const ids = (store: number, monthDay: string, menu = buildRegionMenu(config)) =>
  candidatesFor(snap, stores[store]!, monthDay, menu).all.map((i) => catalog.items[i]!.id);

describe('candidates with regional menus', () => {
  it("a region's unavailable item is never a candidate in its stores, and still is elsewhere", () => {
    expect(ids(0, '07-15')).not.toContain('drink-4');
    expect(ids(0, '07-15')).not.toContain('addon-1');
    expect(ids(2, '07-15')).toContain('drink-4');
    expect(ids(2, '07-15')).toContain('addon-1');
  });

  it("a region's seasonal item is offered only in that region's stores, in or out of the catalog's season", () => {
    expect(ids(0, '07-15')).toContain('drink-19');
    expect(ids(0, '12-15')).toContain('drink-19');
    for (const md of ['07-15', '12-15']) expect(ids(2, md)).not.toContain('drink-19');
    // Seasonal items no region names keep the catalog's window everywhere.
    expect(ids(0, '07-15')).not.toContain('drink-29');
    expect(ids(2, '12-15')).toContain('drink-29');
  });

  it('the full menu (no file) changes nothing; a new menu is not answered from the old cache', () => {
    expect(ids(0, '07-15', FULL_MENU)).toContain('drink-4');
    expect(ids(0, '07-15')).not.toContain('drink-4');
    expect(ids(0, '07-15', FULL_MENU)).toContain('drink-4');
  });

  it('unavailable wins over seasonal; a store in two regions gets both menus and the smaller capacity', () => {
    const menu = buildRegionMenu({
      version: 1,
      model: 'drinks',
      regions: [
        {
          name: 'a',
          stores: ['store-0'],
          seasonal: ['drink-19'],
          unavailable: [],
          drinksPerHourPerStore: 40,
        },
        {
          name: 'b',
          stores: ['store-0'],
          seasonal: [],
          unavailable: ['drink-19'],
          drinksPerHourPerStore: 25,
        },
      ],
    });
    expect(ids(0, '12-15', menu)).not.toContain('drink-19');
    expect(menu.forStore('store-0')).toMatchObject({ regions: ['a', 'b'], drinksPerHour: 25 });
  });
});

describe('parseRegionMenu', () => {
  it.each([
    ['not JSON', '{', /^not JSON/],
    ['wrong version', JSON.stringify({ ...config, version: 2 }), /version: must be 1/],
    [
      'stores not a list',
      JSON.stringify({ ...config, regions: [{ ...config.regions[0], stores: 'store-0' }] }),
      /regions\[0\]\.stores/,
    ],
    [
      'capacity 0',
      JSON.stringify({ ...config, regions: [{ ...config.regions[1], drinksPerHourPerStore: 0 }] }),
      /regions\[0\]\.drinksPerHourPerStore/,
    ],
  ])('%s: refused, naming the field', (_, text, why) => {
    const r = parseRegionMenu(text);
    expect('error' in r && r.error).toMatch(why);
  });
});

describe('RegionMenuFile', () => {
  it('missing or bad file: the full menu, said in the log; a good file replaces it on the next read', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'crema-menu-'));
    const path = join(dir, 'regions.json');
    const logs: string[] = [];
    const log = {
      warn: (_: object, m: string) => logs.push(`warn ${m}`),
      info: (_: object, m: string) => logs.push(`info ${m}`),
    };
    const states: string[] = [];
    const f = new RegionMenuFile({ path, log });
    f.subscribe((s) => states.push(s));
    try {
      await f.refresh();
      expect(f.current).toBe(FULL_MENU);
      await writeFile(path, JSON.stringify(config));
      await f.refresh();
      expect(f.current.forStore('store-0')?.unavailable.has('drink-4')).toBe(true);
      await writeFile(path, '{"version": 1, "model": "drinks", "regions": "all"}');
      await f.refresh();
      expect(f.current).toBe(FULL_MENU);
      expect(states).toEqual(['missing', 'ok', 'invalid']);
      expect(logs).toEqual([
        'warn no regional menu file: serving the full menu',
        'info regional menu loaded',
        'warn regional menu file unusable: serving the full menu',
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('boundByCapacity', () => {
  const f = (queue: number, prepLoad: number): Record<PickupFeature, number> => ({
    queue,
    prep_load: prepLoad,
    order_items: 1,
    order_complexity: 2.5,
    capacity_per_hour: 120,
    hour_sin: 0,
    hour_cos: 1,
    is_weekend: 0,
  });
  const band = { below: 2, above: 3 };

  it('a store at capacity: an estimate sooner than it can make the drinks moves to exactly that bound', () => {
    // 20 drinks ahead plus this one at 30 an hour: 42 minutes + 1 to hand over.
    const r = boundByCapacity(7, band, f(20, 50), 30);
    expect(r).toEqual({ minutes: 43, band: { below: 0, above: 3 }, limited: true });
    // Over capacity (a longer queue): later still, by the same rule.
    expect(boundByCapacity(7, band, f(40, 100), 30).minutes).toBe(83);
    expect(r.minutes).toBe(estimateMinutesFromQueue({ ...f(20, 50), capacity_per_hour: 30 }));
  });

  it('below capacity: unchanged, and the early edge of the band never before the bound', () => {
    expect(boundByCapacity(7, band, f(0, 0), 30)).toEqual({
      minutes: 7,
      band: { below: 2, above: 3 },
      limited: false,
    });
    expect(boundByCapacity(7, band, f(2, 5), 30).band.below).toBe(0);
  });
});
