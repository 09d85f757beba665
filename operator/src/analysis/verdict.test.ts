import { describe, expect, it } from 'vitest';
import type { RecommenderModelSpecRolloutAnalysis } from '../api/v1alpha1/recommendermodel.js';
import type { AnalysisMetric, ByVariant, MetricVerdict } from './types.js';
import { computeVerdict, type AnalysisSamples, type AnalysisValues } from './verdict.js';

const AT = new Date('2026-11-24T12:00:00Z');
const spec: RecommenderModelSpecRolloutAnalysis = {
  minSamples: 100,
  metrics: {
    errorRate: { max: 0.05 },
    p99LatencyMs: { max: 250 },
    driftPsi: { max: 0.2 },
    businessKpi: { minRelative: 0.9 },
  },
};
const enough: ByVariant<number> = { canary: 500, stable: 5000 };
const allEnough: AnalysisSamples = {
  errorRate: enough,
  p99LatencyMs: enough,
  driftPsi: enough,
  businessKpi: enough,
};
const healthy: AnalysisValues = {
  errorRate: { canary: 0.01, stable: 0.01 },
  p99LatencyMs: { canary: 40, stable: 38 },
  driftPsi: { canary: 0.05, stable: 0.04 },
  businessKpi: { canary: 0.3, stable: 0.3 },
};

type Row = [
  name: string,
  samples: AnalysisSamples,
  values: AnalysisValues,
  overall: MetricVerdict,
  perMetric: Partial<Record<AnalysisMetric, MetricVerdict>>,
];

const rows: Row[] = [
  [
    'healthy canary passes every metric',
    allEnough,
    healthy,
    'Pass',
    { errorRate: 'Pass', businessKpi: 'Pass' },
  ],
  [
    'error rate above max fails',
    allEnough,
    { ...healthy, errorRate: { canary: 0.2, stable: 0.01 } },
    'Fail',
    { errorRate: 'Fail' },
  ],
  [
    'error rate exactly at max passes',
    allEnough,
    { ...healthy, errorRate: { canary: 0.05, stable: 0 } },
    'Pass',
    { errorRate: 'Pass' },
  ],
  [
    'p99 above max fails',
    allEnough,
    { ...healthy, p99LatencyMs: { canary: 300, stable: 40 } },
    'Fail',
    { p99LatencyMs: 'Fail' },
  ],
  [
    'p99 beyond the last bucket (+Inf) fails',
    allEnough,
    { ...healthy, p99LatencyMs: { canary: Infinity, stable: 40 } },
    'Fail',
    { p99LatencyMs: 'Fail' },
  ],
  [
    'drift above max fails',
    allEnough,
    { ...healthy, driftPsi: { canary: 0.5, stable: 0.05 } },
    'Fail',
    { driftPsi: 'Fail' },
  ],
  [
    'drift on stable alone does not fail the canary',
    allEnough,
    { ...healthy, driftPsi: { canary: 0.05, stable: 0.9 } },
    'Pass',
    { driftPsi: 'Pass' },
  ],
  [
    'KPI ratio below minRelative fails',
    allEnough,
    { ...healthy, businessKpi: { canary: 0.2, stable: 0.3 } },
    'Fail',
    { businessKpi: 'Fail' },
  ],
  [
    'KPI ratio at minRelative passes',
    allEnough,
    { ...healthy, businessKpi: { canary: 0.27, stable: 0.3 } },
    'Pass',
    { businessKpi: 'Pass' },
  ],
  [
    'KPI with no conversions anywhere is inconclusive',
    allEnough,
    { ...healthy, businessKpi: { canary: 0, stable: 0 } },
    'Inconclusive',
    { businessKpi: 'Inconclusive' },
  ],
  [
    'KPI when stable converts nothing but canary does passes',
    allEnough,
    { ...healthy, businessKpi: { canary: 0.1, stable: 0 } },
    'Pass',
    { businessKpi: 'Pass' },
  ],
  [
    'too few canary samples: inconclusive even with a terrible error rate',
    { ...allEnough, errorRate: { canary: 99, stable: 5000 } },
    { ...healthy, errorRate: { canary: 1, stable: 0 } },
    'Inconclusive',
    { errorRate: 'Inconclusive' },
  ],
  [
    'too few canary samples: inconclusive, never a pass',
    { ...allEnough, p99LatencyMs: { canary: 10, stable: 500 } },
    healthy,
    'Inconclusive',
    { p99LatencyMs: 'Inconclusive', errorRate: 'Pass' },
  ],
  [
    // Absolute limits need canary samples only: at a 100% step stable gets no traffic.
    'a 100% step: no stable traffic, absolute limits still decide',
    { ...allEnough, p99LatencyMs: { canary: 500, stable: 0 }, errorRate: { canary: 500, stable: 0 } },
    healthy,
    'Pass',
    { p99LatencyMs: 'Pass', errorRate: 'Pass' },
  ],
  [
    'no samples at all: inconclusive',
    {},
    {},
    'Inconclusive',
    { errorRate: 'Inconclusive', driftPsi: 'Inconclusive' },
  ],
  [
    'no canary value (NaN from Prometheus) is inconclusive',
    allEnough,
    { ...healthy, p99LatencyMs: { canary: NaN, stable: 3 } },
    'Inconclusive',
    { p99LatencyMs: 'Inconclusive' },
  ],
  [
    'a Fail wins over an Inconclusive',
    { ...allEnough, businessKpi: { canary: 3, stable: 3 } },
    { ...healthy, errorRate: { canary: 0.5, stable: 0 } },
    'Fail',
    { errorRate: 'Fail', businessKpi: 'Inconclusive' },
  ],
];

describe('computeVerdict', () => {
  it.each(rows)('%s', (_name, samples, values, overall, perMetric) => {
    const r = computeVerdict(spec, samples, values, AT);
    expect(r.verdict).toBe(overall);
    for (const [metric, v] of Object.entries(perMetric)) {
      expect(r.metrics.find((m) => m.metric === metric)?.verdict, metric).toBe(v);
    }
    expect(r.at).toBe('2026-11-24T12:00:00.000Z');
  });

  it('says why it is waiting, with the counts', () => {
    const r = computeVerdict(spec, { ...allEnough, errorRate: { canary: 12, stable: 4000 } }, healthy, AT);
    expect(r.message).toBe('errorRate: waiting for 100 canary requests (canary has 12)');
  });

  it('names the failing metric, its value and the bound', () => {
    const r = computeVerdict(spec, allEnough, { ...healthy, errorRate: { canary: 0.125, stable: 0.01 } }, AT);
    expect(r.message).toBe('errorRate: canary 12.50% > max 5.00% (stable 1.00%)');
    expect(r.metrics[0]).toMatchObject({ metric: 'errorRate', canary: 0.125, stable: 0.01, threshold: 0.05 });
  });

  it('checks only configured metrics and defaults minSamples to 500', () => {
    const r = computeVerdict(
      { metrics: { errorRate: { max: 0.1 } } },
      { errorRate: { canary: 499, stable: 9000 } },
      healthy,
      AT,
    );
    expect(r.metrics.map((m) => m.metric)).toEqual(['errorRate']);
    expect(r.verdict).toBe('Inconclusive');
    expect(
      computeVerdict(
        { metrics: { errorRate: { max: 0.1 } } },
        { errorRate: { canary: 500, stable: 500 } },
        healthy,
        AT,
      ).verdict,
    ).toBe('Pass');
  });

  it('passes when no metric is configured', () => {
    expect(computeVerdict(undefined, {}, {}, AT)).toMatchObject({
      verdict: 'Pass',
      metrics: [],
      message: 'no analysis metrics configured',
    });
  });
});
