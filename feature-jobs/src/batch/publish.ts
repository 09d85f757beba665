/**
 * Writes a feature snapshot to Redis under a version id and switches `KEYS.current` to it once
 * every shard has finished. A re-run of the same inputs computes the same version id and writes
 * the same bytes (idempotent); a killed run resumes after its last checkpoint.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  BATCH_TTL_SECONDS,
  KEYS,
  PREFIX,
  USER_FEATURES,
  encodeMatrix,
  encodeUserFeatures,
  type Catalog,
  type StoreInfo,
} from '../../../contracts/features.js';
import {
  addToSegments,
  computeSegmentMeans,
  computeStorePopularity,
  computeUserFeatures,
  newSegmentSums,
  type SegmentSums,
} from './features.js';
import { SetBatch, type RespBulkWriter } from './resp.js';
import type { FeatureSnapshot } from './snapshot.js';
import type { Shard } from './shard.js';

/** Version of the feature job code; recorded in model lineage. Bump when features change meaning. */
export const FEATURE_JOB_VERSION = 'feature-jobs/1.0.0';

/** Bookkeeping keys of a batch version (same TTL as the data). Not read by serving. */
export const BATCH_KEYS = {
  checkpoint: (v: string, shard: number) => `${PREFIX}:features:${v}:checkpoint:${shard}`,
  done: (v: string) => `${PREFIX}:features:${v}:shards-done`,
  segmentSums: (v: string) => `${PREFIX}:features:${v}:segment-sums`,
} as const;

/** Deterministic version id: as-of time plus a hash of everything that determines the bytes. */
export function computeVersionId(opts: {
  datasetHash: string;
  asOf: number;
  windowDays: number;
  shards: number;
}): string {
  const stamp = new Date(opts.asOf * 1000).toISOString().replace(/[-:]/g, '').slice(0, 13);
  const h = createHash('sha256')
    .update(JSON.stringify([opts.datasetHash, opts.asOf, opts.windowDays, opts.shards, FEATURE_JOB_VERSION]))
    .digest('hex');
  return `${stamp}-${h.slice(0, 8)}`;
}

export interface PublishOptions {
  readonly redis: Redis;
  readonly version: string;
  readonly shard: Shard;
  readonly snapshot: FeatureSnapshot;
  readonly catalog: Catalog;
  readonly stores: readonly StoreInfo[];
  readonly ttlSeconds?: number;
  /** Users per pipeline (and per checkpoint). */
  readonly batchSize?: number;
  /** Called after each checkpoint with (users done, users total in shard range). */
  readonly onProgress?: (done: number, total: number) => void;
  /** Raw-protocol writer for the user blobs (much faster than ioredis pipelines); ioredis when absent. */
  readonly bulk?: RespBulkWriter;
  /** Test hook: stop (as if killed) after this many batches. */
  readonly stopAfterBatches?: number;
}

export interface PublishResult {
  readonly version: string;
  readonly usersWritten: number;
  readonly resumedFrom: number;
  readonly switched: boolean;
  readonly alreadyDone: boolean;
}

// Switch only when every shard has reported done and the merged segment means exist; compare
// the as-of stamps (the first 13 characters of a version id) so that a slower run for an older
// cutoff never switches back over a newer one, while a re-run for the same cutoff may.
const SWITCH_SCRIPT = `
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local cur = redis.call('GET', KEYS[3])
if cur and string.sub(cur, 1, 13) > string.sub(ARGV[2], 1, 13) then return -1 end
redis.call('SET', KEYS[3], ARGV[2])
return 1
`;

/** Writes this shard's part of the version and switches when the version is complete. */
export async function publishFeatures(o: PublishOptions): Promise<PublishResult> {
  const { redis, version: v, shard, snapshot } = o;
  const ttl = o.ttlSeconds ?? BATCH_TTL_SECONDS;
  const batchSize = o.batchSize ?? 2000;
  const { agg } = snapshot;
  const alreadyDone = (await redis.sismember(BATCH_KEYS.done(v), String(shard.index))) === 1;
  let usersWritten = 0;
  let resumedFrom = 0;
  if (!alreadyDone) {
    // 1. Shared keys: every shard writes identical bytes, so order and repetition do not matter.
    const shared = redis.pipeline();
    shared.set(KEYS.catalog(v), JSON.stringify(o.catalog), 'EX', ttl);
    shared.del(KEYS.stores(v));
    shared.hset(
      KEYS.stores(v),
      Object.fromEntries(o.stores.map((s) => [s.id, JSON.stringify(storeInfo(s))])),
    );
    shared.expire(KEYS.stores(v), ttl);
    shared.set(KEYS.items(v), encodeMatrix(snapshot.items), 'EX', ttl);
    const isDrink = Uint8Array.from(o.catalog.items, (i) => (i.kind === 'drink' ? 1 : 0));
    const global = new Float32Array(o.catalog.items.length);
    let drinks = 0;
    o.catalog.items.forEach((it, j) => (drinks += it.kind === 'drink' ? snapshot.itemCounts[j]! : 0));
    o.catalog.items.forEach((_, j) => (global[j] = drinks ? snapshot.itemCounts[j]! / drinks : 0));
    o.stores.forEach((s, i) => {
      const pop = computeStorePopularity(snapshot.storeHourCounts, i, isDrink, global);
      shared.set(KEYS.storePopularity(v, s.id), encodeMatrix(pop), 'EX', ttl);
    });
    await execOrThrow(shared);

    // 2. Users, in index order, from the checkpoint on. The checkpoint follows its batch on the
    //    same connection, so it is only ever stored after every write before it was applied.
    const cp = await redis.get(BATCH_KEYS.checkpoint(v, shard.index));
    resumedFrom = cp ? Number(cp) : 0;
    const vec = new Float32Array(USER_FEATURES.length);
    const sums = newSegmentSums();
    // Segment sums need every user of the shard, including those written before a restart.
    for (let u = 0; u < resumedFrom; u++) if (computeUserFeatures(agg, u, vec)) addToSegments(sums, vec);
    let batches = 0;
    const inflight: Promise<void>[] = [];
    for (let start = resumedFrom; start < agg.n; start += batchSize) {
      const end = Math.min(agg.n, start + batchSize);
      let sent: Promise<void>;
      if (o.bulk) {
        const b = new SetBatch(ttl);
        for (let u = start; u < end; u++) {
          if (!computeUserFeatures(agg, u, vec)) continue;
          addToSegments(sums, vec);
          // Same bytes as encodeUserFeatures (a test compares them), without a Buffer per user.
          b.setFloat32(KEYS.user(v, `u${u}`), vec);
          usersWritten++;
        }
        b.setString(BATCH_KEYS.checkpoint(v, shard.index), String(end));
        sent = o.bulk.send(b.bytes(), b.count);
      } else {
        const p = redis.pipeline();
        for (let u = start; u < end; u++) {
          if (!computeUserFeatures(agg, u, vec)) continue;
          addToSegments(sums, vec);
          p.set(KEYS.user(v, `u${u}`), encodeUserFeatures(vec), 'EX', ttl);
          usersWritten++;
        }
        p.set(BATCH_KEYS.checkpoint(v, shard.index), String(end), 'EX', ttl);
        sent = execOrThrow(p);
      }
      inflight.push(sent.then(() => o.onProgress?.(end, agg.n)));
      // A few pipelines in flight keep Redis busy while the next batch is encoded.
      if (inflight.length >= 4) await inflight.shift();
      if (o.stopAfterBatches !== undefined && ++batches >= o.stopAfterBatches) {
        await Promise.all(inflight);
        return { version: v, usersWritten, resumedFrom, switched: false, alreadyDone };
      }
    }
    await Promise.all(inflight);

    // 3. Report this shard's segment sums and mark it done.
    const fin = redis.pipeline();
    fin.hset(BATCH_KEYS.segmentSums(v), String(shard.index), JSON.stringify(sums));
    fin.expire(BATCH_KEYS.segmentSums(v), ttl);
    fin.sadd(BATCH_KEYS.done(v), String(shard.index));
    fin.expire(BATCH_KEYS.done(v), ttl);
    await execOrThrow(fin);
  }
  // 4. Whichever shard finds all shards done merges the segment means and switches.
  const switched = await trySwitch(redis, v, shard.count, ttl);
  return { version: v, usersWritten, resumedFrom, switched, alreadyDone };
}

/** Merges segment means and switches `current` to `v` when all `count` shards are done. */
export async function trySwitch(redis: Redis, v: string, count: number, ttl: number): Promise<boolean> {
  if ((await redis.scard(BATCH_KEYS.done(v))) < count) return false;
  const parts = Object.values(await redis.hgetall(BATCH_KEYS.segmentSums(v))).map(
    (s) => JSON.parse(s) as SegmentSums,
  );
  await redis.set(KEYS.segments(v), encodeMatrix(computeSegmentMeans(parts)), 'EX', ttl);
  const r = await redis.eval(
    SWITCH_SCRIPT,
    3,
    BATCH_KEYS.done(v),
    KEYS.segments(v),
    KEYS.current,
    String(count),
    v,
  );
  return r === 1 || (await redis.get(KEYS.current)) === v;
}

function storeInfo(s: StoreInfo): StoreInfo {
  return {
    id: s.id,
    region: s.region,
    timezone: s.timezone,
    capacityPerHour: s.capacityPerHour,
    unavailable: s.unavailable,
  };
}

async function execOrThrow(p: ReturnType<Redis['pipeline']>): Promise<void> {
  const res = await p.exec();
  for (const [err] of res ?? []) if (err) throw err;
}
