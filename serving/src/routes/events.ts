/**
 * POST /v1/events: app events appended to the Redis stream the feature jobs consume. One Lua
 * script checks the event id, checks the stream has room, appends and remembers the id
 * atomically, so a retried event is stored once and answered as a duplicate. Serving never
 * trims the stream (the stream job trims what every consumer group has processed); a full
 * stream refuses new events with 503 instead of dropping unread ones.
 */
import { Type, type FastifyPluginAsyncTypebox, type Static } from '@fastify/type-provider-typebox';
import {
  checkEvent,
  checkEventTime,
  encodeEventFields,
  EVENT_FIELDS,
  EVENT_TYPES,
  parseTimestampMs,
  TIMESTAMP_PATTERN,
} from '../../../contracts/events.js';
import { KEYS } from '../../../contracts/features.js';
import { EVENT_REFUSAL_REASONS } from '../../../contracts/metrics.js';
import { defineScript } from '../../../contracts/redis.js';
import type { ServingContext } from '../context.js';
import type { ScriptRunner } from '../features/scripts.js';
import { ServingError } from '../errors.js';
import { experimentTagOf } from '../experiments/counting.js';
import { errorResponses, ItemId, StoreId, UserId, stringEnum } from './schemas.js';

export const EventRequest = Type.Object(
  {
    eventId: Type.String({ pattern: EVENT_FIELDS.eventId }),
    type: stringEnum(EVENT_TYPES),
    userId: UserId,
    storeId: StoreId,
    at: Type.String({
      format: 'date-time',
      pattern: TIMESTAMP_PATTERN,
      description:
        'RFC 3339 timestamp; at most the dedup window (2 days by default) old and 5 minutes ahead. A leap second (23:59:60 UTC) counts as 23:59:59.999.',
    }),
    itemIds: Type.Optional(Type.Array(ItemId, { maxItems: EVENT_FIELDS.maxItems })),
    value: Type.Optional(
      Type.Number({
        minimum: EVENT_FIELDS.minValue,
        maximum: EVENT_FIELDS.maxValue,
        description:
          'Order value in dollars. Optional: an order without it is an order of unknown value (counted as an order, adds no spend and earns no points); ignored on other types.',
      }),
    ),
    variant: Type.Optional(Type.String({ pattern: EVENT_FIELDS.variant })),
    modelRevision: Type.Optional(Type.String({ maxLength: EVENT_FIELDS.modelRevisionMaxLength })),
  },
  { additionalProperties: false },
);
export type EventBody = Static<typeof EventRequest>;

export const EventResponse = Type.Object({
  accepted: Type.Boolean(),
  duplicate: Type.Boolean(),
  streamId: Type.String(),
});

/**
 * KEYS[1] = seen marker, KEYS[2] = stream; ARGV = ttl, max length, field, value, ...
 * Returns {0, id of the first copy} | {1, new id} | {2, stream length} (full: nothing written).
 */
const APPEND_ONCE = defineScript(`
local prev = redis.call('GET', KEYS[1])
if prev then
  -- A write on this path too, so a WAIT after a retried event covers the original append.
  redis.call('SET', KEYS[1], prev, 'KEEPTTL')
  return {0, prev}
end
local n = redis.call('XLEN', KEYS[2])
if n >= tonumber(ARGV[2]) then return {2, tostring(n)} end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
`);

/** What appendEventOnce did: appended, found a duplicate, or found the stream full. */
export type AppendOutcome =
  | { readonly outcome: 'added' | 'duplicate'; readonly streamId: string }
  | { readonly outcome: 'full'; readonly length: number };

/**
 * Appends the event unless its id was seen or the stream holds `maxLen` entries. `scripts`
 * decides durability: with replicas required it answers only once they have the write.
 */
export async function appendEventOnce(
  scripts: ScriptRunner,
  e: EventBody,
  ttlSeconds: number,
  maxLen: number,
): Promise<AppendOutcome> {
  const res = await scripts.run({
    script: APPEND_ONCE,
    keys: [KEYS.eventSeen(e.eventId), KEYS.events],
    args: [String(ttlSeconds), String(maxLen), ...encodeEventFields(e)],
  });
  const [kind, v] = res as [number, string];
  if (kind === 2) return { outcome: 'full', length: Number(v) };
  return { outcome: kind === 1 ? 'added' : 'duplicate', streamId: v };
}

/** Seconds a client is asked to wait before retrying an event refused because the stream is full. */
export const STREAM_FULL_RETRY_AFTER_SECONDS = 10;

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
      // The schema checked the shapes; the contract's rules are the ones the stream job applies.
      const problem =
        checkEvent(e) ??
        checkEventTime(parseTimestampMs(e.at), ctx.clock.now(), ctx.eventDedupTtlSeconds * 1000);
      if (problem) throw new ServingError('VALIDATION', problem.message, { field: problem.field });
      let r: AppendOutcome;
      try {
        r = await appendEventOnce(ctx.eventWrites, e, ctx.eventDedupTtlSeconds, ctx.eventsMaxLen);
      } catch (err) {
        throw new ServingError('STORE_UNAVAILABLE', undefined, { retryAfterSeconds: 1, cause: err });
      }
      const self = ctx.metrics.labelsFor(req);
      if (r.outcome === 'full') {
        ctx.metrics.eventsRefused.inc({ ...self, reason: EVENT_REFUSAL_REASONS.streamFull });
        throw new ServingError('EVENTS_STREAM_FULL', undefined, {
          retryAfterSeconds: STREAM_FULL_RETRY_AFTER_SECONDS,
        });
      }
      const added = r.outcome === 'added';
      ctx.metrics.events.inc({ ...self, type: e.type, outcome: added ? 'accepted' : 'duplicate' });
      if (added) {
        const labels = { ...self, variant: ctx.metrics.variantLabel.value(e.variant) };
        if (e.type === 'impression') ctx.metrics.exposures.inc(labels);
        if (e.type === 'order') {
          ctx.metrics.conversions.inc(labels);
          // An order of unknown value is a conversion that adds no value.
          if (e.value !== undefined) ctx.metrics.conversionValue.inc(labels, e.value);
          const tag = experimentTagOf(req.headers);
          if (tag) {
            const snap = ctx.features.snapshot;
            const hasAddon = (e.itemIds ?? []).some((id) => {
              const i = snap?.indexById.get(id);
              return i !== undefined && snap!.catalog.items[i]?.kind === 'addon';
            });
            // Stored once (a retried event is a duplicate and skips this), counted for the
            // variant the user was exposed to.
            await ctx.experiments
              .order(tag, e.userId, e.value, hasAddon)
              .catch((err: unknown) =>
                req.log.warn({ err: (err as Error).message }, 'experiment order not counted'),
              );
          }
        }
      }
      return reply.code(added ? 202 : 200).send({ accepted: true, duplicate: !added, streamId: r.streamId });
    },
  );
};
