/**
 * The answer of last resort: candidates ranked by their share of the store's drinks at the
 * request's local hour. It needs only the in-memory snapshot, so it works with Redis down and
 * no model loaded.
 */
import { topK } from '../ranking/topk.js';

/** Why a request was answered by the fallback. */
export type FallbackReason =
  'redis_unavailable' | 'deadline_exceeded' | 'model_unavailable' | 'inference_error' | 'features_missing';

export const FALLBACK_REASONS: readonly FallbackReason[] = [
  'redis_unavailable',
  'deadline_exceeded',
  'model_unavailable',
  'inference_error',
  'features_missing',
];

/** Scores (the hour's popularity share) of all catalog items for a store and hour. */
export function hourPopularityScores(popularity: Float32Array, hour: number, nItems: number): Float32Array {
  return popularity.subarray(hour * nItems, (hour + 1) * nItems);
}

/** The `limit` most popular candidates at the store in that hour, best first. */
export function rankByPopularity(
  popularity: Float32Array,
  hour: number,
  nItems: number,
  candidates: readonly number[],
  limit: number,
): number[] {
  return topK(hourPopularityScores(popularity, hour, nItems), candidates, limit);
}
