/**
 * The jobs' Redis connection: one instance or a Redis Cluster (contracts/redis-target.ts),
 * connected before the command starts so a wrong address fails at once with a clear message.
 */
import {
  REDIS_ENV,
  createRedisClient,
  parseRedisTarget,
  type Durability,
  type RedisClient,
  type RedisTarget,
} from '../../../contracts/redis.js';

/** Options of connectJobRedis. */
export interface JobRedisOptions {
  /** The cluster flag (default $CREMA_REDIS_CLUSTER). */
  readonly cluster?: string | undefined;
  /**
   * Keep reconnecting for as long as it takes (the stream job, which decides itself when an
   * outage has lasted too long). Default false: give up after a few attempts, so a batch job
   * fails visibly.
   */
  readonly patient?: boolean;
}

/** Parses `address` (throws RedisTargetError naming `--redis`) without connecting. */
export function parseJobTarget(address: string, opts: JobRedisOptions = {}): RedisTarget {
  return parseRedisTarget(address, {
    cluster: opts.cluster ?? process.env[REDIS_ENV.cluster],
    name: '--redis',
  });
}

/** A connected client for `target`; rejects when it cannot connect. */
export async function connectJobRedis(target: RedisTarget, opts: JobRedisOptions = {}): Promise<RedisClient> {
  const patient = opts.patient ?? false;
  const client = createRedisClient(target, {
    redis: {
      lazyConnect: true,
      maxRetriesPerRequest: 2,
      connectTimeout: 2000,
      retryStrategy: (times) => (!patient && times > 5 ? null : Math.min(times * 200, 2000)),
    },
    cluster: {
      lazyConnect: true,
      // One write per node for the commands issued together (user blobs, effect scripts).
      enableAutoPipelining: true,
      slotsRefreshInterval: 1000,
      slotsRefreshTimeout: 2000,
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      clusterRetryStrategy: (times) => (!patient && times > 5 ? null : Math.min(times * 200, 2000)),
    },
  });
  client.on('error', () => {}); // failures surface as rejected commands
  try {
    await client.connect();
  } catch (err) {
    client.disconnect();
    throw err;
  }
  return client;
}

/**
 * Replicas that must confirm the stream job's effects before it acknowledges an entry: the
 * flag, else $CREMA_REDIS_WAIT_REPLICAS, else 1 on a cluster and 0 on one instance.
 */
export function jobDurability(
  target: RedisTarget,
  flags: { replicas?: number | undefined; timeoutMs?: number | undefined },
): Durability {
  const env = (name: string) => {
    const v = process.env[name];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0)
      throw new RangeError(`${name} must be a non-negative integer, got ${v}`);
    return n;
  };
  return {
    replicas: flags.replicas ?? env(REDIS_ENV.waitReplicas) ?? (target.kind === 'cluster' ? 1 : 0),
    timeoutMs: flags.timeoutMs ?? env(REDIS_ENV.waitTimeoutMs) ?? 100,
  };
}
