import { describe, expect, it } from 'vitest';
import { binOf, computePsi, RollingHistogram } from './psi.js';

describe('computePsi', () => {
  it('is 0 when the observed distribution equals the baseline', () => {
    expect(computePsi([0.25, 0.25, 0.5], [25, 25, 50])).toBeCloseTo(0, 10);
  });
  it('matches the textbook value for a shifted distribution', () => {
    // (0.5-0.25)ln(2) + (0.25-0.25)·0 + (0.25-0.5)ln(0.5) = 0.25·ln2·2
    expect(computePsi([0.25, 0.25, 0.5], [50, 25, 25])).toBeCloseTo(0.5 * Math.log(2), 10);
  });
  it('stays finite when a bin is empty on either side', () => {
    const psi = computePsi([0, 0.5, 0.5], [10, 0, 0]);
    expect(Number.isFinite(psi)).toBe(true);
    expect(psi).toBeGreaterThan(1);
  });
  it('is 0 with no observations and rejects mismatched bins', () => {
    expect(computePsi([0.5, 0.5], [0, 0])).toBe(0);
    expect(() => computePsi([1], [1, 2])).toThrow(/bins/);
  });
});

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

describe('RollingHistogram', () => {
  it('forgets the oldest observations once full', () => {
    const h = new RollingHistogram([0, 1, 2], 4);
    for (const v of [0.5, 0.5, 0.5, 0.5]) h.observe(v);
    expect(Array.from(h.binCounts())).toEqual([4, 0]);
    for (const v of [1.5, 1.5, 1.5]) h.observe(v);
    expect(Array.from(h.binCounts())).toEqual([1, 3]);
    expect(h.size).toBe(4);
    h.observe(Number.NaN);
    expect(h.size).toBe(4);
  });
});
