/**
 * Pickup-time arithmetic. The pickup model (when loaded) predicts minutes until an order is
 * ready from the store's live queue and the order's prep complexity; without it a
 * capacity-based queue estimate is used. Both widen into an uncertainty band, and the best
 * time to order is the latest time whose pessimistic ready time still meets the wanted time.
 */

/** Features a pickup-time model may use, in any order. */
export const PICKUP_FEATURES = [
  'queue', // drinks waiting at the store
  'prep_load', // sum of prep complexity of the waiting drinks
  'order_items', // drinks in this order
  'order_complexity', // sum of prep complexity of this order
  'capacity_per_hour', // drinks per hour the store can make
  'hour_sin',
  'hour_cos',
  'is_weekend',
] as const;
export type PickupFeature = (typeof PICKUP_FEATURES)[number];

/** Throws naming the first feature a pickup model asks for that serving cannot compute. */
export function checkPickupFeatures(features: readonly string[]): void {
  for (const f of features) {
    if (!(PICKUP_FEATURES as readonly string[]).includes(f))
      throw new RangeError(`feature ${f} is not one serving can compute`);
  }
}

/** Complexity of an average drink; capacityPerHour is quoted in average drinks. */
const AVERAGE_COMPLEXITY = 2.5;
/** Minutes to hand over a finished order. */
const HANDOFF_MINUTES = 1;

/** Minutes until ready from the queue and order alone (no model). */
export function estimateMinutesFromQueue(f: Record<PickupFeature, number>): number {
  const perMinute = Math.max(f.capacity_per_hour, 1) / 60;
  const work = (f.prep_load + f.order_complexity) / AVERAGE_COMPLEXITY;
  return HANDOFF_MINUTES + work / perMinute;
}

/**
 * A region's capacity applied to an estimate (ADR 0014): the store cannot make the drinks ahead
 * of this order and the order itself faster than `drinksPerHour`, so an estimate (the model's or
 * the heuristic's) that promises sooner is moved to that bound, and so is the band's early edge.
 * Never earlier than the estimate it is given; exactly the bound when that is later.
 */
export function boundByCapacity(
  minutes: number,
  band: { below: number; above: number },
  f: Record<PickupFeature, number>,
  drinksPerHour: number,
): { minutes: number; band: { below: number; above: number }; limited: boolean } {
  const floor = estimateMinutesFromQueue({ ...f, capacity_per_hour: drinksPerHour });
  if (minutes >= floor)
    return { minutes, band: { ...band, below: Math.min(band.below, minutes - floor) }, limited: false };
  // The band keeps its late side (the estimate's uncertainty) above the bound.
  return { minutes: floor, band: { below: 0, above: band.above }, limited: true };
}

/** Half-widths (minutes) of the band around an estimate: model MAE when known, else 25% + 1 minute. */
export function uncertaintyBand(minutes: number, mae?: number): { below: number; above: number } {
  const spread = mae !== undefined && mae > 0 ? 1.5 * mae : 0.25 * minutes + 1;
  // Orders are rarely early by much, often late: the band is skewed to the late side.
  return { below: Math.min(minutes, spread * 0.6), above: spread };
}

/** The time to order so that the order is ready by `wantedAt` even at the late edge of the band. */
export function bestOrderTime(
  now: number,
  wantedAt: number,
  minutes: number,
  band: { above: number },
): { orderAt: number; onTime: boolean } {
  const lead = (minutes + band.above) * 60_000;
  const orderAt = wantedAt - lead;
  if (orderAt >= now) return { orderAt, onTime: true };
  return { orderAt: now, onTime: now + minutes * 60_000 <= wantedAt };
}
