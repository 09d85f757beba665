import { describe, expect, it } from 'vitest';
import { ITEM_FEATURES, USER_FEATURES } from '../../../contracts/features.js';
import { readFileSync } from 'node:fs';
import {
  addonPlanOf,
  buildAddonInput,
  compileAddonPlan,
  pickAddonsPerDrink,
  type PairColumn,
} from './addons.js';

/** The row layout written the plain way, cell by cell: what the column-wise builder must equal. */
function referenceInput(
  plan: readonly PairColumn[],
  items: Float32Array,
  user: Float32Array,
  drinks: number[],
  addons: number[],
): number[] {
  const nf = ITEM_FEATURES.length;
  const out: number[] = [];
  for (const d of drinks)
    for (const a of addons)
      for (const c of plan)
        out.push(c.kind === 'user' ? user[c.index]! : items[(c.kind === 'drink' ? d : a) * nf + c.index]!);
  return out;
}

describe('add-on pairs', () => {
  it('compiles user, drink_ and addon_ features and refuses others by name', () => {
    expect(compileAddonPlan(['addon_attach_rate', 'drink_is_iced', 'addon_price'])).toEqual([
      { kind: 'user', index: USER_FEATURES.indexOf('addon_attach_rate') },
      { kind: 'drink', index: ITEM_FEATURES.indexOf('is_iced') },
      { kind: 'addon', index: ITEM_FEATURES.indexOf('price') },
    ]);
    expect(() => compileAddonPlan(['drink_colour'])).toThrow(/drink_colour/);
  });

  it('builds one row per (drink, add-on) pair, drink-major', () => {
    const nf = ITEM_FEATURES.length;
    const items = new Float32Array(4 * nf);
    for (let i = 0; i < 4; i++) items[i * nf + ITEM_FEATURES.indexOf('price')] = 10 + i;
    const user = new Float32Array(USER_FEATURES.length);
    user[USER_FEATURES.indexOf('addon_attach_rate')] = 0.5;
    const plan = compileAddonPlan(['addon_attach_rate', 'drink_price', 'addon_price']);
    expect(Array.from(buildAddonInput(plan, items, user, [0, 1], [2, 3]))).toEqual([
      0.5, 10, 12, 0.5, 10, 13, 0.5, 11, 12, 0.5, 11, 13,
    ]);
  });

  it('picks each drink its own best add-ons', () => {
    // drink 0 prefers add-on 11, drink 1 prefers add-on 10
    expect(pickAddonsPerDrink([0.1, 0.9, 0.8, 0.2], [0, 1], [10, 11], 1)).toEqual([[11], [10]]);
  });

  it("writes the shipped add-on model's rows into a reused batch buffer exactly as cell by cell", () => {
    const meta = JSON.parse(
      readFileSync(
        new URL('../../../manifests/models/artifacts/addon-attach.meta.json', import.meta.url),
        'utf8',
      ),
    ) as { inputs: { features: string[] }[] };
    const features = meta.inputs[0]!.features;
    const plan = addonPlanOf(features);
    expect(addonPlanOf(features)).toBe(plan); // compiled once per model
    const nf = ITEM_FEATURES.length;
    const items = Float32Array.from({ length: 190 * nf }, (_, i) => Math.sin(i) * 7);
    const user = Float32Array.from({ length: USER_FEATURES.length }, (_, i) => i / 3);
    const drinks = [17, 3, 140, 99, 0];
    const addons = Array.from({ length: 40 }, (_, j) => 150 + ((j * 7) % 40));
    const into = new Float32Array(drinks.length * addons.length * plan.length + 50).fill(Number.NaN);
    const out = buildAddonInput(plan, items, user, drinks, addons, into);
    expect(out.buffer).toBe(into.buffer);
    expect(Array.from(out)).toEqual(referenceInput(plan, items, user, drinks, addons));
    expect(Number.isNaN(into[out.length])).toBe(true); // nothing written past the rows
  });

  it('picks the same add-ons from a Float32Array of scores as from an array, ties to the earlier add-on', () => {
    const scores = [0.5, 0.9, 0.5, 0.1, 0.2, 0.2, 0.7, 0.7];
    expect(pickAddonsPerDrink(scores, [0, 1], [10, 11, 12, 13], 2)).toEqual([
      [11, 10],
      [12, 13],
    ]);
    const f32 = Float32Array.from(scores);
    expect(pickAddonsPerDrink(f32, [0, 1], [10, 11, 12, 13], 2)).toEqual(
      pickAddonsPerDrink(scores, [0, 1], [10, 11, 12, 13], 2),
    );
  });
});
