import { describe, expect, it } from 'vitest';
import { ITEM_FEATURES, USER_FEATURES } from '../../../contracts/features.js';
import { buildCatalog, buildItemMatrix } from '../../test/fixtures.js';
import { inSeason, LocalTimeResolver } from './context.js';
import {
  buildRankingInput,
  categoryAffinity,
  compileRankingPlan,
  computeContextValues,
  recentlyOrdered,
} from './plan.js';
import { explainRecommendation } from './reasons.js';
import { topK } from './topk.js';
import trainedRanking from '../../../manifests/models/artifacts/drink-ranking.meta.json' with { type: 'json' };

const TRAINED_RANKING_FEATURES = trainedRanking.inputs[0]!.features;

describe('topK', () => {
  const cases: { name: string; scores: number[]; cand: number[]; k: number; want: number[] }[] = [
    { name: 'best first', scores: [0.1, 0.9, 0.5, 0.7], cand: [0, 1, 2, 3], k: 2, want: [1, 3] },
    { name: 'only candidates count', scores: [0.1, 0.9, 0.5, 0.7], cand: [0, 2], k: 3, want: [2, 0] },
    { name: 'ties keep lower index first', scores: [0.5, 0.5, 0.5], cand: [0, 1, 2], k: 2, want: [0, 1] },
    {
      name: 'NaN (unscored) is skipped',
      scores: [Number.NaN, 0.2, 0.3],
      cand: [0, 1, 2],
      k: 3,
      want: [2, 1],
    },
    { name: 'k = 0', scores: [1], cand: [0], k: 0, want: [] },
    { name: 'negative scores', scores: [-3, -1, -2], cand: [0, 1, 2], k: 3, want: [1, 2, 0] },
  ];
  for (const c of cases) it(c.name, () => expect(topK(c.scores, c.cand, c.k)).toEqual(c.want));

  it('agrees with a full sort on random inputs', () => {
    for (let t = 0; t < 50; t++) {
      const scores = Array.from({ length: 200 }, () => Math.random());
      const cand = Array.from({ length: 200 }, (_, i) => i).filter(() => Math.random() < 0.8);
      const sorted = [...cand].sort((a, b) => scores[b]! - scores[a]!).slice(0, 7);
      expect(topK(scores, cand, 7)).toEqual(sorted);
    }
  });
});

describe('season windows', () => {
  const cases: [string, { start: string; end: string } | undefined, boolean][] = [
    ['06-15', undefined, true],
    ['06-15', { start: '06-01', end: '08-31' }, true],
    ['09-01', { start: '06-01', end: '08-31' }, false],
    ['12-24', { start: '11-01', end: '01-31' }, true],
    ['01-31', { start: '11-01', end: '01-31' }, true],
    ['02-01', { start: '11-01', end: '01-31' }, false],
  ];
  for (const [day, season, want] of cases) {
    it(`${day} in ${JSON.stringify(season)} → ${want}`, () => expect(inSeason(day, season)).toBe(want));
  }
});

describe('store-local time', () => {
  it('resolves hour, weekday and month-day in the store timezone', () => {
    const r = new LocalTimeResolver();
    // 2026-11-24T03:30Z is Monday 22:30 in New York and Monday 19:30 in Los Angeles.
    const t = Date.parse('2026-11-24T03:30:00Z');
    expect(r.resolve(t, 'America/New_York')).toEqual({ hour: 22, weekday: 1, monthDay: '11-23' });
    expect(r.resolve(t, 'America/Los_Angeles')).toEqual({ hour: 19, weekday: 1, monthDay: '11-23' });
    expect(r.resolve(t, 'Not/AZone')).toEqual({ hour: 3, weekday: 2, monthDay: '11-24' });
  });
});

describe('ranking plan', () => {
  it('refuses a model asking for a feature serving cannot compute, naming it', () => {
    expect(() => compileRankingPlan(['price', 'favourite_colour'])).toThrow(/favourite_colour/);
  });

  it('builds one row per candidate from user, item, context and cross features', () => {
    const catalog = buildCatalog(8, 2);
    const items = buildItemMatrix(catalog);
    const plan = compileRankingPlan([
      'cat_iced',
      'price',
      'is_weekend',
      'category_affinity',
      'recently_ordered',
      'store_hour_popularity',
    ]);
    const user = new Float32Array(USER_FEATURES.length);
    user[USER_FEATURES.indexOf('cat_iced')] = 0.7;
    user[USER_FEATURES.indexOf('cat_hot')] = 0.3;
    user[USER_FEATURES.indexOf('recent_1')] = 5;
    const pop = new Float32Array(24 * 10);
    pop[9 * 10 + 5] = 0.25;
    const input = buildRankingInput({
      plan,
      catalog: catalog.items,
      items,
      user,
      context: computeContextValues({ hour: 9, weekday: 6 }),
      popularity: pop,
      hour: 9,
      candidates: [4, 5],
    });
    // drink-4 is hot (i%4=0), drink-5 is iced.
    expect(Array.from(input)).toEqual(
      [0.7, 5, 1, expect.closeTo(0.3, 6), 0, 0, 0.7, 5.5, 1, expect.closeTo(0.7, 6), 1, 0.25].map((x) =>
        typeof x === 'number' ? expect.closeTo(x, 5) : x,
      ),
    );
  });

  it('fills a reused buffer exactly like a row-by-row reference, for the shipped ranking model', () => {
    const catalog = buildCatalog(150, 40);
    const items = buildItemMatrix(catalog);
    const plan = compileRankingPlan(TRAINED_RANKING_FEATURES);
    const candidates = catalog.items.map((_, i) => i).filter((i) => i % 7 !== 3);
    const pop = Float32Array.from({ length: 24 * catalog.items.length }, (_, i) => (i % 13) / 13);
    const buffer = new Float32Array(candidates.length * plan.columns.length + 50).fill(-99);
    for (const [seed, hour] of [
      [1, 8],
      [2, 15],
      [3, 23],
    ] as const) {
      const user = Float32Array.from(USER_FEATURES, (_, j) => ((seed * 7 + j) % 11) / 10);
      user[USER_FEATURES.indexOf('recent_2')] = candidates[seed * 5]!;
      const context = computeContextValues({ hour, weekday: seed, temperatureC: seed * 4, channel: 'web' });
      const batch = { plan, catalog: catalog.items, items, user, context, popularity: pop, hour, candidates };
      const got = buildRankingInput(batch, buffer);
      const want = candidates.flatMap((i) =>
        plan.columns.map((col) => {
          const item = catalog.items[i]!;
          if (col.kind === 'user') return user[col.index]!;
          if (col.kind === 'item') return items[i * ITEM_FEATURES.length + col.index]!;
          if (col.kind === 'context') return context[col.name];
          if (col.name === 'category_affinity') return categoryAffinity(user, item);
          if (col.name === 'recently_ordered') return recentlyOrdered(user, i) ? 1 : 0;
          return pop[hour * catalog.items.length + i]!;
        }),
      );
      expect(Array.from(got)).toEqual(Array.from(Float32Array.from(want)));
    }
  });
});

describe('reasons', () => {
  const catalog = buildCatalog(8, 0);
  const user = new Float32Array(USER_FEATURES.length).fill(-1);
  user[USER_FEATURES.indexOf('cat_iced')] = 0.6;
  user[USER_FEATURES.indexOf('recent_2')] = 3;
  const base = { user, personalized: true, hourPopularity: 0.1, meanHourPopularity: 0.1 };
  it('prefers the user history, then season, then taste, then the hour', () => {
    expect(explainRecommendation({ ...base, item: catalog.items[3]!, itemIndex: 3 })).toMatch(
      /recent favorites/,
    );
    expect(explainRecommendation({ ...base, item: catalog.items[5]!, itemIndex: 5 })).toMatch(/iced drinks/);
    expect(
      explainRecommendation({ ...base, item: catalog.items[4]!, itemIndex: 4, hourPopularity: 0.3 }),
    ).toMatch(/this time of day/);
    expect(explainRecommendation({ ...base, item: catalog.items[4]!, itemIndex: 4 })).toBe(
      'Picked for your taste',
    );
    expect(
      explainRecommendation({ ...base, personalized: false, item: catalog.items[3]!, itemIndex: 3 }),
    ).toBe('Popular with new customers');
  });
});
