import { describe, expect, it } from 'vitest';
import { ITEM_FEATURES, USER_FEATURES } from '../../../contracts/features.js';
import { buildAddonInput, compileAddonPlan, pickAddonsPerDrink } from './addons.js';

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
});
