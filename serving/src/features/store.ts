/**
 * Reads the feature layout of contracts/features.ts. The per-version data (catalog, item
 * matrix, stores, segments, popularity by store and hour) is loaded once per published version
 * into an in-memory snapshot; a request then costs one key of the MGET that reads the user blobs
 * of its event-loop turn (batch.ts). The last snapshot is kept when Redis goes away, which is
 * what the popularity fallback answers from.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { FastifyBaseLogger } from 'fastify';
import {
  decodeMatrix,
  decodeUserFeatures,
  ITEM_FEATURES,
  KEYS,
  SEGMENTS,
  USER_FEATURES,
  type Catalog,
  type StoreInfo,
} from '../../../contracts/features.js';
import type { RedisClient } from '../../../contracts/redis.js';
import type { Clock } from '../clock.js';
import { KeyBatcher } from './batch.js';
import { withDeadline } from './deadline.js';
import { multiGetFor } from './redis.js';

/** Everything serving keeps from one published feature version. */
export interface FeatureSnapshot {
  readonly version: string;
  readonly catalog: Catalog;
  readonly indexById: ReadonlyMap<string, number>;
  /** [items x ITEM_FEATURES] row-major. */
  readonly items: Float32Array;
  readonly stores: ReadonlyMap<string, StoreInfo>;
  /** [SEGMENTS x USER_FEATURES] row-major. */
  readonly segments: Float32Array;
  /** Per store [24 x items]: share of the store's drinks per local hour. */
  readonly popularity: ReadonlyMap<string, Float32Array>;
  /** [24 x items] mean over stores, for stores without their own row. */
  readonly globalPopularity: Float32Array;
  readonly loadedAt: number;
}

/** Redis could not answer (down, erroring); the request should fall back. */
export class FeaturesUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FeaturesUnavailableError';
  }
}

/** The user features a request ranks with, and where they came from. */
export interface UserFeatures {
  readonly values: Float32Array;
  /** 'user' = the user's own batch features; 'segment' = cold-start segment means. */
  readonly source: 'user' | 'segment';
}

/** Options of FeatureStore. */
export interface FeatureStoreOptions {
  readonly redis: RedisClient;
  readonly clock: Clock;
  readonly log: FastifyBaseLogger;
  /** How often to look for a newly published version. Default 1000 ms. */
  readonly refreshIntervalMs?: number;
  /** How long start() waits for the first connection. Default 2000 ms. */
  readonly startTimeoutMs?: number;
  /**
   * File the snapshot is saved to after each version load and read at start when Redis cannot
   * be reached, so a process started during a Redis outage can still answer from popularity.
   */
  readonly snapshotPath?: string;
  /** Read the user blobs of one event-loop turn with one MGET (KeyBatcher). Default true. */
  readonly batchUserReads?: boolean;
}

/** The on-disk form of a snapshot (matrices as base64 float32). */
interface SavedSnapshot {
  version: string;
  catalog: Catalog;
  stores: StoreInfo[];
  items: string;
  segments: string;
  popularity: Record<string, string>;
  globalPopularity: string;
}

const f32ToB64 = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const b64ToF32 = (s: string) => {
  const b = Buffer.from(s, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

/** Writes a snapshot file atomically (temp file + rename). */
export async function saveSnapshot(path: string, s: FeatureSnapshot): Promise<void> {
  const saved: SavedSnapshot = {
    version: s.version,
    catalog: s.catalog,
    stores: [...s.stores.values()],
    items: f32ToB64(s.items),
    segments: f32ToB64(s.segments),
    popularity: Object.fromEntries([...s.popularity].map(([k, v]) => [k, f32ToB64(v)])),
    globalPopularity: f32ToB64(s.globalPopularity),
  };
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(saved));
  await rename(tmp, path);
}

/** Reads a snapshot file written by saveSnapshot. */
export async function loadSnapshot(path: string, loadedAt: number): Promise<FeatureSnapshot> {
  const o = JSON.parse(await readFile(path, 'utf8')) as SavedSnapshot;
  const indexById = new Map<string, number>();
  o.catalog.items.forEach((it, i) => indexById.set(it.id, i));
  return {
    version: o.version,
    catalog: o.catalog,
    indexById,
    items: b64ToF32(o.items),
    stores: new Map(o.stores.map((x) => [x.id, x])),
    segments: b64ToF32(o.segments),
    popularity: new Map(Object.entries(o.popularity).map(([k, v]) => [k, b64ToF32(v)])),
    globalPopularity: b64ToF32(o.globalPopularity),
    loadedAt,
  };
}

/** Resolves once the client is ready, or after `ms` (Redis down is not an error here). */
function waitForConnection(redis: RedisClient, ms: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    redis.once('ready', done);
  });
}

export class FeatureStore {
  private snap: FeatureSnapshot | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private lastError: string | undefined;

  private readonly userReads: KeyBatcher | undefined;

  constructor(private readonly opts: FeatureStoreOptions) {
    this.userReads = opts.batchUserReads === false ? undefined : new KeyBatcher(multiGetFor(opts.redis));
  }

  /** The current snapshot (undefined until a version was loaded once). */
  get snapshot(): FeatureSnapshot | undefined {
    return this.snap;
  }

  /** Starts looking for new versions periodically; the first look happens before this resolves. */
  async start(): Promise<void> {
    // Without an offline queue, commands fail until the connection is up: give it a moment.
    await waitForConnection(this.opts.redis, this.opts.startTimeoutMs ?? 2000);
    await this.refresh();
    if (!this.snap && this.opts.snapshotPath) {
      try {
        this.snap = await loadSnapshot(this.opts.snapshotPath, this.opts.clock.now());
        this.opts.log.warn(
          { featureVersion: this.snap.version },
          'Redis unavailable; serving from the saved snapshot',
        );
      } catch (err) {
        this.opts.log.warn({ err: (err as Error).message }, 'no saved feature snapshot to start from');
      }
    }
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshIntervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Loads the published version if it differs from the snapshot's; never throws. */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    try {
      const version = await this.opts.redis.get(KEYS.current);
      if (version === null) {
        this.noteError(`${KEYS.current} is not set; no feature version published yet`);
        return;
      }
      if (version === this.snap?.version) {
        this.lastError = undefined;
        return;
      }
      this.snap = await this.loadVersion(version);
      this.lastError = undefined;
      if (this.opts.snapshotPath) {
        await saveSnapshot(this.opts.snapshotPath, this.snap).catch((err: unknown) =>
          this.opts.log.warn({ err: (err as Error).message }, 'could not save the feature snapshot'),
        );
      }
      this.opts.log.info(
        { featureVersion: version, items: this.snap.catalog.items.length, stores: this.snap.stores.size },
        'feature version loaded',
      );
    } catch (err) {
      this.noteError((err as Error).message);
    }
  }

  private noteError(message: string): void {
    if (message !== this.lastError) this.opts.log.warn({ err: message }, 'feature refresh failed');
    this.lastError = message;
  }

  private async loadVersion(v: string): Promise<FeatureSnapshot> {
    const r = this.opts.redis;
    const [catalogJson, itemsBlob, storesHash, segmentsBlob] = await Promise.all([
      r.get(KEYS.catalog(v)),
      r.getBuffer(KEYS.items(v)),
      r.hgetall(KEYS.stores(v)),
      r.getBuffer(KEYS.segments(v)),
    ]);
    if (catalogJson === null) throw new Error(`version ${v}: ${KEYS.catalog(v)} missing`);
    if (itemsBlob === null) throw new Error(`version ${v}: ${KEYS.items(v)} missing`);
    const catalog = JSON.parse(catalogJson) as Catalog;
    const n = catalog.items.length;
    const items = decodeMatrix(itemsBlob);
    if (items.length !== n * ITEM_FEATURES.length) {
      throw new Error(
        `version ${v}: item matrix has ${items.length} values, expected ${n}x${ITEM_FEATURES.length}`,
      );
    }
    const indexById = new Map<string, number>();
    catalog.items.forEach((it, i) => indexById.set(it.id, i));
    const stores = new Map<string, StoreInfo>();
    for (const [id, json] of Object.entries(storesHash)) stores.set(id, JSON.parse(json) as StoreInfo);
    let segments = segmentsBlob ? decodeMatrix(segmentsBlob) : new Float32Array(0);
    if (segments.length !== SEGMENTS.length * USER_FEATURES.length) {
      segments = new Float32Array(SEGMENTS.length * USER_FEATURES.length);
    }
    const ids = [...stores.keys()];
    // One command per store rather than a pipeline: a cluster spreads these keys over its
    // nodes, and auto-pipelining still sends each node's share in one write.
    const results = await Promise.all(
      ids.map((id) =>
        r.getBuffer(KEYS.storePopularity(v, id)).then(
          (blob): [Error | null, Buffer | null] => [null, blob],
          (err: unknown): [Error | null, Buffer | null] => [err as Error, null],
        ),
      ),
    );
    const popularity = new Map<string, Float32Array>();
    const globalPopularity = new Float32Array(24 * n);
    let counted = 0;
    results.forEach(([err, blob], i) => {
      if (err || !(blob instanceof Buffer)) return;
      const m = decodeMatrix(blob);
      if (m.length !== 24 * n) return;
      popularity.set(ids[i]!, m);
      for (let j = 0; j < m.length; j++) globalPopularity[j]! += m[j]!;
      counted++;
    });
    if (counted > 0) for (let j = 0; j < globalPopularity.length; j++) globalPopularity[j]! /= counted;
    else
      for (let h = 0; h < 24; h++)
        for (let i = 0; i < n; i++) globalPopularity[h * n + i] = items[i * ITEM_FEATURES.length]!;
    return {
      version: v,
      catalog,
      indexById,
      items,
      stores,
      segments,
      popularity,
      globalPopularity,
      loadedAt: this.opts.clock.now(),
    };
  }

  /**
   * The user's feature vector under the snapshot's version, or the cold-start segment's when
   * the user has none. Rejects with FeaturesUnavailableError when Redis fails and with
   * DeadlineExceededError after `deadlineMs`.
   */
  async userFeatures(snap: FeatureSnapshot, userId: string, deadlineMs: number): Promise<UserFeatures> {
    let blob: Buffer | null;
    try {
      const key = KEYS.user(snap.version, userId);
      blob = this.userReads
        ? await this.userReads.get(key, deadlineMs)
        : await withDeadline(this.opts.redis.getBuffer(key), deadlineMs);
    } catch (err) {
      if ((err as Error).name === 'DeadlineExceededError') throw err;
      throw new FeaturesUnavailableError(`user features: ${(err as Error).message}`, { cause: err });
    }
    if (blob !== null) {
      try {
        return { values: decodeUserFeatures(blob), source: 'user' };
      } catch {
        // A malformed blob is treated like a missing one: the user still gets an answer.
      }
    }
    return { values: coldStartFeatures(snap), source: 'segment' };
  }
}

/** The cold-start segment's mean features (segment 0), with no recent items. */
export function coldStartFeatures(snap: FeatureSnapshot): Float32Array {
  const f = USER_FEATURES.length;
  const out = snap.segments.slice(0, f);
  for (let i = 1; i <= 5; i++)
    out[USER_FEATURES.indexOf(`recent_${i}` as (typeof USER_FEATURES)[number])] = -1;
  out[USER_FEATURES.indexOf('segment')] = 0;
  return out;
}
