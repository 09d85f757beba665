/**
 * The Redis feature layout shared by feature-jobs (writer) and serving (reader). Change it
 * only together with FEATURE_SCHEMA_VERSION; models record the version they were trained on.
 *
 * Batch features are written under a fresh version prefix and published by one atomic SET of
 * `KEYS.current`; readers resolve the current version once and read only under it, so they
 * never see a half-written version. Old versions expire by TTL.
 *
 * Redis Cluster: a script or multi-key command may only touch keys of one hash slot. Keys that
 * are written together with another key are named `{K}:...` after that key K (a hash tag: only
 * the part in braces is hashed, and an untagged key is hashed whole), so they share K's slot
 * while K keeps its name: an event's dedup marker lives beside the events stream, an applied
 * marker beside the online hash it guards. Every other key hashes on its own, so user blobs and
 * online hashes spread over the cluster. Ids inside keys never contain braces (serving's id
 * patterns refuse them). Changing which keys share a slot changes no feature and needs no
 * FEATURE_SCHEMA_VERSION bump, but it is a layout change all writers and readers must agree on.
 */

/** Bumped whenever USER_FEATURES, ITEM_FEATURES or the encodings below change. */
export const FEATURE_SCHEMA_VERSION = 1;

/** Every key Crema writes contains this prefix (it starts with it, or with `{` and then it). */
export const PREFIX = 'crema';

/** Ordered user feature vector; the binary blob stores them as little-endian float32 in this order. */
export const USER_FEATURES = [
  'recency_days', // days since last order (capped at 90)
  'frequency_30d', // orders in the last 30 days
  'monetary_30d', // dollars spent in the last 30 days
  'avg_order_value', // dollars
  'cat_hot', // share of drinks by category (sums to 1 over the four)
  'cat_iced',
  'cat_blended',
  'cat_energy',
  'tod_early', // share of orders by local time of day: 05-09, 09-12, 12-14, 14-17, 17-22
  'tod_morning',
  'tod_midday',
  'tod_afternoon',
  'tod_evening',
  'weekday_share', // share of orders Monday-Friday
  'addon_attach_rate', // add-ons per drink
  'segment', // integer segment id (0 = cold start), see SEGMENTS
  'recent_1', // item index of the most recent drinks, -1 when none
  'recent_2',
  'recent_3',
  'recent_4',
  'recent_5',
] as const;
export type UserFeatureName = (typeof USER_FEATURES)[number];

/** Segments for cold-start users and coarse personalization. */
export const SEGMENTS = ['cold_start', 'morning_commuter', 'afternoon_treat', 'weekend', 'lapsing'] as const;

/** Ordered per-item feature vector (float32), one row per catalog item in catalog order. */
export const ITEM_FEATURES = [
  'popularity', // share of all drinks ordered (0..1)
  'price', // dollars, base size
  'prep_complexity', // 1 (drip) .. 5 (layered blended)
  'is_hot',
  'is_iced',
  'is_blended',
  'is_energy',
  'is_seasonal',
] as const;

/** One item's row of the item feature matrix, in ITEM_FEATURES order. */
export function itemFeatureRow(item: CatalogItem, popularity: number): number[] {
  return [
    popularity,
    item.price,
    item.prepComplexity,
    item.category === 'hot' ? 1 : 0,
    item.category === 'iced' ? 1 : 0,
    item.category === 'blended' ? 1 : 0,
    item.category === 'energy' ? 1 : 0,
    item.season ? 1 : 0,
  ];
}

const EVENTS = `${PREFIX}:events`;
const onlineUser = (userId: string) => `${PREFIX}:online:user:${userId}`;
const storeQueue = (storeId: string) => `${PREFIX}:online:store:${storeId}`;

/** Redis keys. `v` is a batch version id (e.g. `20261124T2100-3f2a`). */
export const KEYS = {
  /** String: the version id readers must use. Switched atomically after a complete write. */
  current: `${PREFIX}:features:current`,
  /** String (JSON Catalog) for version v. */
  catalog: (v: string) => `${PREFIX}:features:${v}:catalog`,
  /** Hash storeId -> JSON StoreInfo for version v. */
  stores: (v: string) => `${PREFIX}:features:${v}:stores`,
  /** String: binary user feature blob (encodeUserFeatures). */
  user: (v: string, userId: string) => `${PREFIX}:features:${v}:user:${userId}`,
  /** String: float32 matrix [items x ITEM_FEATURES]. */
  items: (v: string) => `${PREFIX}:features:${v}:items`,
  /** String: float32 matrix [24 hours x items], share of a store's drinks per local hour. */
  storePopularity: (v: string, storeId: string) => `${PREFIX}:features:${v}:pop:${storeId}`,
  /** String: float32 [SEGMENTS x USER_FEATURES], mean features per segment for cold start. */
  segments: (v: string) => `${PREFIX}:features:${v}:segments`,
  /** Hash: online features from the stream job (last_order_at, last_item, channel, ...). */
  onlineUser,
  /** Hash: per-store live counters: queue (drinks waiting), prep_load (sum of complexity). */
  storeQueue,
  /** Stream of app events (impression, click, add_to_cart, order). Fields: contracts/events.ts. */
  events: EVENTS,
  /**
   * Stream of events entries the stream job could not apply: `sourceId`, `reason`, `fields`
   * (JSON). In the events stream's slot (one script moves an entry from one to the other).
   */
  eventsDeadLetter: `${sameSlotAs(EVENTS)}:dead`,
  /** String with TTL: marks an event id as accepted (dedup at ingest). In the stream's slot. */
  eventSeen: (eventId: string) => `${sameSlotAs(EVENTS)}:seen:${eventId}`,
  /**
   * String with TTL: the event's effect on the user's online hash was applied by the stream job
   * (exactly-once effect). In the slot of `onlineUser(userId)`.
   */
  eventApplied: (userId: string, eventId: string) => `${sameSlotAs(onlineUser(userId))}:applied:${eventId}`,
  /** String with TTL: the order's effect on the store's live counters was applied. In the slot of `storeQueue(storeId)`. */
  storeEventApplied: (storeId: string, eventId: string) =>
    `${sameSlotAs(storeQueue(storeId))}:applied:${eventId}`,
} as const;

/** The hash tag that puts a key named `{key}:...` in the slot of `key` itself. */
function sameSlotAs(key: string): string {
  return `{${key}}`;
}

/** TTL of a batch version's keys, seconds. Long enough to survive a missed nightly run. */
export const BATCH_TTL_SECONDS = 3 * 86_400;

/** A drink or add-on on the menu. */
export interface CatalogItem {
  readonly id: string;
  readonly index: number;
  readonly name: string;
  readonly kind: 'drink' | 'addon';
  readonly category: 'hot' | 'iced' | 'blended' | 'energy' | 'addon';
  readonly price: number;
  readonly prepComplexity: number;
  /** Month-day window (inclusive, "MM-DD") when the item is sold; absent = all year. */
  readonly season?: { readonly start: string; readonly end: string };
}

/** The whole menu of a feature version; item index = position in `items`. */
export interface Catalog {
  readonly items: readonly CatalogItem[];
}

/** One store as serving needs it. */
export interface StoreInfo {
  readonly id: string;
  readonly region: string;
  readonly timezone: string;
  /** Drinks per hour the store can make. */
  readonly capacityPerHour: number;
  /** Catalog item ids the store does not sell. */
  readonly unavailable: readonly string[];
}

/** An app event (grammar and stream encoding: contracts/events.ts). */
export interface AppEvent {
  readonly eventId: string;
  readonly type: 'impression' | 'click' | 'add_to_cart' | 'order';
  readonly userId: string;
  readonly storeId: string;
  readonly at: string; // RFC 3339 timestamp, parsed by parseTimestampMs
  readonly itemIds?: readonly string[];
  readonly value?: number; // order value in dollars; absent on an order = unknown
  readonly variant?: string;
  readonly modelRevision?: string;
}

/** The clock features a model may use, as training writes them and serving computes them. */
export interface ClockFeatures {
  /** sin(2π·hour/24) */
  readonly hour_sin: number;
  readonly hour_cos: number;
  /** 1 on Saturday and Sunday */
  readonly is_weekend: number;
}

/** The clock features of a store-local `hour` (0..23) and `weekday` (0 = Sunday). */
export function computeClockFeatures(hour: number, weekday: number): ClockFeatures {
  const angle = (2 * Math.PI * hour) / 24;
  return {
    hour_sin: Math.sin(angle),
    hour_cos: Math.cos(angle),
    is_weekend: weekday === 0 || weekday === 6 ? 1 : 0,
  };
}

/** Encodes a user feature vector (length USER_FEATURES.length) as a little-endian float32 blob. */
export function encodeUserFeatures(values: ArrayLike<number>): Buffer {
  if (values.length !== USER_FEATURES.length) {
    throw new RangeError(`user features: expected ${USER_FEATURES.length} values, got ${values.length}`);
  }
  const buf = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) buf.writeFloatLE(values[i]!, i * 4);
  return buf;
}

/** Decodes a blob written by encodeUserFeatures; throws on a wrong length. */
export function decodeUserFeatures(blob: Buffer): Float32Array {
  if (blob.length !== USER_FEATURES.length * 4) {
    throw new RangeError(`user features: blob of ${blob.length} bytes, expected ${USER_FEATURES.length * 4}`);
  }
  const out = new Float32Array(USER_FEATURES.length);
  for (let i = 0; i < out.length; i++) out[i] = blob.readFloatLE(i * 4);
  return out;
}

/** Encodes a float32 matrix (row-major) as a little-endian blob. */
export function encodeMatrix(values: Float32Array): Buffer {
  const buf = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) buf.writeFloatLE(values[i]!, i * 4);
  return buf;
}

/** Decodes a blob written by encodeMatrix. */
export function decodeMatrix(blob: Buffer): Float32Array {
  if (blob.length % 4 !== 0) throw new RangeError(`matrix blob of ${blob.length} bytes is not float32`);
  const out = new Float32Array(blob.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = blob.readFloatLE(i * 4);
  return out;
}
