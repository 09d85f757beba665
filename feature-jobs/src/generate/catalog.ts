/** The synthetic menu: ~150 drinks in four categories and ~40 add-ons, deterministic by seed. */
import type { Catalog, CatalogItem } from '../../../contracts/features.js';
import { Rng, mixSeed } from '../common/rng.js';

type DrinkCategory = 'hot' | 'iced' | 'blended' | 'energy';
export const DRINK_CATEGORIES: readonly DrinkCategory[] = ['hot', 'iced', 'blended', 'energy'];

const BASES: Record<DrinkCategory, readonly string[]> = {
  hot: [
    'Drip Coffee',
    'Americano',
    'Latte',
    'Cappuccino',
    'Flat White',
    'Mocha',
    'Macchiato',
    'Chai Latte',
    'Hot Chocolate',
    'Cortado',
    'Matcha Latte',
    'London Fog',
  ],
  iced: [
    'Iced Coffee',
    'Cold Brew',
    'Iced Latte',
    'Iced Mocha',
    'Iced Americano',
    'Nitro Cold Brew',
    'Iced Chai',
    'Iced Tea',
    'Iced Matcha',
    'Shaken Espresso',
  ],
  blended: ['Frappe', 'Smoothie', 'Freeze', 'Shake', 'Blended Cream'],
  energy: ['Energy Refresher', 'Sparkling Energy', 'Rebel', 'Lemonade Charge', 'Guarana Fizz'],
};
const FLAVOURS = [
  'Classic',
  'Vanilla',
  'Caramel',
  'Hazelnut',
  'Mocha',
  'Coconut',
  'Honey',
  'Toffee',
  'Berry',
  'Cinnamon',
  'Mint',
  'Lavender',
  'Salted Caramel',
  'Maple',
];
const COUNTS: Record<DrinkCategory, number> = { hot: 50, iced: 45, blended: 30, energy: 25 };
const BASE_COMPLEXITY: Record<DrinkCategory, number> = { hot: 2, iced: 2, blended: 4, energy: 2 };

/** Seasonal windows; the catalog marks ~10% of drinks with one of them. */
export const SEASONS = [
  { name: 'Pumpkin Spice', start: '09-01', end: '11-30' },
  { name: 'Peppermint', start: '11-15', end: '01-10' },
  { name: 'Summer Berry', start: '06-01', end: '08-31' },
  { name: 'Spring Blossom', start: '03-15', end: '05-15' },
] as const;

const ADDONS = [
  'Extra Shot',
  'Oat Milk',
  'Almond Milk',
  'Soy Milk',
  'Coconut Milk',
  'Vanilla Syrup',
  'Caramel Syrup',
  'Hazelnut Syrup',
  'Sugar-Free Vanilla',
  'Whipped Cream',
  'Caramel Drizzle',
  'Mocha Drizzle',
  'Cold Foam',
  'Sweet Cream',
  'Cinnamon Dust',
  'Boba',
  'Protein Boost',
  'Collagen',
  'Honey',
  'Extra Ice',
  'Light Ice',
  'Decaf Shot',
  'Lavender Syrup',
  'Brown Sugar Syrup',
  'Toffee Syrup',
  'Peppermint Syrup',
  'Pumpkin Syrup',
  'Chocolate Chips',
  'Cookie Crumble',
  'Sprinkles',
  'Matcha Shot',
  'Chai Shot',
  'Energy Shot',
  'Lemon Splash',
  'Berry Puree',
  'Mango Puree',
  'Strawberry Puree',
  'Salted Foam',
  'Banana',
  'Peanut Butter',
];

/** Builds the menu: drinks first (indices 0..drinks-1), then add-ons. */
export function buildCatalog(seed: number): Catalog {
  const rng = new Rng(mixSeed(seed, 1));
  const items: CatalogItem[] = [];
  for (const cat of DRINK_CATEGORIES) {
    const bases = BASES[cat];
    for (let i = 0; i < COUNTS[cat]; i++) {
      const base = bases[i % bases.length]!;
      const flavour = FLAVOURS[Math.floor(i / bases.length) % FLAVOURS.length]!;
      const seasonal = rng.next() < 0.1 ? SEASONS[rng.int(SEASONS.length)] : undefined;
      const name = `${seasonal ? seasonal.name : flavour} ${base}`;
      const index = items.length;
      items.push({
        id: `d${String(index).padStart(3, '0')}`,
        index,
        name,
        kind: 'drink',
        category: cat,
        price: Math.round((4.4 + rng.next() * 2.8 + (cat === 'blended' ? 0.6 : 0)) * 20) / 20,
        prepComplexity: Math.max(
          1,
          Math.min(5, BASE_COMPLEXITY[cat] + rng.int(3) - (base === 'Drip Coffee' ? 1 : 0)),
        ),
        ...(seasonal ? { season: { start: seasonal.start, end: seasonal.end } } : {}),
      });
    }
  }
  for (const name of ADDONS) {
    const index = items.length;
    items.push({
      id: `a${String(index).padStart(3, '0')}`,
      index,
      name,
      kind: 'addon',
      category: 'addon',
      price: Math.round((0.5 + rng.next() * 0.75) * 20) / 20,
      prepComplexity: 1,
    });
  }
  return { items };
}

/** True when `item` is on sale on the given UTC date (seasonal windows may wrap the year end). */
export function inSeason(item: CatalogItem, date: Date): boolean {
  if (!item.season) return true;
  const md = `${String(date.getUTCMonth() + 1).padStart(2, '0')}-${String(date.getUTCDate()).padStart(2, '0')}`;
  const { start, end } = item.season;
  return start <= end ? md >= start && md <= end : md >= start || md <= end;
}

/** Counts of drinks and add-ons. */
export function catalogCounts(c: Catalog): { drinks: number; addons: number } {
  const drinks = c.items.filter((i) => i.kind === 'drink').length;
  return { drinks, addons: c.items.length - drinks };
}
