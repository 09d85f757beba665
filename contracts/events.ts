/**
 * App events: the grammar of every field, how an event is written onto the events stream and
 * read back. Serving's POST /v1/events validates with these rules and encodes with
 * `encodeEventFields`; the stream job decodes with `decodeEventFields`, which applies the same
 * rules — so what the API accepts, the stream job can apply. Docs: docs/serving.md (events).
 */
import type { AppEvent } from './features.js';

export const EVENT_TYPES = ['impression', 'click', 'add_to_cart', 'order'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Patterns (JSON Schema / RegExp source) and bounds of the event fields. */
export const EVENT_FIELDS = {
  eventId: '^[A-Za-z0-9_.:-]{1,128}$',
  /** No glob or whitespace characters, so ids are safe inside Redis key patterns. */
  userId: '^[A-Za-z0-9_.:@-]{1,128}$',
  storeId: '^[A-Za-z0-9_.:-]{1,64}$',
  /** Catalog item ids; no comma (the stream's list separator) and no leading `[`. */
  itemId: '^[A-Za-z0-9_.:-]{1,64}$',
  maxItems: 50,
  /** Order value in dollars. */
  minValue: 0,
  maxValue: 10_000,
  variant: '^[A-Za-z0-9_.-]{1,40}$',
  modelRevisionMaxLength: 64,
} as const;

/**
 * RFC 3339 date-time (`T`/`Z` in either case, as RFC 3339 allows; no space separator, no
 * offset without minutes, at most nanoseconds). Calendar and leap-second rules are checked by
 * parseTimestampMs, which every reader of a timestamp uses.
 */
export const TIMESTAMP_PATTERN =
  '^\\d{4}-\\d{2}-\\d{2}[Tt]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?([Zz]|[+-]\\d{2}:\\d{2})$';

/** Future clock skew an event's `at` may have against serving's clock. */
export const EVENT_MAX_FUTURE_SKEW_MS = 5 * 60_000;

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** Days from 1970-01-01 to the proleptic Gregorian date y-m-d (H. Hinnant's days_from_civil). */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

function daysInMonth(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(m) ? 30 : 31;
}

/**
 * Milliseconds since the epoch of an RFC 3339 timestamp; RangeError naming the problem otherwise.
 * A leap second (`23:59:60` UTC, the only minute RFC 3339 allows it in) is the last millisecond
 * of that minute: Unix time has no 61st second, and this keeps events in order.
 */
export function parseTimestampMs(s: string): number {
  const m = TIMESTAMP.exec(s);
  if (!m) throw new RangeError(`${JSON.stringify(s)} is not an RFC 3339 timestamp like 2026-11-24T08:00:00Z`);
  const [y, mo, d, h, mi, sec] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo)) throw new RangeError(`${s}: no such date`);
  if (h > 23 || mi > 59 || sec > 60) throw new RangeError(`${s}: no such time of day`);
  let offsetMin = 0;
  if (!m[8]) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) throw new RangeError(`${s}: no such UTC offset`);
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const minuteMs = (daysFromCivil(y, mo, d) * 1440 + h * 60 + mi - offsetMin) * 60_000;
  if (sec === 60) {
    // 23:59 UTC is the last minute of the UTC day.
    if (((minuteMs % 86_400_000) + 86_400_000) % 86_400_000 !== 86_340_000)
      throw new RangeError(`${s}: a leap second is 23:59:60 UTC only`);
    return minuteMs + 59_999;
  }
  return minuteMs + sec * 1000 + Math.floor(Number((m[7] ?? '0').padEnd(3, '0').slice(0, 3)));
}

/** A field and what is wrong with it. */
export interface EventProblem {
  readonly field: string;
  readonly message: string;
}

const RE = {
  eventId: new RegExp(EVENT_FIELDS.eventId),
  userId: new RegExp(EVENT_FIELDS.userId),
  storeId: new RegExp(EVENT_FIELDS.storeId),
  itemId: new RegExp(EVENT_FIELDS.itemId),
  variant: new RegExp(EVENT_FIELDS.variant),
};

/**
 * The first field of `e` that breaks the event grammar, or null. `at`'s distance from now is
 * not checked here: that depends on when the event is looked at (see checkEventTime).
 */
export function checkEvent(e: AppEvent): EventProblem | null {
  const bad = (field: string, message: string): EventProblem => ({ field, message: `${field} ${message}` });
  if (!RE.eventId.test(e.eventId)) return bad('eventId', `must match ${EVENT_FIELDS.eventId}`);
  if (!(EVENT_TYPES as readonly string[]).includes(e.type))
    return bad('type', `must be one of ${EVENT_TYPES.join(', ')}`);
  if (!RE.userId.test(e.userId)) return bad('userId', `must match ${EVENT_FIELDS.userId}`);
  if (!RE.storeId.test(e.storeId)) return bad('storeId', `must match ${EVENT_FIELDS.storeId}`);
  try {
    parseTimestampMs(e.at);
  } catch (err) {
    return bad('at', `is invalid: ${(err as Error).message}`);
  }
  const items = e.itemIds ?? [];
  if (items.length > EVENT_FIELDS.maxItems)
    return bad('itemIds', `must have at most ${EVENT_FIELDS.maxItems} ids`);
  const i = items.findIndex((id) => !RE.itemId.test(id));
  if (i >= 0) return bad(`itemIds[${i}]`, `must match ${EVENT_FIELDS.itemId}`);
  if (
    e.value !== undefined &&
    !(Number.isFinite(e.value) && e.value >= EVENT_FIELDS.minValue && e.value <= EVENT_FIELDS.maxValue)
  )
    return bad('value', `must be a number from ${EVENT_FIELDS.minValue} to ${EVENT_FIELDS.maxValue}`);
  if (e.variant !== undefined && !RE.variant.test(e.variant))
    return bad('variant', `must match ${EVENT_FIELDS.variant}`);
  if (e.modelRevision !== undefined && e.modelRevision.length > EVENT_FIELDS.modelRevisionMaxLength)
    return bad('modelRevision', `must be at most ${EVENT_FIELDS.modelRevisionMaxLength} characters`);
  return null;
}

/**
 * Whether `at` is in the window serving accepts at `nowMs`: at most `maxAgeMs` old (the event-id
 * dedup window, so a retry of an accepted event is always recognized) and at most
 * EVENT_MAX_FUTURE_SKEW_MS ahead. The stream job does not check it: it applies an accepted event
 * however late it reads it.
 */
export function checkEventTime(atMs: number, nowMs: number, maxAgeMs: number): EventProblem | null {
  if (atMs < nowMs - maxAgeMs)
    return {
      field: 'at',
      message: `at is more than ${Math.round(maxAgeMs / 1000)} s in the past (the dedup window)`,
    };
  if (atMs > nowMs + EVENT_MAX_FUTURE_SKEW_MS)
    return { field: 'at', message: `at is more than ${EVENT_MAX_FUTURE_SKEW_MS / 1000} s in the future` };
  return null;
}

/**
 * The stream fields of an event (a flat [k, v, k, v] list of strings; itemIds comma-separated).
 * RangeError for an event that breaks the grammar: nothing is written that cannot be read back.
 */
export function encodeEventFields(e: AppEvent): string[] {
  const problem = checkEvent(e);
  if (problem) throw new RangeError(problem.message);
  const f = ['eventId', e.eventId, 'type', e.type, 'userId', e.userId, 'storeId', e.storeId, 'at', e.at];
  if (e.itemIds?.length) f.push('itemIds', e.itemIds.join(','));
  if (e.value !== undefined) f.push('value', String(e.value));
  if (e.variant) f.push('variant', e.variant);
  if (e.modelRevision) f.push('modelRevision', e.modelRevision);
  return f;
}

/** An event read off the stream, with its timestamp parsed. */
export interface DecodedEvent {
  readonly event: AppEvent;
  readonly atMs: number;
}

/**
 * Reads stream fields written by encodeEventFields; a problem (never an exception) when the
 * entry breaks the grammar — such an entry can never be applied.
 */
export function decodeEventFields(fields: readonly string[]): DecodedEvent | EventProblem {
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
  for (const k of ['eventId', 'type', 'userId', 'storeId', 'at'])
    if (f.get(k) === undefined) return { field: k, message: `${k} is missing` };
  const raw = f.get('itemIds') ?? '';
  let itemIds: string[];
  if (raw.startsWith('[')) {
    // Entries of early versions stored a JSON array.
    try {
      const parsed: unknown = JSON.parse(raw);
      if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new Error();
      itemIds = parsed;
    } catch {
      return {
        field: 'itemIds',
        message: `itemIds ${JSON.stringify(raw.slice(0, 80))} is not a list of ids`,
      };
    }
  } else itemIds = raw ? raw.split(',') : [];
  const value = f.get('value');
  if (value !== undefined && !/^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(value))
    return { field: 'value', message: `value ${JSON.stringify(value.slice(0, 40))} is not a number` };
  const variant = f.get('variant');
  const modelRevision = f.get('modelRevision');
  const event: AppEvent = {
    eventId: f.get('eventId')!,
    type: f.get('type') as EventType,
    userId: f.get('userId')!,
    storeId: f.get('storeId')!,
    at: f.get('at')!,
    itemIds,
    ...(value !== undefined ? { value: Number(value) } : {}),
    ...(variant !== undefined ? { variant } : {}),
    ...(modelRevision !== undefined ? { modelRevision } : {}),
  };
  const problem = checkEvent(event);
  return problem ?? { event, atMs: parseTimestampMs(event.at) };
}
