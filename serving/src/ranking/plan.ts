/**
 * The ranking model's input row, compiled once per model from the feature names in its
 * metadata. A row describes one (user, candidate item) pair in the request's context; the
 * vocabulary below is every feature serving can compute, and a model naming anything else is
 * refused at load time instead of failing on traffic.
 */
import {
  ITEM_FEATURES,
  USER_FEATURES,
  computeClockFeatures,
  type CatalogItem,
} from '../../../contracts/features.js';

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
  // The clock features as training writes them (one formula in contracts/features.ts).
  const clock = computeClockFeatures(ctx.hour, ctx.weekday);
  return {
    hour_sin: clock.hour_sin,
    hour_cos: clock.hour_cos,
    is_weekend: clock.is_weekend,
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

/** The value a user or context column has on every row of a request (0 for other columns). */
export function sharedColumnValue(
  b: Pick<RankingBatch, 'plan' | 'user' | 'context'>,
  column: number,
): number {
  const col = b.plan.columns[column];
  if (col?.kind === 'user') return b.user[col.index] ?? 0;
  if (col?.kind === 'context') return b.context[col.name];
  return 0;
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
  /**
   * Catalog indices to score, one row each. The item columns are cached per candidates array,
   * so an array must belong to one snapshot (route code gets it from candidatesFor()).
   */
  readonly candidates: readonly number[];
}

/** Per catalog: the user column holding each item's category share. */
const categoryColumns = new WeakMap<readonly CatalogItem[], Int32Array>();

function categoryColumnsOf(catalog: readonly CatalogItem[]): Int32Array {
  let c = categoryColumns.get(catalog);
  if (!c) {
    c = Int32Array.from(catalog, (it) => CATEGORY_COLUMN[it.category]);
    categoryColumns.set(catalog, c);
  }
  return c;
}

/** Column positions by source, as typed arrays, so the per-row loop does no lookups by name. */
interface CompiledColumns {
  readonly itemCols: Int32Array;
  readonly itemIdx: Int32Array;
  readonly sharedCols: Int32Array;
  readonly affinityCol: number;
  readonly recentCol: number;
  readonly popularityCol: number;
}
const compiled = new WeakMap<RankingPlan, CompiledColumns>();

function compiledOf(plan: RankingPlan): CompiledColumns {
  let c = compiled.get(plan);
  if (c) return c;
  const itemCols: number[] = [];
  const itemIdx: number[] = [];
  const sharedCols: number[] = [];
  let affinityCol = -1;
  let recentCol = -1;
  let popularityCol = -1;
  plan.columns.forEach((col, j) => {
    if (col.kind === 'item') {
      itemCols.push(j);
      itemIdx.push(col.index);
    } else if (col.kind === 'user' || col.kind === 'context') sharedCols.push(j);
    else if (col.name === 'category_affinity') affinityCol = j;
    else if (col.name === 'recently_ordered') recentCol = j;
    else popularityCol = j;
  });
  c = {
    itemCols: Int32Array.from(itemCols),
    itemIdx: Int32Array.from(itemIdx),
    sharedCols: Int32Array.from(sharedCols),
    affinityCol,
    recentCol,
    popularityCol,
  };
  compiled.set(plan, c);
  return c;
}

/** Per candidate list and plan: the input with only the item columns filled. */
const templates = new WeakMap<readonly number[], Map<RankingPlan, Float32Array>>();

function templateOf(b: RankingBatch, c: CompiledColumns, cols: number): Float32Array {
  let perPlan = templates.get(b.candidates);
  if (!perPlan) {
    perPlan = new Map();
    templates.set(b.candidates, perPlan);
  }
  let t = perPlan.get(b.plan);
  if (t) return t;
  const nf = ITEM_FEATURES.length;
  t = new Float32Array(b.candidates.length * cols);
  for (let r = 0; r < b.candidates.length; r++) {
    const i = b.candidates[r]!;
    for (let k = 0; k < c.itemCols.length; k++)
      t[r * cols + c.itemCols[k]!] = b.items[i * nf + c.itemIdx[k]!]!;
  }
  perPlan.set(b.plan, t);
  return t;
}

/**
 * The row-major float32 input [candidates x columns] of a ranking batch, written into `into`
 * when given (it must hold at least candidates x columns values).
 */
export function buildRankingInput(b: RankingBatch, into?: Float32Array): Float32Array {
  const cols = b.plan.columns.length;
  const nItems = b.catalog.length;
  const c = compiledOf(b.plan);
  const catCol = categoryColumnsOf(b.catalog);
  const size = b.candidates.length * cols;
  const out = into ? into.subarray(0, size) : new Float32Array(size);
  // Item columns never change for a candidate list, so they are copied from a cached template.
  out.set(templateOf(b, c, cols));
  const cand = b.candidates;
  const rows = cand.length;
  // Values equal on every row (user and context features): one strided pass per column, which
  // is ~4x faster than writing them row by row (bench/serving/micro.ts).
  const { sharedCols, affinityCol, recentCol, popularityCol } = c;
  for (let k = 0; k < sharedCols.length; k++) {
    const j = sharedCols[k]!;
    const col = b.plan.columns[j]!;
    const v = col.kind === 'user' ? b.user[col.index]! : col.kind === 'context' ? b.context[col.name] : 0;
    for (let p = j; p < size; p += cols) out[p] = v;
  }
  if (affinityCol < 0 && recentCol < 0 && popularityCol < 0) return out;
  const user = b.user;
  const r1 = user[RECENT_COLUMNS[0]!];
  const r2 = user[RECENT_COLUMNS[1]!];
  const r3 = user[RECENT_COLUMNS[2]!];
  const r4 = user[RECENT_COLUMNS[3]!];
  const r5 = user[RECENT_COLUMNS[4]!];
  const popBase = b.hour * nItems;
  const pop = b.popularity;
  if (affinityCol >= 0) for (let r = 0; r < rows; r++) out[r * cols + affinityCol] = user[catCol[cand[r]!]!]!;
  if (recentCol >= 0) {
    for (let r = 0; r < rows; r++) {
      const i = cand[r]!;
      out[r * cols + recentCol] = i === r1 || i === r2 || i === r3 || i === r4 || i === r5 ? 1 : 0;
    }
  }
  if (popularityCol >= 0)
    for (let r = 0; r < rows; r++) out[r * cols + popularityCol] = pop[popBase + cand[r]!] ?? 0;
  return out;
}
