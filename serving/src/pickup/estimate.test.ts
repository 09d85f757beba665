import { describe, expect, it } from 'vitest';
import { bestOrderTime, checkPickupFeatures, estimateMinutesFromQueue, uncertaintyBand } from './estimate.js';

const base = {
  queue: 0,
  prep_load: 0,
  order_items: 1,
  order_complexity: 2.5,
  capacity_per_hour: 60,
  hour_sin: 0,
  hour_cos: 1,
  is_weekend: 0,
};

describe('pickup estimate', () => {
  it('grows with the queue and the prep complexity ahead', () => {
    // One average drink at 60 drinks/hour = 1 minute + 1 minute hand-off.
    expect(estimateMinutesFromQueue(base)).toBeCloseTo(2);
    expect(estimateMinutesFromQueue({ ...base, queue: 10, prep_load: 25 })).toBeCloseTo(12);
    expect(
      estimateMinutesFromQueue({ ...base, queue: 10, prep_load: 25, capacity_per_hour: 120 }),
    ).toBeCloseTo(6.5);
  });
  it('band is wider on the late side and uses the model MAE when known', () => {
    expect(uncertaintyBand(10)).toEqual({ below: expect.closeTo(2.1), above: expect.closeTo(3.5) });
    expect(uncertaintyBand(10, 2)).toEqual({ below: expect.closeTo(1.8), above: expect.closeTo(3) });
  });
  it('best time to order leaves room for the late edge, or says order now', () => {
    const now = Date.parse('2026-11-24T08:00:00Z');
    const wanted = Date.parse('2026-11-24T08:30:00Z');
    expect(bestOrderTime(now, wanted, 10, { above: 5 })).toEqual({
      orderAt: wanted - 15 * 60_000,
      onTime: true,
    });
    expect(bestOrderTime(now, now + 12 * 60_000, 10, { above: 5 })).toEqual({ orderAt: now, onTime: true });
    expect(bestOrderTime(now, now + 5 * 60_000, 10, { above: 5 })).toEqual({ orderAt: now, onTime: false });
  });
  it('refuses models with features serving cannot compute', () => {
    expect(() => checkPickupFeatures(['queue', 'barista_mood'])).toThrow(/barista_mood/);
    expect(() => checkPickupFeatures(['queue', 'prep_load'])).not.toThrow();
  });
});
