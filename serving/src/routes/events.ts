/**
 * POST /v1/events: app events appended to the Redis stream the feature jobs consume. One Lua
 * script checks the event id, appends and remembers the id atomically, so a retried event is
 * stored once and answered as a duplicate.
 */
import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox';
import { KEYS } from '../../../contracts/features.js';
import { defineScript } from '../../../contracts/redis.js';
import type { ServingContext } from '../context.js';
import type { ScriptRunner } from '../features/scripts.js';
import { ServingError } from '../errors.js';
import { errorResponses, ItemId, StoreId, Timestamp, UserId } from './schemas.js';

export const EventRequest = Type.Object(
  {
    eventId: Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,128}$' }),
    type: Type.Union([
      Type.Literal('impression'),
      Type.Literal('click'),
      Type.Literal('add_to_cart'),
      Type.Literal('order'),
    ]),
    userId: UserId,
    storeId: StoreId,
    at: Timestamp,
    itemIds: Type.Optional(Type.Array(ItemId, { maxItems: 50 })),
    value: Type.Optional(Type.Number({ minimum: 0, maximum: 10_000 })),
    variant: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,40}$' })),
    modelRevision: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: false },
);
export type EventBody = Static<typeof EventRequest>;

export const EventResponse = Type.Object({
  accepted: Type.Boolean(),
  duplicate: Type.Boolean(),
  streamId: Type.String(),
});

/** KEYS[1] = seen marker, KEYS[2] = stream; ARGV = ttl, maxlen, field, value, ... */
const APPEND_ONCE = defineScript(`
local prev = redis.call('GET', KEYS[1])
if prev then
  -- A write on this path too, so a WAIT after a retried event covers the original append.
  redis.call('SET', KEYS[1], prev, 'KEEPTTL')
  return {0, prev}
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
`);

/** Stream fields of an event; all strings, itemIds comma-separated. */
export function eventFields(e: EventBody): string[] {
  const f = ['eventId', e.eventId, 'type', e.type, 'userId', e.userId, 'storeId', e.storeId, 'at', e.at];
  if (e.itemIds?.length) f.push('itemIds', e.itemIds.join(','));
  if (e.value !== undefined) f.push('value', String(e.value));
  if (e.variant) f.push('variant', e.variant);
  if (e.modelRevision) f.push('modelRevision', e.modelRevision);
  return f;
}

/**
 * Appends the event unless its id was seen; returns whether it was new and its stream id.
 * `scripts` decides durability: with replicas required it answers only once they have the write.
 */
export async function appendEventOnce(
  scripts: ScriptRunner,
  e: EventBody,
  ttlSeconds: number,
  maxLen: number,
): Promise<{ added: boolean; streamId: string }> {
  const res = await scripts.run({
    script: APPEND_ONCE,
    keys: [KEYS.eventSeen(e.eventId), KEYS.events],
    args: [String(ttlSeconds), String(maxLen), ...eventFields(e)],
  });
  const [added, id] = res as [number, string];
  return { added: added === 1, streamId: id };
}

export const eventRoutes: FastifyPluginAsyncTypebox<{ ctx: ServingContext }> = async (app, { ctx }) => {
  app.post(
    '/v1/events',
    {
      schema: {
        summary: 'Record an app event (impression, click, add_to_cart, order); idempotent by eventId',
        body: EventRequest,
        response: { 202: EventResponse, 200: EventResponse, ...errorResponses },
      },
    },
    async (req, reply) => {
      const e = req.body;
      if (e.type === 'order' && e.value === undefined) {
        throw new ServingError('VALIDATION', 'body/value is required for order events', { field: 'value' });
      }
      let r: { added: boolean; streamId: string };
      try {
        r = await appendEventOnce(ctx.eventWrites, e, ctx.eventDedupTtlSeconds, ctx.eventsMaxLen);
      } catch (err) {
        throw new ServingError('STORE_UNAVAILABLE', undefined, { retryAfterSeconds: 1, cause: err });
      }
      const self = ctx.metrics.labelsFor(req);
      ctx.metrics.events.inc({ ...self, type: e.type, outcome: r.added ? 'accepted' : 'duplicate' });
      if (r.added) {
        const labels = { ...self, variant: ctx.metrics.variantLabel.value(e.variant) };
        if (e.type === 'impression') ctx.metrics.exposures.inc(labels);
        if (e.type === 'order') {
          ctx.metrics.conversions.inc(labels);
          ctx.metrics.conversionValue.inc(labels, e.value ?? 0);
        }
      }
      return reply
        .code(r.added ? 202 : 200)
        .send({ accepted: true, duplicate: !r.added, streamId: r.streamId });
    },
  );
};
