import { describe, expect, it } from 'vitest';
import {
  analyze,
  chiSquareSrm,
  chiSquareSurvival,
  holmAdjust,
  MIN_CONVERSIONS,
  mixtureConstant,
  mixtureHalfWidth,
  mixtureLogLikelihoodRatio,
  planSamplesPerVariant,
  StatsInputError,
} from './stats.js';
import type { AnalysisInput, MetricSums, VariantInput } from './stats-api.js';

const bin = (n: number, conversions: number): MetricSums => ({ n, sumY: conversions, sumYY: conversions });
const v = (name: string, weight: number, sums: MetricSums): VariantInput => ({ name, weight, sums });
const input = (variants: VariantInput[], extra: Partial<AnalysisInput> = {}): AnalysisInput => ({
  variants,
  alpha: 0.05,
  minSamplesPerVariant: 1000,
  binary: true,
  plannedSamplesPerVariant: 100_000,
  ...extra,
});

describe('analyze: decisions a person reads', () => {
  it('declares a clear winner with lift, interval and always-valid p in the reason', () => {
    const a = analyze(input([v('control', 50, bin(100_000, 25_000)), v('v2', 50, bin(100_000, 25_900))]));
    expect(a.decision).toBe('winner');
    expect(a.winner).toBe('v2');
    expect(a.reason).toBe('v2 beats control: lift +3.6% [1.2%, 6.0%], always-valid p=0.00023 < 0.05');
    expect(a.comparisons[0]!.liftInterval[0]).toBeGreaterThan(0);
  });

  it('an interval excludes 0 exactly when the comparison is significant, large lifts on few users included', () => {
    // The controller's integration test once showed p = 0.026 next to [-19 %, +135 %].
    const seen = { significant: 0, not: 0 };
    for (const n of [250, 500, 2_000, 20_000]) {
      for (const base of [0.1, 0.25]) {
        for (const rel of [-0.5, -0.1, 0.02, 0.1, 0.3, 0.6, 1]) {
          const a = analyze(
            input(
              [
                v('control', 50, bin(n, Math.round(n * base))),
                v('v2', 50, bin(n, Math.round(n * base * (1 + rel)))),
              ],
              { minSamplesPerVariant: 100, plannedSamplesPerVariant: 1_000 },
            ),
          );
          const c = a.comparisons[0]!;
          const excludesZero = c.liftInterval[0] > 0 || c.liftInterval[1] < 0;
          expect(excludesZero, `n=${n} base=${base} rel=${rel}: ${JSON.stringify(c)}`).toBe(c.significant);
          seen[c.significant ? 'significant' : 'not']++;
        }
      }
    }
    expect(seen.significant).toBeGreaterThan(5);
    expect(seen.not).toBeGreaterThan(5);
  });

  it('keeps going on a lift a fixed-horizon test would call (z = 2.6) but a peeking-proof one does not', () => {
    // +2.0 % on 25 % at 100k each: z ≈ 2.6, p ≈ 0.01 at one look; the mixture needs |z| ≳ 3.
    const a = analyze(input([v('control', 50, bin(100_000, 25_000)), v('v2', 50, bin(100_000, 25_500))]));
    expect(a.decision).toBe('continue');
    expect(a.comparisons[0]!.pValue).toBeGreaterThan(0.05);
    expect(a.reason).toMatch(
      /^no winner yet: v2 \+2\.0% \[-?\d\.\d%, \d\.\d%\] always-valid p=0\.\d+ ≥ 0\.05$/,
    );
  });

  it('blocks on a variant with weight > 0 and no exposures instead of skipping it (GrowthBook #4427)', () => {
    // Without v3 the other two match their weights exactly: only counting v3 reveals the split.
    const a = analyze(
      input([
        v('control', 40, bin(50_000, 12_500)),
        v('v2', 40, bin(50_000, 13_500)),
        v('v3', 20, bin(0, 0)),
      ]),
    );
    expect(a.srm.mismatch).toBe(true);
    expect(a.decision).toBe('blocked');
    expect(a.winner).toBeUndefined();
    expect(a.reason).toMatch(
      /^sample ratio mismatch: exposures control 50,000 \/ v2 50,000 \/ v3 0 for weights 40\/40\/20/,
    );
  });

  it('blocks when a variant with weight 0 receives exposures', () => {
    const a = analyze(input([v('control', 100, bin(50_000, 12_500)), v('v2', 0, bin(40, 10))]));
    expect(a.srm).toMatchObject({ mismatch: true, pValue: 0, chiSquarePValue: 0 });
    expect(a.decision).toBe('blocked');
  });

  it('blocks a winner on a split that is off by 2 % at 400k exposures, not on one within chance', () => {
    const winning = bin(200_000, 52_000);
    const skewed = analyze(
      input([v('control', 50, bin(202_000, 50_500)), v('v2', 50, { ...winning, n: 198_000 })]),
    );
    expect(skewed.decision).toBe('blocked');
    expect(skewed.reason).toContain('sample ratio mismatch');
    const fine = analyze(
      input([v('control', 50, bin(200_300, 50_075)), v('v2', 50, { ...winning, n: 199_700 })]),
    );
    expect(fine.srm.mismatch).toBe(false);
    expect(fine.decision).toBe('winner');
  });

  it('needs minSamplesPerVariant exposures and 25 conversions per variant before deciding', () => {
    const few = analyze(input([v('control', 50, bin(900, 100)), v('v2', 50, bin(1_200, 600))]));
    expect(few).toMatchObject({
      decision: 'blocked',
      reason: 'too few samples: control 900 of 1,000 exposures needed per variant',
    });
    const rare = analyze(input([v('control', 50, bin(5_000, 3)), v('v2', 50, bin(5_000, 60))]));
    expect(rare).toMatchObject({
      decision: 'blocked',
      reason: `too few conversions: control 3 of ${MIN_CONVERSIONS} needed per variant`,
    });
    // The same counts on a continuous metric are not held to the conversion minimum.
    expect(
      analyze(input([v('control', 50, bin(5_000, 3)), v('v2', 50, bin(5_000, 60))], { binary: false }))
        .decision,
    ).toBe('winner');
  });

  it('applies Holm over the comparisons with control: one of three at p ≈ 0.044 is not a winner', () => {
    // Alone, v2's always-valid p < 0.05 would win; Holm over 3 comparisons multiplies it by 3.
    const variants = [
      v('control', 25, bin(100_000, 25_000)),
      v('v2', 25, bin(100_000, 25_600)),
      v('v3', 25, bin(100_000, 25_000)),
      v('v4', 25, bin(100_000, 25_010)),
    ];
    const alone = analyze(input(variants.slice(0, 2).map((x) => ({ ...x, weight: 50 }))));
    expect(alone.comparisons[0]!.pValue).toBeLessThan(0.05);
    expect(alone.decision).toBe('winner');
    const family = analyze(input(variants));
    const v2 = family.comparisons.find((c) => c.variant === 'v2')!;
    expect(v2.adjustedPValue).toBeCloseTo(Math.min(1, 3 * v2.pValue), 12);
    expect(v2.significant).toBe(false);
    expect(family.decision).toBe('continue');
    expect(family.reason).toContain('Holm-adjusted p=');
    // Holm's level for an unrejected comparison is α/3: its interval includes 0.
    expect(v2.liftInterval[0]).toBeLessThan(0);
  });

  it('picks the best of several significant variants, and control when every variant is worse', () => {
    const best = analyze(
      input([
        v('control', 34, bin(102_000, 25_500)),
        v('v2', 33, bin(99_000, 25_938)),
        v('v3', 33, bin(99_000, 26_730)),
      ]),
    );
    expect(best).toMatchObject({ decision: 'winner', winner: 'v3' });
    const control = analyze(
      input([
        v('control', 34, bin(102_000, 25_500)),
        v('v2', 33, bin(99_000, 23_265)),
        v('v3', 33, bin(99_000, 22_770)),
      ]),
    );
    expect(control).toMatchObject({ decision: 'winner', winner: 'control' });
    expect(control.reason).toMatch(/^control beats every variant: v2 -6\.0% .*; v3 -8\.0% /);
  });

  it('reports CUPED variance reduction, and the plain estimate when no user has a covariate', () => {
    // Within each variant Y = X + e with Var(X) = Var(e): θ = 1 and half the variance goes.
    const cuped = (n: number, meanY: number): MetricSums => {
      const varX = 4;
      const varE = 4;
      const meanX = 10;
      return {
        n,
        sumY: n * meanY,
        sumYY: n * (varX + varE + meanY * meanY),
        sumX: n * meanX,
        sumXX: n * (varX + meanX * meanX),
        sumXY: n * (varX + meanX * meanY),
        nWithoutCovariate: 0,
      };
    };
    const opts = { binary: false, plannedSamplesPerVariant: 10_000 };
    const withX = analyze(
      input([v('control', 50, cuped(10_000, 10)), v('v2', 50, cuped(10_000, 10.1))], opts),
    );
    expect(withX.comparisons[0]!.varianceReduction).toBeCloseTo(0.5, 3);
    const plainSums = (s: MetricSums): MetricSums => ({ n: s.n, sumY: s.sumY, sumYY: s.sumYY });
    const without = analyze(
      input(
        [v('control', 50, plainSums(cuped(10_000, 10))), v('v2', 50, plainSums(cuped(10_000, 10.1)))],
        opts,
      ),
    );
    expect(without.comparisons[0]!.varianceReduction).toBe(0);
    // Half the interval's width squared: the same lift, an interval ~√2 narrower.
    const w = (a: typeof withX) => a.comparisons[0]!.liftInterval[1] - a.comparisons[0]!.liftInterval[0];
    expect(w(without) / w(withX)).toBeGreaterThan(1.3);
    expect(withX.decision).toBe('winner');
    expect(without.decision).toBe('continue');
  });

  it('refuses bad input with the field that is wrong', () => {
    const ok = [v('control', 50, bin(10, 1)), v('v2', 50, bin(10, 1))];
    const fieldOf = (i: AnalysisInput) => {
      try {
        analyze(i);
        return null;
      } catch (e) {
        expect(e).toBeInstanceOf(StatsInputError);
        return (e as StatsInputError).field;
      }
    };
    expect(fieldOf(input(ok, { alpha: 0 }))).toBe('alpha');
    expect(fieldOf(input([ok[0]!]))).toBe('variants');
    expect(fieldOf(input([ok[0]!, { ...ok[1]!, name: 'control' }]))).toBe('variants[1].name');
    expect(fieldOf(input([ok[0]!, v('v2', 50, bin(10, 11))]))).toBe('variants[1].sums.sumY');
    expect(fieldOf(input([ok[0]!, v('v2', 50, { n: 10, sumY: 1, sumYY: 1, sumX: 3 })]))).toBe(
      'variants[1].sums.sumX',
    );
    expect(fieldOf(input([ok[0]!, v('v2', -1, bin(10, 1))]))).toBe('variants[1].weight');
    expect(fieldOf(input(ok, { plannedSamplesPerVariant: 0 }))).toBe('plannedSamplesPerVariant');
    expect(fieldOf(input(ok))).toBeNull();
  });
});

describe('the pieces', () => {
  it('chi-square survival matches the textbook critical values', () => {
    expect(chiSquareSurvival(3.841458820694124, 1)).toBeCloseTo(0.05, 10);
    expect(chiSquareSurvival(10.827566170662733, 1)).toBeCloseTo(0.001, 10);
    expect(chiSquareSurvival(16.26623619623813, 3)).toBeCloseTo(0.001, 10);
    expect(chiSquareSrm([5000, 5000], [0.5, 0.5])).toBe(1);
  });

  it('the interval half-width is where the mixture likelihood ratio reaches 1/level', () => {
    for (const [variance, tau2, level] of [
      [1e-6, 7.9e-6, 0.05],
      [3e-4, 1e-5, 0.0167],
      [2, 20, 0.001],
    ] as const) {
      const h = mixtureHalfWidth(variance, tau2, level);
      expect(mixtureLogLikelihoodRatio(h, variance, tau2)).toBeCloseTo(Math.log(1 / level), 10);
    }
    expect(mixtureConstant(0.05)).toBeCloseTo(7.9362, 4);
  });

  it('Holm adjusts in step-down order and keeps the input order', () => {
    expect(holmAdjust([0.01, 0.04, 0.03])).toEqual([0.03, 0.06, 0.06]);
    expect(holmAdjust([0.5, 0.001])).toEqual([0.5, 0.002]);
  });

  it('plans ~101k per variant for +3 % on a 25 % base (a fixed-horizon test needs ~53k)', () => {
    expect(planSamplesPerVariant(0.25, 0.03, 0.05, 0.8)).toBe(101_186);
  });
});
