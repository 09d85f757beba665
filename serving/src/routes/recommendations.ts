/**
 * POST /v1/recommendations: the store's available, in-season drinks ranked for the user by
 * the ranking model, each with a reason and add-on suggestions. Any failure on the way (Redis,
 * deadline, model, inference) answers from store-and-hour popularity with `fallback: true`.
 */
import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox';
import { parseTimestampMs } from '../../../contracts/events.js';
import type { StoreInfo } from '../../../contracts/features.js';
import type { ServingContext } from '../context.js';
import { experimentTagOf } from '../experiments/counting.js';
import { ServingError } from '../errors.js';
import { markDeadlineMissed } from '../plugins/protection.js';
import { DeadlineExceededError } from '../features/deadline.js';
import type { FeatureSnapshot, UserFeatures } from '../features/store.js';
import { FALLBACK_REASONS, rankByPopularity, type FallbackReason } from '../fallback/popularity.js';
import { inSeason } from '../ranking/context.js';
import { FULL_MENU, regionOffers, type RegionMenu } from '../menu/region-menu.js';
import { buildRankingInput, computeContextValues, sharedColumnValue } from '../ranking/plan.js';
import { explainRecommendation } from '../ranking/reasons.js';
import { recommendationJson, type AnswerMeta, type RankedDrink } from '../ranking/response.js';
import { topK } from '../ranking/topk.js';
import { addonPlanOf, buildAddonInput, pickAddonsPerDrink } from '../ranking/addons.js';
import type { FastifyRequest } from 'fastify';
import { errorResponses, StoreId, Timestamp, UserId, stringEnum } from './schemas.js';

export const RecommendationRequest = Type.Object(
  {
    userId: UserId,
    storeId: StoreId,
    context: Type.Object(
      {
        time: Timestamp,
        weather: Type.Optional(
          Type.Object({
            condition: stringEnum(['clear', 'clouds', 'rain', 'snow']),
            temperatureC: Type.Optional(Type.Number({ minimum: -60, maximum: 60 })),
          }),
        ),
        channel: Type.Optional(stringEnum(['app', 'web', 'kiosk', 'drive_thru'])),
      },
      { additionalProperties: false },
    ),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 20, default: 5 })),
  },
  { additionalProperties: false },
);

const Addon = Type.Object({ itemId: Type.String(), name: Type.String(), price: Type.Number() });
export const RecommendationResponse = Type.Object({
  items: Type.Array(
    Type.Object({
      itemId: Type.String(),
      name: Type.String(),
      category: Type.String(),
      price: Type.Number(),
      score: Type.Number(),
      reason: Type.String(),
      addons: Type.Array(Addon),
    }),
  ),
  modelRevision: Type.Union([Type.String(), Type.Null()]),
  variant: Type.String(),
  fallback: Type.Boolean(),
  fallbackReason: Type.Optional(stringEnum(FALLBACK_REASONS)),
  personalization: Type.Union([Type.Literal('user'), Type.Literal('segment'), Type.Literal('popularity')]),
  featureVersion: Type.String(),
});
export type RecommendationAnswer = Static<typeof RecommendationResponse>;

/** Add-ons suggested per drink. */
const ADDONS_PER_DRINK = 2;

/** Candidate drinks and add-ons of a store on a month-day, cached per snapshot. */
interface Candidates {
  readonly drinks: number[];
  readonly addons: number[];
  /** drinks then addons: the rows of one ranking batch. */
  readonly all: number[];
  /** Row numbers of the drinks (0..drinks-1) and of the add-ons in `all`, for top-k over scores by row. */
  readonly drinkRows: Int32Array;
  readonly addonRows: Int32Array;
}
/** Per snapshot, for one regional menu at a time: candidates by store and month-day. */
const candidateCache = new WeakMap<FeatureSnapshot, { menu: number; byKey: Map<string, Candidates> }>();

/**
 * The store's menu filtered by availability and season, and by its region's menu (ADR 0014):
 * a region's unavailable items never, a region's seasonal items only in that region's stores.
 */
export function candidatesFor(
  snap: FeatureSnapshot,
  store: StoreInfo,
  monthDay: string,
  menu: RegionMenu = FULL_MENU,
): Candidates {
  let perSnap = candidateCache.get(snap);
  if (!perSnap || perSnap.menu !== menu.serial) {
    perSnap = { menu: menu.serial, byKey: new Map() };
    candidateCache.set(snap, perSnap);
  }
  const key = `${store.id}|${monthDay}`;
  const hit = perSnap.byKey.get(key);
  if (hit) return hit;
  const unavailable = new Set(store.unavailable);
  const regional = menu.forStore(store.id);
  const drinks: number[] = [];
  const addons: number[] = [];
  snap.catalog.items.forEach((it, i) => {
    if (unavailable.has(it.id)) return;
    const offered = regionOffers(menu, regional, it.id);
    if (offered === 'no' || (offered === 'catalog' && !inSeason(monthDay, it.season))) return;
    (it.kind === 'drink' ? drinks : addons).push(i);
  });
  const c = {
    drinks,
    addons,
    all: [...drinks, ...addons],
    drinkRows: Int32Array.from(drinks, (_, r) => r),
    addonRows: Int32Array.from(addons, (_, r) => drinks.length + r),
  };
  perSnap.byKey.set(key, c);
  return c;
}

export const recommendationRoutes: FastifyPluginAsyncTypebox<{ ctx: ServingContext }> = async (
  app,
  { ctx },
) => {
  /** Per-drink add-ons from the add-on model, or undefined (no model, or it failed: shared list). */
  const addonsPerDrink = async (
    drinks: number[],
    addonCandidates: readonly number[],
    user: Float32Array,
    items: Float32Array,
    req: FastifyRequest,
  ): Promise<number[][] | undefined> => {
    const m = ctx.models.acquire('addon-attach');
    if (m) ctx.metrics.answeredBy(req, 'addon-attach', m);
    if (!m || drinks.length === 0 || addonCandidates.length === 0) {
      m?.release();
      return undefined;
    }
    try {
      const plan = addonPlanOf(m.meta.inputs[0]!.features);
      // The rows are written straight into the turn's batch input, like the ranking's.
      const out = await m.runWith(drinks.length * addonCandidates.length, (into) =>
        buildAddonInput(plan, items, user, drinks, addonCandidates, into),
      );
      return pickAddonsPerDrink(out, drinks, addonCandidates, ADDONS_PER_DRINK);
    } catch (err) {
      req.log.warn({ err: (err as Error).message }, 'add-on inference failed; shared add-ons used');
      return undefined;
    } finally {
      m.release();
    }
  };
  app.post(
    '/v1/recommendations',
    {
      schema: {
        summary: 'Ranked drinks with reasons and add-on suggestions for a user at a store',
        body: RecommendationRequest,
        response: { 200: RecommendationResponse, ...errorResponses },
      },
    },
    async (req, reply) => {
      const body = req.body;
      const limit = body.limit ?? 5;
      const snap = ctx.features.snapshot;
      if (!snap) throw new ServingError('NOT_READY', undefined, { retryAfterSeconds: 1 });
      const store = snap.stores.get(body.storeId);
      if (!store)
        throw new ServingError('UNKNOWN_STORE', `unknown store ${body.storeId}`, { field: 'storeId' });
      const local = ctx.localTime.resolve(parseTimestampMs(body.context.time), store.timezone);
      const cand = candidatesFor(snap, store, local.monthDay, ctx.regionMenu.current);
      const popularity = snap.popularity.get(store.id) ?? snap.globalPopularity;
      const nItems = snap.catalog.items.length;

      let reason: FallbackReason | undefined;
      let user: UserFeatures | undefined;
      /** Scores by row of cand.all (a view of the batch's output, valid during this request). */
      let scores: Float32Array | undefined;
      let revision: string | null = null;
      const model = ctx.models.acquire('drink-ranking');
      if (model) ctx.metrics.answeredBy(req, 'drink-ranking', model);
      try {
        const state = model && ctx.ranking.get(model);
        if (!model || !state) {
          reason = 'model_unavailable';
        } else {
          try {
            user = await ctx.features.userFeatures(snap, body.userId, ctx.featureDeadlineMs);
          } catch (err) {
            reason = err instanceof DeadlineExceededError ? 'deadline_exceeded' : 'redis_unavailable';
            if (reason === 'deadline_exceeded') markDeadlineMissed(req);
          }
          if (user) {
            const contextValues = computeContextValues({
              hour: local.hour,
              weekday: local.weekday,
              temperatureC: body.context.weather?.temperatureC,
              condition: body.context.weather?.condition,
              channel: body.context.channel,
            });
            const rankingBatch = {
              plan: state.plan,
              catalog: snap.catalog.items,
              items: snap.items,
              user: user.values,
              context: contextValues,
              popularity,
              hour: local.hour,
              candidates: cand.all,
            };
            try {
              // The rows are written straight into the turn's batch input.
              const out = await model.runWith(cand.all.length, (into) =>
                buildRankingInput(rankingBatch, into),
              );
              // One score per row: the batcher checks it (engine.ts).
              scores = out;
              revision = model.revision;
              // Monitored features are user and context values: the same on every row. The
              // request is compared with training requests of its own context (ADR 0010).
              state.drift.observe(state.drift.contextOf(store.timezone, local.hour, local.weekday), (i) =>
                sharedColumnValue(rankingBatch, state.monitored[i]!.column),
              );
              state.drift.observeScores(out);
            } catch (err) {
              req.log.warn({ err: (err as Error).message }, 'ranking inference failed');
              reason = 'inference_error';
            }
          }
        }
      } finally {
        model?.release();
      }

      // A user of an experiment is exposed by their first recommendation; the covariates are
      // their batch features (none for a user without history). A failed count never fails the answer.
      const tag = experimentTagOf(req.headers);
      if (tag) {
        await ctx.experiments
          .expose(tag, body.userId, user?.source === 'user' ? user.values : undefined)
          .catch((err: unknown) =>
            req.log.warn({ err: (err as Error).message }, 'experiment exposure not counted'),
          );
      }

      const catalog = snap.catalog.items;
      const meanPop =
        cand.drinks.reduce((s, i) => s + (popularity[local.hour * nItems + i] ?? 0), 0) /
        (cand.drinks.length || 1);
      // The answer is assembled as JSON text from per-item fragments (ranking/response.ts);
      // fastify sends a string with a JSON content type as is. Its shape is the 200 schema.
      const send = (drinks: RankedDrink[], meta: AnswerMeta) =>
        reply
          .type('application/json; charset=utf-8')
          .send(recommendationJson(catalog, drinks, meta) as unknown as RecommendationAnswer);

      if (!scores || reason) {
        const why = reason ?? 'inference_error';
        ctx.metrics.fallbacks.inc({
          ...ctx.metrics.labelsFor(req),
          route: '/v1/recommendations',
          reason: why,
        });
        const drinks = rankByPopularity(popularity, local.hour, nItems, cand.drinks, limit);
        const addons = rankByPopularity(popularity, local.hour, nItems, cand.addons, ADDONS_PER_DRINK);
        return send(
          drinks.map((i) => ({
            index: i,
            score: popularity[local.hour * nItems + i] ?? 0,
            reason: catalog[i]!.season
              ? 'Seasonal special, available for a limited time'
              : 'Popular at this store at this time of day',
            addons,
          })),
          {
            modelRevision: null,
            variant: ctx.variant,
            fallback: true,
            fallbackReason: why,
            personalization: 'popularity',
            featureVersion: snap.version,
          },
        );
      }

      // Labelled like the request: with the revision that answered it, not one swapped in since.
      const labels = ctx.metrics.labelsFor(req);
      if (user!.source === 'segment') ctx.metrics.coldStarts.inc(labels);
      const personalized = user!.source === 'user';
      const drinkRows = topK(scores, cand.drinkRows, limit);
      const drinks = drinkRows.map((r) => cand.all[r]!);
      for (const r of drinkRows) ctx.metrics.scores.observe(labels, scores[r]!);
      const addons = topK(scores, cand.addonRows, ADDONS_PER_DRINK).map((r) => cand.all[r]!);
      const perDrink = await addonsPerDrink(drinks, cand.addons, user!.values, snap.items, req);
      return send(
        drinks.map((i, k) => ({
          index: i,
          score: scores[drinkRows[k]!]!,
          reason: explainRecommendation({
            item: catalog[i]!,
            itemIndex: i,
            user: user!.values,
            personalized,
            hourPopularity: popularity[local.hour * nItems + i] ?? 0,
            meanHourPopularity: meanPop,
          }),
          addons: perDrink?.[k] ?? addons,
        })),
        {
          modelRevision: revision,
          variant: ctx.variant,
          fallback: false,
          personalization: user!.source,
          featureVersion: snap.version,
        },
      );
    },
  );
};
