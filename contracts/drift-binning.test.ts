import { describe, expect, it } from 'vitest';
import {
  binOf,
  computeBaselineEdges,
  computeBaselineHistogram,
  computeQuantileEdges,
  computeSupportEdges,
  computeValueEdges,
  countBins,
  declaredValues,
} from './drift-binning.js';
import { computeClockFeatures } from './features.js';

describe('binOf', () => {
  const edges = [0, 1, 2, 5];
  const cases: [number, number][] = [
    [-3, 0],
    [0, 0],
    [0.99, 0],
    [1, 1],
    [4.9, 2],
    [5, 2],
    [100, 2],
  ];
  for (const [v, bin] of cases) it(`${v} → bin ${bin}`, () => expect(binOf(edges, v)).toBe(bin));
});

describe('float32 rounding: training (float32 rows) and serving (float64 values) agree', () => {
  // Training stores every value in a Float32Array; serving computes context values in float64.
  const training = (v: number) => Float32Array.of(v)[0]!;

  it("every hour's hour_sin and hour_cos land in the same bin on both sides", () => {
    for (const f of ['hour_sin', 'hour_cos'] as const) {
      const trainedValues = Array.from({ length: 24 }, (_, h) => training(computeClockFeatures(h, 1)[f]));
      // The edges a quantile binning of those values would get, and the value binning's.
      for (const edges of [computeQuantileEdges(trainedValues), computeBaselineEdges(f, trainedValues)]) {
        for (let h = 0; h < 24; h++) {
          const served = computeClockFeatures(h, 1)[f];
          expect(binOf(edges, served), `${f} hour ${h}`).toBe(binOf(edges, training(served)));
        }
      }
    }
  });

  it('hour 16: hour_cos is -0.5 in float32 and below it in float64, one bin either way', () => {
    const served = computeClockFeatures(16, 1).hour_cos;
    expect(served).toBeLessThan(-0.5);
    expect(training(served)).toBe(-0.5);
    const edges = computeQuantileEdges([-1, -0.5, 0, 0.5, 1].map(training));
    expect(binOf(edges, served)).toBe(binOf(edges, -0.5));
  });

  it('temperatures with one decimal land in the same bin whether float32 or float64', () => {
    const temps = Array.from({ length: 801 }, (_, i) => Math.round((i / 10 - 40) * 10) / 10);
    // 7 bins: edges at -28.6, -17.2, ... (no float32 is exactly one of those decimals).
    const edges = computeQuantileEdges(temps.map(training), 7);
    expect(edges.some((e) => !Number.isInteger(e))).toBe(true);
    for (const t of temps) expect(binOf(edges, t), `${t} °C`).toBe(binOf(edges, training(t)));
  });
});

describe('value bins', () => {
  it('a binary feature that is always 0 in training still has a bin for 1', () => {
    const h = computeBaselineHistogram('is_weekend', [0, 0, 0, 0]);
    expect(h.edges).toEqual([0, 0.5, 1]);
    expect(h.probs).toEqual([1, 0]);
    expect(binOf(h.edges, 1)).toBe(1);
  });

  it('every hour of the day has its own hour_sin and hour_cos value bin, training saw it or not', () => {
    for (const f of ['hour_sin', 'hour_cos'] as const) {
      // Training saw only the daytime hours.
      const edges = computeBaselineEdges(
        f,
        Array.from({ length: 17 }, (_, i) => computeClockFeatures(i + 5, 1)[f]),
      );
      const values = declaredValues(f)!;
      expect(edges.length).toBe(values.length + 1);
      const bins = new Set(Array.from({ length: 24 }, (_, h) => binOf(edges, computeClockFeatures(h, 1)[f])));
      expect(bins.size).toBe(values.length);
    }
  });

  it('add-on pair features share their item feature values', () => {
    expect(declaredValues('drink_is_hot')).toEqual([0, 1]);
    expect(declaredValues('addon_is_seasonal')).toEqual([0, 1]);
    expect(declaredValues('recency_days')).toBeUndefined();
  });

  it('features with a few distinct values get one bin per value, others quantile bins', () => {
    const complexity = [1, 2, 2, 3, 3, 3, 4, 5, 5];
    expect(computeBaselineEdges('prep_complexity', complexity)).toEqual([1, 1.5, 2.5, 3.5, 4.5, 5]);
    expect(computeValueEdges([1, 2, 3, 4, 5]).length).toBe(6);
    expect(countBins(computeValueEdges([1, 2, 3, 4, 5]), complexity)).toEqual([1, 2, 3, 1, 2]);
    const values = Array.from({ length: 1000 }, (_, i) => i);
    const h = computeBaselineHistogram('monetary_30d', values);
    expect(h.edges.length).toBe(11);
    expect(h.probs.reduce((a, b) => a + b)).toBeCloseTo(1);
    h.probs.forEach((p) => expect(p).toBeCloseTo(0.1, 2));
    expect(binOf(h.edges, -5)).toBe(0);
    expect(binOf(h.edges, 5000)).toBe(9);
  });

  it('edges are float32 values, distinct and ascending', () => {
    const values = Array.from({ length: 5000 }, (_, i) => Math.sin(i) * 100 + i / 7);
    for (const edges of [computeQuantileEdges(values), computeBaselineEdges('avg_order_value', values)]) {
      edges.forEach((e, i) => {
        expect(Math.fround(e)).toBe(e);
        if (i) expect(e).toBeGreaterThan(edges[i - 1]!);
      });
    }
    expect(computeQuantileEdges([3, 3, 3])).toEqual([3, 4]);
    expect(computeQuantileEdges([])).toEqual([0, 1]);
  });
});

describe('support bins (weather: one value per region and day)', () => {
  it('temperature: below, within and above the training range widened by a quarter', () => {
    const h = computeBaselineHistogram('temperature_c', [4, 10, 12.5, 20, 28]);
    expect(h.edges.length).toBe(4);
    expect(h.probs).toEqual([0, 1, 0]);
    // Range 4..28, margin 6: -2 .. 34 is within.
    expect(binOf(h.edges, -1.9)).toBe(1);
    expect(binOf(h.edges, 33.9)).toBe(1);
    expect(binOf(h.edges, -2.5)).toBe(0);
    expect(binOf(h.edges, 34.5)).toBe(2);
    // A thermometer in Fahrenheit.
    expect(binOf(h.edges, (20 * 9) / 5 + 32)).toBe(2);
  });

  it('precipitation: rain alarms only when training never saw it', () => {
    const dry = computeSupportEdges('is_precipitation', [0, 0, 0]);
    expect(binOf(dry, 0)).toBe(1);
    expect(binOf(dry, 1)).toBe(2);
    const wet = computeSupportEdges('is_precipitation', [0, 1, 0]);
    expect(binOf(wet, 0)).toBe(1);
    expect(binOf(wet, 1)).toBe(1);
  });

  it('a constant value gets a margin of a quarter of itself, at least 1', () => {
    const edges = computeSupportEdges('temperature_c', [15, 15]);
    expect(binOf(edges, 15)).toBe(1);
    expect(binOf(edges, 18.7)).toBe(1);
    expect(binOf(edges, 19)).toBe(2);
    expect(binOf(computeSupportEdges('temperature_c', [0]), 0.9)).toBe(1);
  });
});
