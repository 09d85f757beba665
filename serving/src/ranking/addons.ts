/**
 * Per-drink add-on suggestions from an `addon-attach` model: one row per (drink, add-on) pair,
 * built from the user's features and both items' features; the model predicts the chance the
 * user adds that add-on to that drink. Without such a model every drink gets the add-ons the
 * ranking model scored highest for the user.
 */
import { ITEM_FEATURES, USER_FEATURES } from '../../../contracts/features.js';
import { topK } from './topk.js';

/** Where one add-on model input column comes from. */
export type PairColumn =
  | { readonly kind: 'user'; readonly index: number }
  | { readonly kind: 'drink'; readonly index: number }
  | { readonly kind: 'addon'; readonly index: number };

/** Compiles `drink_<item feature>`, `addon_<item feature>` and user feature names; throws on others. */
export function compileAddonPlan(features: readonly string[]): PairColumn[] {
  return features.map((name): PairColumn => {
    const u = (USER_FEATURES as readonly string[]).indexOf(name);
    if (u >= 0) return { kind: 'user', index: u };
    const m = /^(drink|addon)_(.+)$/.exec(name);
    const it = m ? (ITEM_FEATURES as readonly string[]).indexOf(m[2]!) : -1;
    if (m && it >= 0) return { kind: m[1] as 'drink' | 'addon', index: it };
    throw new RangeError(`feature ${name} is not one serving can compute for add-on pairs`);
  });
}

/** Plans by feature-name list: a model's metadata keeps its list, so each model compiles once. */
const plans = new WeakMap<readonly string[], PairColumn[]>();

/** compileAddonPlan, once per feature-name list (the request path calls this per request). */
export function addonPlanOf(features: readonly string[]): PairColumn[] {
  let p = plans.get(features);
  if (!p) {
    p = compileAddonPlan(features);
    plans.set(features, p);
  }
  return p;
}

/**
 * Row-major input [drinks x addons rows, columns]: drink-major, add-ons in the given order,
 * written into `into` when given (it must hold at least that many values). The first drink's
 * block is written column by column; every other drink's is a copy of it with its own drink
 * columns (user and add-on columns are the same in every block).
 */
export function buildAddonInput(
  plan: readonly PairColumn[],
  items: Float32Array,
  user: ArrayLike<number>,
  drinks: readonly number[],
  addons: readonly number[],
  into?: Float32Array,
): Float32Array {
  const cols = plan.length;
  const nf = ITEM_FEATURES.length;
  const nA = addons.length;
  const block = nA * cols;
  const size = drinks.length * block;
  const out = into ? into.subarray(0, size) : new Float32Array(size);
  if (size === 0) return out;
  const first = drinks[0]! * nf;
  for (let j = 0; j < cols; j++) {
    const c = plan[j]!;
    if (c.kind === 'addon') {
      for (let r = 0; r < nA; r++) out[r * cols + j] = items[addons[r]! * nf + c.index]!;
    } else {
      const v = c.kind === 'user' ? user[c.index]! : items[first + c.index]!;
      for (let p = j; p < block; p += cols) out[p] = v;
    }
  }
  for (let k = 1; k < drinks.length; k++) {
    const base = k * block;
    out.copyWithin(base, 0, block);
    for (let j = 0; j < cols; j++) {
      const c = plan[j]!;
      if (c.kind !== 'drink') continue;
      const v = items[drinks[k]! * nf + c.index]!;
      for (let p = base + j; p < base + block; p += cols) out[p] = v;
    }
  }
  return out;
}

/** For each drink, the catalog indices of its `k` best add-ons by pair score. */
export function pickAddonsPerDrink(
  scores: ArrayLike<number>,
  drinks: readonly number[],
  addons: readonly number[],
  k: number,
): number[][] {
  const n = addons.length;
  const positions = addons.map((_, j) => j);
  return drinks.map((_, r) => {
    const slice =
      scores instanceof Float32Array
        ? scores.subarray(r * n, (r + 1) * n)
        : Array.from(positions, (j) => scores[r * n + j]!);
    return topK(slice, positions, k).map((j) => addons[j]!);
  });
}
