/**
 * The ranking model's input row, compiled once per model from the feature names in its
 * metadata. A row describes one (user, candidate item) pair in the request's context; the
 * vocabulary below is every feature serving can compute, and a model naming anything else is
 * refused at load time instead of failing on traffic.
 */
import { ITEM_FEATURES, USER_FEATURES, type CatalogItem } from '../../../contracts/features.js';

/** Context features computed from the request. */
export const CONTEXT_FEATURES = [
  'hour_sin', // sin(2π·localHour/24)
  'hour_cos',
  'is_weekend', // store-local Saturday or Sunday
  'temperature_c', // context.weather.temperatureC, 15 when absent
  'is_precipitation', // weather condition rain or snow
  'channel_app',
  'channel_web',
  'channel_kiosk',
] as const;

/** Features of the (user, item) pair. */
export const CROSS_FEATURES = [
  'category_affinity', // the user's share of the item's category (addon: addon_attach_rate)
  'recently_ordered', // 1 when the item is among the user's five most recent drinks
  'store_hour_popularity', // the item's share of this store's drinks at this local hour
] as const;

export type ContextFeature = (typeof CONTEXT_FEATURES)[number];
export type CrossFeature = (typeof CROSS_FEATURES)[number];

/** Where one input column comes from. */
export type Column =
  | { readonly kind: 'user'; readonly index: number }
  | { readonly kind: 'item'; readonly index: number }
  | { readonly kind: 'context'; readonly name: ContextFeature }
  | { readonly kind: 'cross'; readonly name: CrossFeature };

/** A compiled input layout. */
export interface RankingPlan {
  readonly columns: readonly Column[];
  /** Columns that change per request (user, context, cross), by position. */
  readonly dynamic: readonly number[];
}

/** Every feature name a ranking model may use. */
export const RANKING_VOCABULARY: readonly string[] = [
  ...USER_FEATURES,
  ...ITEM_FEATURES,
  ...CONTEXT_FEATURES,
  ...CROSS_FEATURES,
];

/** Compiles feature names into a plan; throws naming the first feature serving cannot compute. */
export function compileRankingPlan(features: readonly string[]): RankingPlan {
  const columns = features.map((name): Column => {
    const u = (USER_FEATURES as readonly string[]).indexOf(name);
    if (u >= 0) return { kind: 'user', index: u };
    const it = (ITEM_FEATURES as readonly string[]).indexOf(name);
    if (it >= 0) return { kind: 'item', index: it };
    if ((CONTEXT_FEATURES as readonly string[]).includes(name))
      return { kind: 'context', name: name as ContextFeature };
    if ((CROSS_FEATURES as readonly string[]).includes(name))
      return { kind: 'cross', name: name as CrossFeature };
    throw new RangeError(`feature ${name} is not one serving can compute`);
  });
  const dynamic = columns.flatMap((c, i) => (c.kind === 'item' ? [] : [i]));
  return { columns, dynamic };
}

/** The request's context, already resolved to store-local time. */
export interface RankingContext {
  readonly hour: number;
  readonly weekday: number;
  readonly temperatureC?: number;
  readonly condition?: string;
  readonly channel?: string;
}

/** Values of the context features for one request. */
export function computeContextValues(ctx: RankingContext): Record<ContextFeature, number> {
  const angle = (2 * Math.PI * ctx.hour) / 24;
  return {
    hour_sin: Math.sin(angle),
    hour_cos: Math.cos(angle),
    is_weekend: ctx.weekday === 0 || ctx.weekday === 6 ? 1 : 0,
    temperature_c: ctx.temperatureC ?? 15,
    is_precipitation: ctx.condition === 'rain' || ctx.condition === 'snow' ? 1 : 0,
    channel_app: ctx.channel === 'app' ? 1 : 0,
    channel_web: ctx.channel === 'web' ? 1 : 0,
    channel_kiosk: ctx.channel === 'kiosk' ? 1 : 0,
  };
}

const CATEGORY_COLUMN: Record<CatalogItem['category'], number> = {
  hot: USER_FEATURES.indexOf('cat_hot'),
  iced: USER_FEATURES.indexOf('cat_iced'),
  blended: USER_FEATURES.indexOf('cat_blended'),
  energy: USER_FEATURES.indexOf('cat_energy'),
  addon: USER_FEATURES.indexOf('addon_attach_rate'),
};
const RECENT_COLUMNS = [1, 2, 3, 4, 5].map((i) => USER_FEATURES.indexOf(`recent_${i}` as 'recent_1'));

/** The user's share of `item`'s category. */
export function categoryAffinity(user: ArrayLike<number>, item: CatalogItem): number {
  return user[CATEGORY_COLUMN[item.category]] ?? 0;
}

/** Whether catalog index `itemIndex` is among the user's recent drinks. */
export function recentlyOrdered(user: ArrayLike<number>, itemIndex: number): boolean {
  for (const c of RECENT_COLUMNS) if (user[c] === itemIndex) return true;
  return false;
}

/** Inputs of one ranking batch. */
export interface RankingBatch {
  readonly plan: RankingPlan;
  readonly catalog: readonly CatalogItem[];
  /** [items x ITEM_FEATURES] */
  readonly items: Float32Array;
  readonly user: Float32Array;
  readonly context: Record<ContextFeature, number>;
  /** This store's [24 x items] popularity. */
  readonly popularity: Float32Array;
  readonly hour: number;
  /** Catalog indices to score, one row each. */
  readonly candidates: readonly number[];
}

/** The row-major float32 input [candidates x columns] of a ranking batch. */
export function buildRankingInput(b: RankingBatch): Float32Array {
  const cols = b.plan.columns.length;
  const nItems = b.catalog.length;
  const nItemFeatures = ITEM_FEATURES.length;
  const out = new Float32Array(b.candidates.length * cols);
  // Values equal on every row are computed once.
  const shared = new Float32Array(cols);
  b.plan.columns.forEach((c, j) => {
    if (c.kind === 'user') shared[j] = b.user[c.index]!;
    else if (c.kind === 'context') shared[j] = b.context[c.name];
  });
  for (let r = 0; r < b.candidates.length; r++) {
    const i = b.candidates[r]!;
    const base = r * cols;
    for (let j = 0; j < cols; j++) {
      const c = b.plan.columns[j]!;
      switch (c.kind) {
        case 'item':
          out[base + j] = b.items[i * nItemFeatures + c.index]!;
          break;
        case 'cross':
          if (c.name === 'category_affinity') out[base + j] = categoryAffinity(b.user, b.catalog[i]!);
          else if (c.name === 'recently_ordered') out[base + j] = recentlyOrdered(b.user, i) ? 1 : 0;
          else out[base + j] = b.popularity[b.hour * nItems + i] ?? 0;
          break;
        default:
          out[base + j] = shared[j]!;
      }
    }
  }
  return out;
}
