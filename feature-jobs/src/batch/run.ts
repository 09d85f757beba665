/** The `features` command: dataset → snapshot → Redis, with progress and a JSON summary. */
import { isCluster, type RedisClient } from '../../../contracts/redis.js';
import { createProgress } from '../common/progress.js';
import type { Dataset } from '../generate/dataset.js';
import { computeVersionId, publishFeatures, type PublishResult } from './publish.js';
import { RespBulkWriter } from './resp.js';
import { computeSnapshot } from './snapshot.js';
import type { Shard } from './shard.js';

export interface FeaturesCommandOptions {
  readonly dataset: Dataset;
  /** YYYY-MM-DD; features describe history before 00:00 UTC of this date. Default: day after the last day. */
  readonly asOf?: string;
  readonly windowDays: number;
  readonly shard: Shard;
  readonly redis: RedisClient;
  readonly tty: boolean;
  readonly ttlSeconds?: number;
  /** Users per pipeline and checkpoint. */
  readonly batchSize?: number;
  readonly log: (line: string) => void;
}

export interface FeaturesSummary extends PublishResult {
  readonly asOf: string;
  readonly shard: string;
  readonly computeMs: number;
  readonly writeMs: number;
}

/** Runs the batch feature job for one shard. */
export async function runFeatures(o: FeaturesCommandOptions): Promise<FeaturesSummary> {
  const ds = o.dataset;
  const last = ds.days[ds.days.length - 1]!;
  const asOf = o.asOf ?? new Date(Date.parse(`${last}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);
  const t0 = Date.now();
  const snapshot = computeSnapshot(ds, asOf, o.windowDays, o.shard);
  const computeMs = Date.now() - t0;
  const version = computeVersionId({
    datasetHash: ds.manifest.hash,
    asOf: snapshot.asOf,
    windowDays: o.windowDays,
    shards: o.shard.count,
  });
  o.log(`features: version ${version}, shard ${o.shard.index}/${o.shard.count}, computed in ${computeMs} ms`);
  const bar = createProgress('users', o.tty);
  const t1 = Date.now();
  // The raw-protocol writer needs one plain TCP connection; with TLS or a cluster the ioredis
  // path is used.
  const ro = isCluster(o.redis) ? undefined : o.redis.options;
  const bulk =
    !ro || ro.tls
      ? undefined
      : await RespBulkWriter.connect({
          host: ro.host ?? '127.0.0.1',
          port: ro.port ?? 6379,
          ...(ro.username ? { username: ro.username } : {}),
          ...(ro.password ? { password: ro.password } : {}),
          ...(ro.db ? { db: ro.db } : {}),
        });
  const res = await publishFeatures({
    ...(bulk ? { bulk } : {}),
    redis: o.redis,
    version,
    shard: o.shard,
    snapshot,
    catalog: ds.catalog,
    stores: ds.stores,
    ...(o.ttlSeconds ? { ttlSeconds: o.ttlSeconds } : {}),
    ...(o.batchSize ? { batchSize: o.batchSize } : {}),
    onProgress: (d, t) => bar.update(d, t),
  });
  bar.done();
  bulk?.close();
  return { ...res, asOf, shard: `${o.shard.index}/${o.shard.count}`, computeMs, writeMs: Date.now() - t1 };
}
