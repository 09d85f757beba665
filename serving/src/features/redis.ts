import { Redis } from 'ioredis';

/**
 * A Redis client tuned for serving: no offline queue and no per-command retries, so a command
 * issued while Redis is down fails at once and the request falls back instead of waiting.
 * The client keeps reconnecting in the background. Auto-pipelining (default on) sends the GETs
 * of concurrent requests in one write.
 */
export function createServingRedis(url: string, opts: { autoPipelining?: boolean } = {}): Redis {
  return new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    retryStrategy: (times) => Math.min(50 * times, 1000),
    enableAutoPipelining: opts.autoPipelining ?? true,
    reconnectOnError: () => false,
  });
}
