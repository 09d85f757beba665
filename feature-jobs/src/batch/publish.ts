/**
 * Writes a feature snapshot to Redis under a version id and switches `KEYS.current` to it once
 * every shard has finished. A re-run of the same inputs computes the same version id and writes
 * the same bytes (idempotent); a killed run resumes after its last checkpoint.
 */
import { createHash } from 'node:crypto';
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
import { isCluster, type RedisClient } from '../../../contracts/redis.js';
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
  /** One instance or a cluster; on a cluster `bulk` is not used (it writes to one node). */
  readonly redis: RedisClient;
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

// Compare the as-of stamps (the first 13 characters of a version id) so that a slower run for
// an older cutoff never switches back over a newer one, while a re-run for the same cutoff may.
// It touches `current` alone, so it runs on a cluster too; trySwitch checks before that every
// shard is done and the merged segment means exist (both only ever grow until their TTL).
const SWITCH_SCRIPT = `
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 13) > string.sub(ARGV[1], 1, 13) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
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
    // 1. Shared keys: every shard writes identical bytes, so order and repetition do not matter
    //    (the stores hash's commands reach its node in the order given).
    const shared: Command[] = [
      ['set', KEYS.catalog(v), JSON.stringify(o.catalog), 'EX', ttl],
      ['del', KEYS.stores(v)],
      ['hset', KEYS.stores(v), ...o.stores.flatMap((s) => [s.id, JSON.stringify(storeInfo(s))])],
      ['expire', KEYS.stores(v), ttl],
    ];
    shared.push(['set', KEYS.items(v), encodeMatrix(snapshot.items), 'EX', ttl]);
    const isDrink = Uint8Array.from(o.catalog.items, (i) => (i.kind === 'drink' ? 1 : 0));
    const global = new Float32Array(o.catalog.items.length);
    let drinks = 0;
    o.catalog.items.forEach((it, j) => (drinks += it.kind === 'drink' ? snapshot.itemCounts[j]! : 0));
    o.catalog.items.forEach((_, j) => (global[j] = drinks ? snapshot.itemCounts[j]! / drinks : 0));
    o.stores.forEach((s, i) => {
      const pop = computeStorePopularity(snapshot.storeHourCounts, i, isDrink, global);
      shared.push(['set', KEYS.storePopularity(v, s.id), encodeMatrix(pop), 'EX', ttl]);
    });
    await sendAll(redis, shared);

    // 2. Users, in index order, from the checkpoint on. The checkpoint follows its batch on the
    //    same connection, so it is only ever stored after every write before it was applied. A
    //    cluster spreads a batch over its nodes: there the checkpoint is written once the batch's
    //    writes and the previous checkpoint are acknowledged.
    const cp = await redis.get(BATCH_KEYS.checkpoint(v, shard.index));
    resumedFrom = cp ? Number(cp) : 0;
    const vec = new Float32Array(USER_FEATURES.length);
    const sums = newSegmentSums();
    // Segment sums need every user of the shard, including those written before a restart.
    for (let u = 0; u < resumedFrom; u++) if (computeUserFeatures(agg, u, vec)) addToSegments(sums, vec);
    let batches = 0;
    const inflight: Promise<void>[] = [];
    const cluster = isCluster(redis);
    let checkpointed: Promise<unknown> = Promise.resolve();
    for (let start = resumedFrom; start < agg.n; start += batchSize) {
      const end = Math.min(agg.n, start + batchSize);
      let sent: Promise<void>;
      if (cluster) {
        const writes: Promise<unknown>[] = [];
        for (let u = start; u < end; u++) {
          if (!computeUserFeatures(agg, u, vec)) continue;
          addToSegments(sums, vec);
          writes.push(redis.set(KEYS.user(v, `u${u}`), encodeUserFeatures(vec), 'EX', ttl));
          usersWritten++;
        }
        const before = checkpointed;
        checkpointed = sent = Promise.all([...writes, before]).then(async () => {
          await redis.set(BATCH_KEYS.checkpoint(v, shard.index), String(end), 'EX', ttl);
        });
      } else if (o.bulk) {
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

    // 3. Report this shard's segment sums, then mark it done.
    await sendAll(redis, [
      ['hset', BATCH_KEYS.segmentSums(v), String(shard.index), JSON.stringify(sums)],
      ['expire', BATCH_KEYS.segmentSums(v), ttl],
    ]);
    await sendAll(redis, [
      ['sadd', BATCH_KEYS.done(v), String(shard.index)],
      ['expire', BATCH_KEYS.done(v), ttl],
    ]);
  }
  // 4. Whichever shard finds all shards done merges the segment means and switches.
  const switched = await trySwitch(redis, v, shard.count, ttl);
  return { version: v, usersWritten, resumedFrom, switched, alreadyDone };
}

/** Merges segment means and switches `current` to `v` when all `count` shards are done. */
export async function trySwitch(redis: RedisClient, v: string, count: number, ttl: number): Promise<boolean> {
  if ((await redis.scard(BATCH_KEYS.done(v))) < count) return false;
  const parts = Object.values(await redis.hgetall(BATCH_KEYS.segmentSums(v))).map(
    (s) => JSON.parse(s) as SegmentSums,
  );
  await redis.set(KEYS.segments(v), encodeMatrix(computeSegmentMeans(parts)), 'EX', ttl);
  const r = await redis.eval(SWITCH_SCRIPT, 1, KEYS.current, v);
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

async function execOrThrow(p: ReturnType<RedisClient['pipeline']>): Promise<void> {
  const res = await p.exec();
  for (const [err] of res ?? []) if (err) throw err;
}

/** A command as its name and arguments. */
type Command = [name: string, key: string, ...args: (string | Buffer | number)[]];

/**
 * Sends `commands` together and throws the first error: one pipeline on one instance; on a
 * cluster one call each (a cluster pipeline must stay on one node), which the client's
 * auto-pipelining still sends as one write per node.
 */
async function sendAll(redis: RedisClient, commands: readonly Command[]): Promise<void> {
  if (isCluster(redis)) {
    await Promise.all(commands.map(([name, ...args]) => redis.call(name, ...args)));
    return;
  }
  const p = redis.pipeline();
  for (const [name, ...args] of commands) p.call(name, ...args);
  await execOrThrow(p);
}
