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

/** Row-major input [drinks x addons rows, columns]: drink-major, add-ons in the given order. */
export function buildAddonInput(
  plan: readonly PairColumn[],
  items: Float32Array,
  user: ArrayLike<number>,
  drinks: readonly number[],
  addons: readonly number[],
): Float32Array {
  const cols = plan.length;
  const nf = ITEM_FEATURES.length;
  const out = new Float32Array(drinks.length * addons.length * cols);
  let row = 0;
  for (const d of drinks) {
    for (const a of addons) {
      const base = row * cols;
      for (let j = 0; j < cols; j++) {
        const c = plan[j]!;
        out[base + j] =
          c.kind === 'user' ? user[c.index]! : items[(c.kind === 'drink' ? d : a) * nf + c.index]!;
      }
      row++;
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
  const positions = addons.map((_, j) => j);
  return drinks.map((_, r) => {
    const slice = Array.from(positions, (j) => scores[r * addons.length + j]!);
    return topK(slice, positions, k).map((j) => addons[j]!);
  });
}
