import { describe, expect, it } from 'vitest';
import { USER_FEATURES } from '../../../contracts/features.js';
import { buildCatalog } from '../../test/fixtures.js';
import { buildOffers, heuristicChurnRisk, pointsCost, riskBand } from './offers.js';

const user = (recency: number, frequency: number) => {
  const v = new Float32Array(USER_FEATURES.length);
  v[USER_FEATURES.indexOf('recency_days')] = recency;
  v[USER_FEATURES.indexOf('frequency_30d')] = frequency;
  return v;
};

describe('offers', () => {
  const drinks = buildCatalog(6, 0).items;
  it('churn risk rises with days since the last order and falls with frequency', () => {
    expect(riskBand(heuristicChurnRisk(user(2, 12)))).toBe('low');
    expect(riskBand(heuristicChurnRisk(user(45, 1)))).toBe('high');
    expect(heuristicChurnRisk(user(20, 2))).toBeGreaterThan(heuristicChurnRisk(user(20, 8)));
  });
  it('high risk gets a win-back discount on a favorite, medium gets bonus points, newcomers a welcome', () => {
    const fav = [drinks[2]!];
    expect(buildOffers({ risk: 0.8, points: 0, known: true, favorites: fav, popular: [] })[0]).toMatchObject({
      kind: 'win_back',
      itemId: 'drink-2',
      discountPct: 20,
    });
    expect(buildOffers({ risk: 0.4, points: 0, known: true, favorites: fav, popular: [] })[0]!.kind).toBe(
      'bonus_points',
    );
    expect(buildOffers({ risk: 0.1, points: 0, known: true, favorites: fav, popular: [] })).toEqual([]);
    expect(buildOffers({ risk: 0, points: 0, known: false, favorites: [], popular: [] })[0]!.kind).toBe(
      'welcome',
    );
  });
  it('suggests at most two redemptions the user can afford', () => {
    const offers = buildOffers({
      risk: 0.1,
      points: 200,
      known: true,
      favorites: drinks.slice(0, 2),
      popular: drinks,
    });
    const redeem = offers.filter((o) => o.kind === 'redeem');
    expect(redeem).toHaveLength(2);
    for (const o of redeem) expect(o.pointsCost).toBeLessThanOrEqual(200);
    expect(redeem[0]!.itemId).toBe('drink-0');
    expect(pointsCost(drinks[0]!)).toBe(150);
  });
});
