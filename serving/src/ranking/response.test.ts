import { Errors } from 'typebox/value';
import { describe, expect, it } from 'vitest';
import type { CatalogItem } from '../../../contracts/features.js';
import { RecommendationResponse } from '../routes/recommendations.js';
import { buildCatalog } from '../../test/fixtures.js';
import { recommendationJson, type AnswerMeta, type RankedDrink } from './response.js';

/** What the answer means as a plain object (the generic serialization it replaces). */
function expected(catalog: readonly CatalogItem[], drinks: RankedDrink[], meta: AnswerMeta) {
  const it = (i: number) => catalog[i]!;
  return {
    items: drinks.map((d) => ({
      itemId: it(d.index).id,
      name: it(d.index).name,
      category: it(d.index).category,
      price: it(d.index).price,
      score: Number.isFinite(d.score) ? d.score : 0,
      reason: d.reason,
      addons: d.addons.map((a) => ({ itemId: it(a).id, name: it(a).name, price: it(a).price })),
    })),
    modelRevision: meta.modelRevision,
    variant: meta.variant,
    fallback: meta.fallback,
    ...(meta.fallbackReason !== undefined ? { fallbackReason: meta.fallbackReason } : {}),
    personalization: meta.personalization,
    featureVersion: meta.featureVersion,
  };
}

describe('recommendationJson', () => {
  const base = buildCatalog(12, 4);
  // Names that need escaping, and a non-ASCII one.
  const catalog: CatalogItem[] = base.items.map((item, i) =>
    i === 2
      ? { ...item, name: 'The "Big" \\ Brew\n' }
      : i === 13
        ? { ...item, name: 'Crème brûlée syrup ☕' }
        : item,
  );

  const cases: { name: string; drinks: RankedDrink[]; meta: AnswerMeta }[] = [
    {
      name: 'model answer with per-drink add-ons',
      drinks: [
        { index: 2, score: 0.91234567, reason: 'Because you enjoy iced drinks', addons: [13, 14] },
        { index: 5, score: 1e-7, reason: 'One of your recent favorites', addons: [] },
        { index: 0, score: 0.5, reason: 'Picked for your taste', addons: [15] },
      ],
      meta: {
        modelRevision: 'a'.repeat(64),
        variant: 'canary',
        fallback: false,
        personalization: 'user',
        featureVersion: 'v2026-11-24',
      },
    },
    {
      name: 'popularity fallback with a reason and no revision',
      drinks: [
        { index: 7, score: 0.25, reason: 'Popular at this store at this time of day', addons: [12, 13] },
      ],
      meta: {
        modelRevision: null,
        variant: 'stable',
        fallback: true,
        fallbackReason: 'redis_unavailable',
        personalization: 'popularity',
        featureVersion: 'v1',
      },
    },
    {
      name: 'no drinks, and a non-finite score is written as 0',
      drinks: [],
      meta: {
        modelRevision: 'r',
        variant: 'v',
        fallback: false,
        personalization: 'segment',
        featureVersion: 'f',
      },
    },
    {
      name: 'NaN score',
      drinks: [{ index: 1, score: Number.NaN, reason: 'Picked for your taste', addons: [] }],
      meta: {
        modelRevision: 'r',
        variant: 'v',
        fallback: false,
        personalization: 'segment',
        featureVersion: 'f',
      },
    },
  ];

  for (const c of cases) {
    it(`${c.name}: parses to the same value and matches the 200 schema`, () => {
      const text = recommendationJson(catalog, c.drinks, c.meta);
      const parsed: unknown = JSON.parse(text);
      expect(parsed).toEqual(expected(catalog, c.drinks, c.meta));
      expect(Errors(RecommendationResponse, parsed)).toEqual([]);
    });
  }

  it('keeps fragments per catalog: a new catalog version with a renamed item answers with the new name', () => {
    const drinks = [{ index: 3, score: 0.5, reason: 'x', addons: [] }];
    const meta: AnswerMeta = {
      modelRevision: null,
      variant: 's',
      fallback: false,
      personalization: 'user',
      featureVersion: 'a',
    };
    const before = JSON.parse(recommendationJson(catalog, drinks, meta)) as { items: { name: string }[] };
    const renamed = catalog.map((it, i) => (i === 3 ? { ...it, name: 'Renamed' } : it));
    const after = JSON.parse(recommendationJson(renamed, drinks, meta)) as { items: { name: string }[] };
    expect(before.items[0]!.name).toBe(catalog[3]!.name);
    expect(after.items[0]!.name).toBe('Renamed');
  });
});
