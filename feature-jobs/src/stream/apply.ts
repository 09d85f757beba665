/**
 * The effect of one app event on online state, as Lua scripts: one on the user's online hash,
 * one (orders only) on the store's live counters. Each script sets its own applied marker in
 * the same slot as the hash it changes (contracts/features.ts), atomically with the change, so
 * each effect happens exactly once however often the entry is delivered (redelivery after a
 * crash, a claim from a slow consumer, a failover that lost the consumer group's last writes).
 * The consumer acknowledges the entry (XACK) only after both scripts succeeded. Entries that
 * break the event grammar (contracts/events.ts) are moved to the dead-letter stream instead;
 * processed entries are trimmed from the stream once every consumer group is past them.
 */
import type { DecodedEvent } from '../../../contracts/events.js';
import type { Catalog, StoreInfo } from '../../../contracts/features.js';
import { KEYS } from '../../../contracts/features.js';
import { defineScript, type ScriptCall } from '../../../contracts/redis.js';

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

// KEYS: applied marker (user), online user hash
// ARGV: type, atMs, lastItem, storeId, value ('' = unknown), appliedTtl, userTtl, sessionGapMs,
//       points, itemCount
// Returns 1 when applied, 0 when the marker says it already was.
export const USER_APPLY_SCRIPT = defineScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- Rewritten so this path writes too: a WAIT after it then covers the effect it found.
  redis.call('SET', KEYS[1], '1', 'KEEPTTL')
  return 0
end
local t = ARGV[1]
local at = tonumber(ARGV[2])
local u = KEYS[2]
local prevAt = tonumber(redis.call('HGET', u, 'last_event_at') or '0')
if at - prevAt > tonumber(ARGV[8]) then
  redis.call('HSET', u, 'session_started_at', ARGV[2], 'session_events', '0', 'session_items', '0')
end
if at >= prevAt then
  redis.call('HSET', u, 'last_event_at', ARGV[2], 'last_event_type', t, 'session_store', ARGV[4])
end
redis.call('HINCRBY', u, 'session_events', 1)
redis.call('HINCRBY', u, 'events_' .. t, 1)
if t == 'click' or t == 'add_to_cart' then
  if ARGV[3] ~= '' then redis.call('HSET', u, 'last_viewed_item', ARGV[3]) end
  if t == 'add_to_cart' then redis.call('HINCRBY', u, 'session_items', tonumber(ARGV[10])) end
end
if t == 'order' then
  -- An order without a value is an order of unknown value: counted, but it adds no spend and
  -- earns no points; orders_without_value keeps spend / orders an honest average.
  local known = ARGV[5] ~= ''
  local prevOrder = tonumber(redis.call('HGET', u, 'last_order_at') or '0')
  if at >= prevOrder then
    redis.call('HSET', u, 'last_order_at', ARGV[2], 'last_item', ARGV[3], 'last_store', ARGV[4])
    if known then redis.call('HSET', u, 'last_order_value', ARGV[5])
    else redis.call('HDEL', u, 'last_order_value') end
  end
  redis.call('HINCRBY', u, 'orders', 1)
  if known then
    redis.call('HINCRBYFLOAT', u, 'spend', ARGV[5])
    redis.call('HINCRBY', u, 'points', tonumber(ARGV[9]))
  else
    redis.call('HINCRBY', u, 'orders_without_value', 1)
  end
  redis.call('HSET', u, 'session_items', '0')
end
redis.call('EXPIRE', u, tonumber(ARGV[7]))
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[6]))
return 1
`);

// KEYS: applied marker (store), store queue hash
// ARGV: atMs, drinks, prepLoad, capacity, appliedTtl
// The queue drain mirrors common/queue.ts drainQueue (the pickup model's training feature);
// prep_load drains in proportion to the queue.
export const STORE_APPLY_SCRIPT = defineScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[1], '1', 'KEEPTTL')
  return 0
end
local at = tonumber(ARGV[1])
local s = KEYS[2]
local cap = tonumber(ARGV[4])
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
q = q + tonumber(ARGV[2])
load = load + tonumber(ARGV[3])
redis.call('HSET', s, 'queue', tostring(q), 'prep_load', tostring(load), 'updated_at', tostring(last),
  'capacity_per_hour', ARGV[4])
redis.call('HINCRBY', s, 'orders_total', 1)
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[5]))
return 1
`);

// KEYS: events stream, dead-letter stream; ARGV: group, entry id, reason, fields (JSON)
// Only an entry still pending in the group is moved: a consumer that lost it to a claim and
// comes back late must not write a second copy.
export const DEAD_LETTER_SCRIPT = defineScript(`
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'sourceId', ARGV[2], 'group', ARGV[1], 'reason', ARGV[3], 'fields', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
`);

// KEYS: events stream. Removes the entries every consumer group has processed: those below the
// oldest entry pending in any group and below every group's next undelivered entry. Atomic, so
// a group cannot deliver or claim anything between the bound being computed and the trim.
// Returns the number of entries removed.
export const TRIM_SCRIPT = defineScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local bestMs, bestSeq
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local id, step
  if tonumber(info['pending']) > 0 then
    id = redis.call('XPENDING', KEYS[1], info['name'])[2]
    step = 0
  else
    id = info['last-delivered-id']
    step = 1
  end
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  -- Ids beyond a double's exact integers (explicit ids, never XADD *): trim nothing rather than guess.
  if #ms > 15 or #seq > 15 then return 0 end
  ms = tonumber(ms)
  seq = tonumber(seq) + step
  if bestMs == nil or ms < bestMs or (ms == bestMs and seq < bestSeq) then
    bestMs, bestSeq = ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', bestMs, bestSeq))
`);

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

/** The script calls of one event: its user effect, and its store effect for an order. */
export function computeApplyCalls(
  { event: e, atMs }: DecodedEvent,
  ctx: ApplyContext,
): { user: ScriptCall; store?: ScriptCall } {
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
  const value = e.value;
  const at = String(atMs);
  const user: ScriptCall = {
    script: USER_APPLY_SCRIPT,
    keys: [KEYS.eventApplied(e.userId, e.eventId), KEYS.onlineUser(e.userId)],
    args: [
      e.type,
      at,
      lastDrink || ids[0] || '',
      e.storeId,
      value === undefined ? '' : String(value),
      String(APPLIED_TTL_SECONDS),
      String(ONLINE_USER_TTL_SECONDS),
      String(SESSION_GAP_MS),
      String(Math.floor((value ?? 0) * POINTS_PER_DOLLAR_EARNED)),
      String(ids.length),
    ],
  };
  if (e.type !== 'order') return { user };
  return {
    user,
    store: {
      script: STORE_APPLY_SCRIPT,
      keys: [KEYS.storeEventApplied(e.storeId, e.eventId), KEYS.storeQueue(e.storeId)],
      args: [
        at,
        String(drinks),
        String(prepLoad),
        String(ctx.capacity.get(e.storeId) ?? DEFAULT_CAPACITY_PER_HOUR),
        String(APPLIED_TTL_SECONDS),
      ],
    },
  };
}
