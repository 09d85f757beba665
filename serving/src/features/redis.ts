import { Redis } from 'ioredis';

/**
 * A Redis client tuned for serving: no offline queue and no per-command retries, so a command
 * issued while Redis is down fails at once and the request falls back instead of waiting.
 * The client keeps reconnecting in the background.
 */
export function createServingRedis(url: string): Redis {
  return new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    retryStrategy: (times) => Math.min(50 * times, 1000),
    // Reconnect on READONLY etc. is not needed; keep failures visible.
    reconnectOnError: () => false,
  });
}
