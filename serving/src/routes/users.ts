/**
 * GET /v1/users/{id}/offers: loyalty offers from churn risk and points.
 * DELETE /v1/users/{id}: erases the user's data (bearer token required).
 */
import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox';
import { KEYS, USER_FEATURES, type CatalogItem } from '../../../contracts/features.js';
import type { ServingContext } from '../context.js';
import { ServingError } from '../errors.js';
import { markDeadlineMissed } from '../plugins/protection.js';
import { DeadlineExceededError, withDeadline } from '../features/deadline.js';
import { eraseUser } from '../features/erase.js';
import { FALLBACK_REASONS, rankByPopularity, type FallbackReason } from '../fallback/popularity.js';
import { buildOffers, heuristicChurnRisk, riskBand } from '../offers/offers.js';
import { errorResponses, StoreId, UserId, stringEnum, requireBearer } from './schemas.js';

const OfferSchema = Type.Object({
  kind: stringEnum(['win_back', 'bonus_points', 'redeem', 'welcome']),
  title: Type.String(),
  itemId: Type.Optional(Type.String()),
  discountPct: Type.Optional(Type.Number()),
  pointsMultiplier: Type.Optional(Type.Number()),
  pointsCost: Type.Optional(Type.Number()),
});

export const OffersResponse = Type.Object({
  churnRisk: Type.Union([Type.Number(), Type.Null()]),
  riskBand: Type.Union([
    Type.Literal('low'),
    Type.Literal('medium'),
    Type.Literal('high'),
    Type.Literal('unknown'),
  ]),
  points: Type.Number(),
  offers: Type.Array(OfferSchema),
  modelRevision: Type.Union([Type.String(), Type.Null()]),
  fallback: Type.Boolean(),
  fallbackReason: Type.Optional(stringEnum(FALLBACK_REASONS)),
});
type OffersAnswer = Static<typeof OffersResponse>;

export const EraseResponse = Type.Object({
  erased: Type.Object({
    featureKeys: Type.Integer(),
    onlineKeys: Type.Integer(),
    streamEntries: Type.Integer(),
    eventMarkers: Type.Integer(),
    deadLetters: Type.Integer(),
    memoryEntries: Type.Integer(),
  }),
});

const RECENT = [1, 2, 3, 4, 5].map((i) => USER_FEATURES.indexOf(`recent_${i}` as 'recent_1'));

export const userRoutes: FastifyPluginAsyncTypebox<{ ctx: ServingContext }> = async (app, { ctx }) => {
  app.get(
    '/v1/users/:id/offers',
    {
      schema: {
        summary: 'Personalized rewards and point-redemption suggestions, using churn risk',
        params: Type.Object({ id: UserId }),
        querystring: Type.Object({ storeId: Type.Optional(StoreId) }),
        response: { 200: OffersResponse, ...errorResponses },
      },
    },
    async (req): Promise<OffersAnswer> => {
      const userId = req.params.id;
      const snap = ctx.features.snapshot;
      if (!snap) throw new ServingError('NOT_READY', undefined, { retryAfterSeconds: 1 });
      const storeId = req.query.storeId;
      if (storeId !== undefined && !snap.stores.has(storeId)) {
        throw new ServingError('UNKNOWN_STORE', `unknown store ${storeId}`, { field: 'storeId' });
      }
      const catalog = snap.catalog.items;
      const n = catalog.length;
      const popularity = (storeId && snap.popularity.get(storeId)) || snap.globalPopularity;
      const store = storeId ? snap.stores.get(storeId) : undefined;
      const hour = ctx.localTime.resolve(ctx.clock.now(), store?.timezone ?? 'UTC').hour;
      const drinks = catalog.flatMap((it, i) => (it.kind === 'drink' ? [i] : []));
      const popular = rankByPopularity(popularity, hour, n, drinks, 5).map((i) => catalog[i]!);

      let reason: FallbackReason | undefined;
      let user: Float32Array | undefined;
      let points = 0;
      try {
        const [blob, pts] = await withDeadline(
          Promise.all([
            ctx.redis.getBuffer(KEYS.user(snap.version, userId)),
            ctx.redis.hget(KEYS.onlineUser(userId), 'points'),
          ]),
          ctx.featureDeadlineMs,
        );
        if (blob && blob.length === USER_FEATURES.length * 4) {
          user = new Float32Array(USER_FEATURES.length);
          for (let i = 0; i < user.length; i++) user[i] = blob.readFloatLE(i * 4);
        }
        points = Math.max(0, Number(pts ?? 0) || 0);
      } catch (err) {
        reason = err instanceof DeadlineExceededError ? 'deadline_exceeded' : 'redis_unavailable';
        if (reason === 'deadline_exceeded') markDeadlineMissed(req);
      }

      let risk: number | null = null;
      let revision: string | null = null;
      if (user) {
        risk = heuristicChurnRisk(user);
        const model = ctx.models.acquire('churn');
        if (model) {
          ctx.metrics.answeredBy(req, 'churn', model);
          try {
            const names = model.meta.inputs[0]!.features;
            const row = Float32Array.from(names, (f) => user![USER_FEATURES.indexOf(f as 'segment')] ?? 0);
            const out = await model.run(row, 1);
            const p = out[0];
            if (p === undefined || !(p >= 0 && p <= 1)) throw new Error(`churn model returned ${p}`);
            risk = p;
            revision = model.revision;
          } catch (err) {
            req.log.warn({ err: (err as Error).message }, 'churn inference failed');
            reason = 'inference_error';
          } finally {
            model.release();
          }
        }
      }
      if (reason)
        ctx.metrics.fallbacks.inc({ ...ctx.metrics.labelsFor(req), route: '/v1/users/:id/offers', reason });
      const favorites: CatalogItem[] = [];
      if (user) {
        for (const c of RECENT) {
          const idx = user[c]!;
          const item = idx >= 0 ? catalog[idx] : undefined;
          if (item && !favorites.includes(item)) favorites.push(item);
        }
      }
      return {
        churnRisk: risk === null ? null : Math.round(risk * 1000) / 1000,
        riskBand: risk === null ? 'unknown' : riskBand(risk),
        points,
        offers:
          reason && !user
            ? []
            : buildOffers({ risk: risk ?? 0, points, known: user !== undefined, favorites, popular }),
        modelRevision: revision,
        fallback: reason !== undefined,
        ...(reason ? { fallbackReason: reason } : {}),
      };
    },
  );

  app.delete(
    '/v1/users/:id',
    {
      preValidation: requireBearer(ctx.adminToken),
      schema: {
        summary: "Erase every piece of the user's data this service keeps (bearer token required)",
        params: Type.Object({ id: UserId }),
        security: [{ bearer: [] }],
        response: { 200: EraseResponse, ...errorResponses },
      },
    },
    async (req) => {
      let report;
      try {
        report = await eraseUser(ctx.redis, req.params.id);
      } catch (err) {
        throw new ServingError('STORE_UNAVAILABLE', undefined, { retryAfterSeconds: 1, cause: err });
      }
      req.log.info({ erased: report }, 'user data erased');
      return { erased: { ...report, memoryEntries: 0 } };
    },
  );
};
