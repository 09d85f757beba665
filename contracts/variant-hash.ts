/**
 * Sticky variant assignment shared by the serving router and the operator's experiment
 * analysis: the same (userId, salt) always lands in the same bucket, on every replica and
 * across restarts. Variants own contiguous bucket ranges in the order given, so moving weight
 * between two variants re-assigns only the users in the moved range.
 */
import { createHash } from 'node:crypto';

/** Number of buckets; weights are percentages, so each percent is 100 buckets. */
export const BUCKETS = 10_000;

/** Bucket in [0, BUCKETS) of a user under a salt. */
export function bucketOf(userId: string, salt: string): number {
  const digest = createHash('sha256').update(salt).update('\0').update(userId).digest();
  return digest.readUInt32BE(0) % BUCKETS;
}

/** A variant and its traffic share in percent (may be fractional). */
export interface WeightedVariant {
  readonly name: string;
  readonly weight: number;
}

/**
 * Name of the variant that owns `userId`'s bucket. Weights must sum to 100; the last variant
 * with a positive weight absorbs rounding.
 */
export function assignVariant(userId: string, salt: string, variants: readonly WeightedVariant[]): string {
  const total = variants.reduce((s, v) => s + v.weight, 0);
  if (variants.length === 0 || Math.abs(total - 100) > 1e-6) {
    throw new RangeError(`variant weights must sum to 100, got ${total}`);
  }
  const b = bucketOf(userId, salt);
  let upper = 0;
  let last = variants[0]!.name;
  for (const v of variants) {
    if (v.weight <= 0) continue;
    last = v.name;
    upper += (v.weight / 100) * BUCKETS;
    if (b < Math.round(upper)) return v.name;
  }
  return last;
}
