/**
 * The statistics against an independent oracle (hack/oracles/experiment_stats.py, scipy and
 * statsmodels in the pinned venv of hack/oracles/venv.ts): the same per-user data goes to both;
 * TypeScript sees only the sufficient statistics, Python the raw values. In the integration
 * project because it starts a process (and, on a fresh machine, builds the venv).
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureOracleVenv, oracleUnavailable, runPython } from '../../../../hack/oracles/venv.js';
import { analyze, fitCuped, sequentialSrmLogBayesFactor, srmConcentration } from './stats.js';
import type { AnalysisInput, MetricSums } from './stats-api.js';

const ORACLE = join(import.meta.dirname, '..', '..', '..', '..', 'hack', 'oracles', 'experiment_stats.py');

/** A small seeded generator (mulberry32) and Box-Muller normals. */
function rng(seed: number) {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal };
}

interface RawVariant {
  readonly name: string;
  readonly weight: number;
  readonly y: number[];
  /** Pre-experiment value per user, null for users without history; absent: no CUPED. */
  readonly x?: (number | null)[];
}
interface Case {
  readonly id: string;
  readonly alpha: number;
  readonly planned: number;
  readonly binary: boolean;
  readonly variants: RawVariant[];
}

function sumsOf(v: RawVariant): MetricSums {
  let sumY = 0;
  let sumYY = 0;
  for (const y of v.y) {
    sumY += y;
    sumYY += y * y;
  }
  if (!v.x) return { n: v.y.length, sumY, sumYY };
  let sumX = 0;
  let sumXX = 0;
  let sumXY = 0;
  let without = 0;
  v.x.forEach((x, i) => {
    if (x === null) return void without++;
    sumX += x;
    sumXX += x * x;
    sumXY += x * v.y[i]!;
  });
  return { n: v.y.length, sumY, sumYY, sumX, sumXX, sumXY, nWithoutCovariate: without };
}

const inputOf = (c: Case): AnalysisInput => ({
  variants: c.variants.map((v) => ({ name: v.name, weight: v.weight, sums: sumsOf(v) })),
  alpha: c.alpha,
  minSamplesPerVariant: 100,
  binary: c.binary,
  plannedSamplesPerVariant: c.planned,
});

/** Binary outcomes at `rate` for n users. */
function binaryArm(
  r: ReturnType<typeof rng>,
  name: string,
  weight: number,
  n: number,
  rate: number,
): RawVariant {
  return { name, weight, y: Array.from({ length: n }, () => (r.uniform() < rate ? 1 : 0)) };
}

/**
 * Order values with a pre-period value X for `covered` of the users: Y = 4 + 0.6 X + noise,
 * times (1 + lift); users without history have no X and a lower mean.
 */
function valueArm(
  r: ReturnType<typeof rng>,
  name: string,
  weight: number,
  n: number,
  lift: number,
  covered: number,
): RawVariant {
  const y: number[] = [];
  const x: (number | null)[] = [];
  for (let i = 0; i < n; i++) {
    if (r.uniform() < covered) {
      const xi = Math.max(0, 8 + 3 * r.normal());
      x.push(xi);
      y.push(Math.max(0, (4 + 0.6 * xi + 2 * r.normal()) * (1 + lift)));
    } else {
      x.push(null);
      y.push(Math.max(0, (6 + 3 * r.normal()) * (1 + lift)));
    }
  }
  return { name, weight, y, x };
}

function buildCases(): Case[] {
  const r = rng(11);
  return [
    {
      id: 'binary A/B 50/50, +6 % lift',
      alpha: 0.05,
      planned: 20_000,
      binary: true,
      variants: [binaryArm(r, 'control', 50, 20_000, 0.25), binaryArm(r, 'v2', 50, 20_000, 0.265)],
    },
    {
      id: 'binary A/B 70/30, no effect',
      alpha: 0.1,
      planned: 5_000,
      binary: true,
      variants: [binaryArm(r, 'control', 70, 14_000, 0.3), binaryArm(r, 'v2', 30, 6_000, 0.3)],
    },
    {
      id: 'order value with CUPED, 70 % of users with history',
      alpha: 0.05,
      planned: 10_000,
      binary: false,
      variants: [valueArm(r, 'control', 50, 8_000, 0, 0.7), valueArm(r, 'v2', 50, 8_000, 0.03, 0.7)],
    },
    {
      id: 'A/B/n of 4 with CUPED (Holm)',
      alpha: 0.05,
      planned: 10_000,
      binary: false,
      variants: [
        valueArm(r, 'control', 25, 6_000, 0, 0.5),
        valueArm(r, 'v2', 25, 6_000, 0.022, 0.5),
        valueArm(r, 'v3', 25, 6_000, 0.035, 0.5),
        valueArm(r, 'v4', 25, 6_000, -0.01, 0.5),
      ],
    },
    {
      id: 'SRM: 10,600 vs 9,400 on 50/50',
      alpha: 0.05,
      planned: 10_000,
      binary: true,
      variants: [binaryArm(r, 'control', 50, 10_600, 0.25), binaryArm(r, 'v2', 50, 9_400, 0.25)],
    },
    {
      id: 'SRM: 10,120 vs 9,880 on 50/50 (within chance)',
      alpha: 0.05,
      planned: 2_000,
      binary: true,
      variants: [binaryArm(r, 'control', 50, 10_120, 0.25), binaryArm(r, 'v2', 50, 9_880, 0.25)],
    },
    {
      id: 'SRM: a variant with weight 40 and no exposures',
      alpha: 0.05,
      planned: 10_000,
      binary: true,
      variants: [
        binaryArm(r, 'control', 30, 3_000, 0.25),
        binaryArm(r, 'v2', 30, 3_100, 0.25),
        binaryArm(r, 'v3', 40, 0, 0.25),
      ],
    },
  ];
}

interface OracleComparison {
  variant: string;
  lift: number;
  liftInterval: [number, number];
  statistic: number;
  pValue: number;
  adjustedPValue: number;
  significant: boolean;
  holmRejects: boolean;
  varianceReduction: number;
}
interface OracleResult {
  srm: { chiSquarePValue: number; pValue: number; logBayesFactor?: number };
  theta?: number;
  comparisons: OracleComparison[];
}

const skip = oracleUnavailable();
const cases = buildCases();
let oracle: Record<string, OracleResult> = {};

/** |a − b| within `rel` of |b|, or within `abs` (for values near 0). */
function close(a: number, b: number, rel: number, abs = 1e-12): boolean {
  return Math.abs(a - b) <= Math.max(abs, rel * Math.abs(b));
}

describe.skipIf(skip !== null)(
  `experiment statistics vs scipy/statsmodels${skip ? ` (skipped: ${skip})` : ''}`,
  () => {
    beforeAll(async () => {
      const python = await ensureOracleVenv();
      const r = await runPython(python, [ORACLE], { input: JSON.stringify(cases), timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`oracle failed (${r.code}):\n${r.err}`);
      oracle = JSON.parse(r.out) as Record<string, OracleResult>;
    }, 900_000);

    it.each(cases.map((c) => [c.id, c] as const))('%s', (_id, c) => {
      const ts = analyze(inputOf(c));
      const py = oracle[c.id]!;
      // SRM: the chi-square and the sequential test's p-value.
      expect(ts.srm.chiSquarePValue!).toSatisfy((p: number) => close(p, py.srm.chiSquarePValue, 1e-6, 1e-14));
      expect(ts.srm.pValue).toSatisfy((p: number) => close(p, py.srm.pValue, 1e-6, 1e-14));
      expect(ts.srm.mismatch).toBe(py.srm.pValue < 0.001);
      if (py.theta !== undefined) {
        const fit = fitCuped(inputOf(c).variants.map((v) => v.sums));
        expect(fit!.theta).toSatisfy((t: number) => close(t, py.theta!, 1e-9));
      }
      if (py.srm.logBayesFactor !== undefined) {
        const active = c.variants.filter((v) => v.weight > 0).length;
        const total = c.variants.reduce((s, v) => s + v.weight, 0);
        const lbf = sequentialSrmLogBayesFactor(
          c.variants.map((v) => v.y.length),
          c.variants.map((v) => v.weight / total),
          srmConcentration(c.planned * active),
        );
        expect(lbf).toSatisfy((x: number) => close(x, py.srm.logBayesFactor!, 1e-8, 1e-8));
      }
      expect(ts.comparisons.map((x) => x.variant)).toEqual(py.comparisons.map((x) => x.variant));
      for (const t of ts.comparisons) {
        const p = py.comparisons.find((x) => x.variant === t.variant)!;
        expect({ variant: t.variant, significant: t.significant }).toEqual({
          variant: p.variant,
          significant: p.holmRejects,
        });
        expect(t.lift).toSatisfy((x: number) => close(x, p.lift, 1e-9));
        expect(t.statistic).toSatisfy((x: number) => close(x, p.statistic, 1e-6, 1e-9));
        expect(t.pValue).toSatisfy((x: number) => close(x, p.pValue, 1e-6));
        expect(t.adjustedPValue).toSatisfy((x: number) => close(x, p.adjustedPValue, 1e-6));
        expect(t.varianceReduction).toSatisfy((x: number) => close(x, p.varianceReduction, 1e-6, 1e-9));
        expect(t.liftInterval[0]).toSatisfy((x: number) => close(x, p.liftInterval[0], 1e-6, 1e-9));
        expect(t.liftInterval[1]).toSatisfy((x: number) => close(x, p.liftInterval[1], 1e-6, 1e-9));
      }
    });

    it('covers what it claims: CUPED applied, Holm changing a verdict, an SRM in both directions', () => {
      const results = cases.map((c) => ({ c, ts: analyze(inputOf(c)) }));
      expect(results.some((r) => r.ts.comparisons.some((x) => x.varianceReduction > 0.2))).toBe(true);
      expect(results.some((r) => r.ts.comparisons.some((x) => x.pValue <= 0.05 && !x.significant))).toBe(
        true,
      );
      expect(results.filter((r) => r.ts.srm.mismatch).map((r) => r.c.id)).toEqual([
        'SRM: 10,600 vs 9,400 on 50/50',
        'SRM: a variant with weight 40 and no exposures',
      ]);
    });
  },
);
