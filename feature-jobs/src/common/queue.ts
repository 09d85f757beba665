/**
 * The store queue model shared by the generator (ground-truth waits), the stream job (live
 * counters in Redis) and pickup-time training (its queue feature): drinks waiting drain at the
 * store's capacity; each order adds its drinks. Using one function keeps the feature serving
 * reads identical to the one the model was trained on.
 */

/** Drinks still waiting at `nowMs` given `queue` drinks at `lastMs` and a drain of `capacityPerHour`. */
export function drainQueue(queue: number, lastMs: number, nowMs: number, capacityPerHour: number): number {
  if (nowMs <= lastMs) return queue;
  return Math.max(0, queue - ((nowMs - lastMs) / 3_600_000) * capacityPerHour);
}

/** Seconds to clear `queue` drinks at `capacityPerHour`. */
export function queueWaitSeconds(queue: number, capacityPerHour: number): number {
  return (queue * 3600) / Math.max(1, capacityPerHour);
}
