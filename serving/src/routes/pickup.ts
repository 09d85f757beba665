/**
 * POST /v1/pickup-estimate: when the order will be ready (with a band) and, for a wanted
 * pickup time, when to order. Live queue counters come from Redis; if Redis cannot answer in
 * time the estimate assumes an empty queue and says so with `fallback: true`.
 */
import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox';
import { parseTimestampMs } from '../../../contracts/events.js';
import { KEYS } from '../../../contracts/features.js';
import type { ServingContext } from '../context.js';
import { ServingError } from '../errors.js';
import { markDeadlineMissed } from '../plugins/protection.js';
import { DeadlineExceededError, withDeadline } from '../features/deadline.js';
import { FALLBACK_REASONS, type FallbackReason } from '../fallback/popularity.js';
import {
  bestOrderTime,
  boundByCapacity,
  estimateMinutesFromQueue,
  PICKUP_FEATURES,
  uncertaintyBand,
  type PickupFeature,
} from '../pickup/estimate.js';
import { computeContextValues } from '../ranking/plan.js';
import { errorResponses, ItemId, StoreId, Timestamp, stringEnum } from './schemas.js';

export const PickupRequest = Type.Object(
  {
    storeId: StoreId,
    items: Type.Array(ItemId, { minItems: 1, maxItems: 50 }),
    placedAt: Type.Optional(Timestamp),
    wantedAt: Type.Optional(Timestamp),
  },
  { additionalProperties: false },
);

export const PickupResponse = Type.Object({
  storeId: Type.String(),
  placedAt: Type.String(),
  readyAt: Type.String(),
  readyEarliest: Type.String(),
  readyLatest: Type.String(),
  minutes: Type.Number(),
  queue: Type.Union([Type.Number(), Type.Null()]),
  bestOrderAt: Type.Optional(Type.String()),
  onTime: Type.Optional(Type.Boolean()),
  source: Type.Union([Type.Literal('model'), Type.Literal('heuristic')]),
  modelRevision: Type.Union([Type.String(), Type.Null()]),
  fallback: Type.Boolean(),
  fallbackReason: Type.Optional(stringEnum(FALLBACK_REASONS)),
  /** True when the store's region capacity moved the estimate later (ADR 0014). */
  capacityLimited: Type.Optional(Type.Boolean()),
});
type PickupAnswer = Static<typeof PickupResponse>;

export const pickupRoutes: FastifyPluginAsyncTypebox<{ ctx: ServingContext }> = async (app, { ctx }) => {
  app.post(
    '/v1/pickup-estimate',
    {
      schema: {
        summary: 'Estimated ready time with an uncertainty band, and the best time to order',
        body: PickupRequest,
        response: { 200: PickupResponse, ...errorResponses },
      },
    },
    async (req): Promise<PickupAnswer> => {
      const body = req.body;
      const snap = ctx.features.snapshot;
      if (!snap) throw new ServingError('NOT_READY', undefined, { retryAfterSeconds: 1 });
      const store = snap.stores.get(body.storeId);
      if (!store)
        throw new ServingError('UNKNOWN_STORE', `unknown store ${body.storeId}`, { field: 'storeId' });
      let orderComplexity = 0;
      body.items.forEach((id, k) => {
        const i = snap.indexById.get(id);
        if (i === undefined)
          throw new ServingError('UNKNOWN_ITEM', `unknown item ${id}`, { field: `items[${k}]` });
        orderComplexity += snap.catalog.items[i]!.prepComplexity;
      });
      const placedAt = body.placedAt ? parseTimestampMs(body.placedAt) : ctx.clock.now();
      const local = ctx.localTime.resolve(placedAt, store.timezone);

      let reason: FallbackReason | undefined;
      let queue: number | null = null;
      let prepLoad = 0;
      try {
        const [q, p] = await withDeadline(
          ctx.redis.hmget(KEYS.storeQueue(store.id), 'queue', 'prep_load'),
          ctx.featureDeadlineMs,
        );
        queue = Number(q ?? 0) || 0;
        prepLoad = Number(p ?? 0) || queue * 2.5;
      } catch (err) {
        reason = err instanceof DeadlineExceededError ? 'deadline_exceeded' : 'redis_unavailable';
        if (reason === 'deadline_exceeded') markDeadlineMissed(req);
      }
      const c = computeContextValues({ hour: local.hour, weekday: local.weekday });
      const regionCapacity = ctx.regionMenu.current.forStore(store.id)?.drinksPerHour;
      const features: Record<PickupFeature, number> = {
        queue: queue ?? 0,
        prep_load: prepLoad,
        order_items: body.items.length,
        order_complexity: orderComplexity,
        // A region's capacity bounds the store's own figure (StoreRegion capacity, ADR 0014).
        capacity_per_hour: Math.min(store.capacityPerHour, regionCapacity ?? Infinity),
        hour_sin: c.hour_sin,
        hour_cos: c.hour_cos,
        is_weekend: c.is_weekend,
      };

      let minutes = estimateMinutesFromQueue(features);
      let source: 'model' | 'heuristic' = 'heuristic';
      let revision: string | null = null;
      let mae: number | undefined;
      const model = ctx.models.acquire('pickup-time');
      if (model) ctx.metrics.answeredBy(req, 'pickup-time', model);
      if (model && !reason) {
        try {
          const names = model.meta.inputs[0]!.features as readonly PickupFeature[];
          const out = await model.run(
            Float32Array.from(names, (n) => features[n]),
            1,
          );
          const m = out[0];
          if (m === undefined || !Number.isFinite(m) || m < 0) throw new Error(`pickup model returned ${m}`);
          minutes = m;
          source = 'model';
          revision = model.revision;
          mae = model.meta.metrics['mae'];
        } catch (err) {
          req.log.warn({ err: (err as Error).message }, 'pickup inference failed');
          reason = 'inference_error';
        }
      }
      model?.release();
      if (reason)
        ctx.metrics.fallbacks.inc({ ...ctx.metrics.labelsFor(req), route: '/v1/pickup-estimate', reason });

      let band = uncertaintyBand(minutes, mae);
      let capacityLimited = false;
      if (regionCapacity !== undefined) {
        ({
          minutes,
          band,
          limited: capacityLimited,
        } = boundByCapacity(minutes, band, features, regionCapacity));
      }
      const iso = (ms: number) => new Date(Math.round(ms / 1000) * 1000).toISOString();
      const answer: PickupAnswer = {
        storeId: store.id,
        placedAt: iso(placedAt),
        readyAt: iso(placedAt + minutes * 60_000),
        readyEarliest: iso(placedAt + (minutes - band.below) * 60_000),
        readyLatest: iso(placedAt + (minutes + band.above) * 60_000),
        minutes: Math.round(minutes * 10) / 10,
        queue,
        source,
        modelRevision: revision,
        fallback: reason !== undefined,
        ...(reason ? { fallbackReason: reason } : {}),
        ...(capacityLimited ? { capacityLimited } : {}),
      };
      if (body.wantedAt) {
        const best = bestOrderTime(placedAt, parseTimestampMs(body.wantedAt), minutes, band);
        answer.bestOrderAt = iso(best.orderAt);
        answer.onTime = best.onTime;
      }
      return answer;
    },
  );
};

export { PICKUP_FEATURES };
