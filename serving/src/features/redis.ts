import { Redis } from 'ioredis';
import {
  createRedisClient,
  isCluster,
  type RedisClient,
  type RedisTarget,
} from '../../../contracts/redis.js';
import type { MultiGet } from './batch.js';

/** Options of the serving clients. */
export interface ServingRedisOptions {
  /** Default true. */
  readonly autoPipelining?: boolean;
  /** Fail a command not answered within this many ms (default: none; request deadlines apply). */
  readonly commandTimeoutMs?: number;
}

/**
 * A Redis client tuned for serving: no offline queue and no per-command retries, so a command
 * issued while Redis is down fails at once and the request falls back instead of waiting.
 * The client keeps reconnecting in the background. Auto-pipelining (default on) sends the GETs
 * of concurrent requests in one write.
 */
export function createServingRedis(url: string, opts: ServingRedisOptions = {}): Redis {
  return new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    retryStrategy: (times) => Math.min(50 * times, 1000),
    enableAutoPipelining: opts.autoPipelining ?? true,
    reconnectOnError: () => false,
    ...(opts.commandTimeoutMs ? { commandTimeout: opts.commandTimeoutMs } : {}),
  });
}

/**
 * createServingRedis for any address (contracts/redis.ts): one instance, or a Redis Cluster
 * with the same per-connection settings. On a cluster auto-pipelining writes once per node, a
 * command for a node that is gone fails at once, and the slot map is refreshed every second as
 * well as on every redirect, so a promoted replica is found within about a second of a failover.
 */
export function createServingClient(target: RedisTarget, opts: ServingRedisOptions = {}): RedisClient {
  if (target.kind === 'single') return createServingRedis(target.url, opts);
  return createRedisClient(target, {
    redis: {
      maxRetriesPerRequest: 0,
      connectTimeout: 1000,
      reconnectOnError: () => false,
      ...(opts.commandTimeoutMs ? { commandTimeout: opts.commandTimeoutMs } : {}),
    },
    cluster: {
      enableOfflineQueue: false,
      enableAutoPipelining: opts.autoPipelining ?? true,
      clusterRetryStrategy: (times) => Math.min(100 * times, 1000),
      slotsRefreshInterval: 1000,
      slotsRefreshTimeout: 1000,
      // A command whose node went away, or whose slot has no primary while a replica takes
      // over, fails at once (like a command to a single Redis that is down): the request falls
      // back now instead of after its deadline, and a slow fallback never looks like overload
      // to admission control. Redirects (MOVED) are still followed.
      retryDelayOnFailover: 0,
      retryDelayOnClusterDown: 0,
      maxRedirections: 6,
    },
  });
}

/**
 * The MGET of KeyBatcher for `redis`. One instance: one MGET. A cluster: one GET per key
 * (auto-pipelining sends each node's GETs in one write), since the keys of a turn are spread
 * over many slots; a key whose node fails gets its own Error and the others still answer.
 */
export function multiGetFor(redis: RedisClient): MultiGet {
  if (!isCluster(redis)) return (keys) => redis.mgetBuffer(keys);
  return (keys) => Promise.all(keys.map((k) => redis.getBuffer(k).catch((err: unknown) => toError(err))));
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
