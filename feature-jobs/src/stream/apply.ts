/**
 * The effect of one app event on online state, as one Lua script: the effect, the
 * `eventApplied` marker and the XACK happen atomically, so an event id takes effect exactly
 * once however often it is delivered (redelivery after a crash, a claim from a slow consumer).
 */
import type { AppEvent, Catalog, StoreInfo } from '../../../contracts/features.js';
import { KEYS } from '../../../contracts/features.js';

/** How long an applied marker is kept; redeliveries older than this would apply again. */
export const APPLIED_TTL_SECONDS = 7 * 86_400;
/** Online user hashes expire after this long without events. */
export const ONLINE_USER_TTL_SECONDS = 30 * 86_400;
/** A gap longer than this starts a new session. */
export const SESSION_GAP_MS = 30 * 60_000;
/** Loyalty points earned per dollar of an order (serving's offers spend them). */
export const POINTS_PER_DOLLAR_EARNED = 10;
/** Store capacity used when an event names a store the catalog snapshot does not know. */
export const DEFAULT_CAPACITY_PER_HOUR = 120;

// KEYS: applied marker, online user hash, store queue hash, events stream
// ARGV: group, entry id, type, atMs, lastItem, storeId, value, drinks, prepLoad, capacity,
//       appliedTtl, userTtl, sessionGapMs, points, itemCount
// The queue drain mirrors common/queue.ts drainQueue (the pickup model's training feature);
// prep_load drains in proportion to the queue.
export const APPLY_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
  return 0
end
local t = ARGV[3]
local at = tonumber(ARGV[4])
local u = KEYS[2]
local prevAt = tonumber(redis.call('HGET', u, 'last_event_at') or '0')
if at - prevAt > tonumber(ARGV[13]) then
  redis.call('HSET', u, 'session_started_at', ARGV[4], 'session_events', '0', 'session_items', '0')
end
if at >= prevAt then
  redis.call('HSET', u, 'last_event_at', ARGV[4], 'last_event_type', t, 'session_store', ARGV[6])
end
redis.call('HINCRBY', u, 'session_events', 1)
redis.call('HINCRBY', u, 'events_' .. t, 1)
if t == 'click' or t == 'add_to_cart' then
  if ARGV[5] ~= '' then redis.call('HSET', u, 'last_viewed_item', ARGV[5]) end
  if t == 'add_to_cart' then redis.call('HINCRBY', u, 'session_items', tonumber(ARGV[15])) end
end
if t == 'order' then
  local prevOrder = tonumber(redis.call('HGET', u, 'last_order_at') or '0')
  if at >= prevOrder then
    redis.call('HSET', u, 'last_order_at', ARGV[4], 'last_item', ARGV[5], 'last_store', ARGV[6],
      'last_order_value', ARGV[7])
  end
  redis.call('HINCRBY', u, 'orders', 1)
  redis.call('HINCRBYFLOAT', u, 'spend', ARGV[7])
  redis.call('HINCRBY', u, 'points', tonumber(ARGV[14]))
  redis.call('HSET', u, 'session_items', '0')
  local s = KEYS[3]
  local cap = tonumber(ARGV[10])
  local q = tonumber(redis.call('HGET', s, 'queue') or '0')
  local load = tonumber(redis.call('HGET', s, 'prep_load') or '0')
  local last = tonumber(redis.call('HGET', s, 'updated_at') or '0')
  if at > last then
    local nq = q - (at - last) / 3600000 * cap
    if nq < 0 then nq = 0 end
    if q > 0 then load = load * nq / q else load = 0 end
    q = nq
    last = at
  end
  q = q + tonumber(ARGV[8])
  load = load + tonumber(ARGV[9])
  redis.call('HSET', s, 'queue', tostring(q), 'prep_load', tostring(load), 'updated_at', tostring(last),
    'capacity_per_hour', ARGV[10])
  redis.call('HINCRBY', s, 'orders_total', 1)
end
redis.call('EXPIRE', u, tonumber(ARGV[12]))
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[11]))
redis.call('XACK', KEYS[4], ARGV[1], ARGV[2])
return 1
`;

/** Parses stream fields (a flat [k, v, k, v] list) into an AppEvent; returns a problem string when malformed. */
export function parseEventFields(fields: readonly string[]): AppEvent | string {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
  const type = f['type'];
  if (!f['eventId']) return 'missing eventId';
  if (type !== 'impression' && type !== 'click' && type !== 'add_to_cart' && type !== 'order') {
    return `unknown type ${JSON.stringify(type)}`;
  }
  if (!f['userId'] || !f['storeId']) return 'missing userId or storeId';
  if (!f['at'] || Number.isNaN(Date.parse(f['at']))) return `bad timestamp ${JSON.stringify(f['at'])}`;
  const raw = f['itemIds'] ?? '';
  const itemIds = raw.startsWith('[') ? (JSON.parse(raw) as string[]) : raw ? raw.split(',') : [];
  const value = f['value'] !== undefined ? Number(f['value']) : undefined;
  return {
    eventId: f['eventId'],
    type,
    userId: f['userId'],
    storeId: f['storeId'],
    at: f['at'],
    itemIds,
    ...(value !== undefined && Number.isFinite(value) ? { value } : {}),
  };
}

/** Lookups the effect needs: prep complexity and kind by item id, capacity by store id. */
export interface ApplyContext {
  readonly items: ReadonlyMap<string, { readonly kind: 'drink' | 'addon'; readonly prepComplexity: number }>;
  readonly capacity: ReadonlyMap<string, number>;
}

export function buildApplyContext(catalog: Catalog | undefined, stores: readonly StoreInfo[]): ApplyContext {
  return {
    items: new Map(
      (catalog?.items ?? []).map((i) => [i.id, { kind: i.kind, prepComplexity: i.prepComplexity }]),
    ),
    capacity: new Map(stores.map((s) => [s.id, s.capacityPerHour])),
  };
}

/** The script's KEYS and ARGV for one event. */
export function computeApplyArgs(
  group: string,
  entryId: string,
  e: AppEvent,
  ctx: ApplyContext,
): { keys: string[]; argv: string[] } {
  const ids = e.itemIds ?? [];
  let drinks = 0;
  let prepLoad = 0;
  let lastDrink = '';
  for (const id of ids) {
    const it = ctx.items.get(id);
    // Unknown ids count as an average drink rather than being dropped.
    if (!it || it.kind === 'drink') {
      drinks++;
      if (!lastDrink) lastDrink = id;
    }
    prepLoad += it?.prepComplexity ?? 2.5;
  }
  const value = e.value ?? 0;
  return {
    keys: [KEYS.eventApplied(e.eventId), KEYS.onlineUser(e.userId), KEYS.storeQueue(e.storeId), KEYS.events],
    argv: [
      group,
      entryId,
      e.type,
      String(Date.parse(e.at)),
      lastDrink || ids[0] || '',
      e.storeId,
      String(value),
      String(drinks),
      String(prepLoad),
      String(ctx.capacity.get(e.storeId) ?? DEFAULT_CAPACITY_PER_HOUR),
      String(APPLIED_TTL_SECONDS),
      String(ONLINE_USER_TTL_SECONDS),
      String(SESSION_GAP_MS),
      String(Math.floor(value * POINTS_PER_DOLLAR_EARNED)),
      String(ids.length),
    ],
  };
}
