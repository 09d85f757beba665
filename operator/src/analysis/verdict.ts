/**
 * The analysis verdict: pure rules from the spec's thresholds, the sample counts and the measured
 * values. Too little traffic is never a decision: a metric below `minSamples` (canary samples for
 * absolute limits, both variants for the relative business KPI) is Inconclusive, so the rollout
 * waits instead of promoting or rolling back on noise.
 */
import type { RecommenderModelSpecRolloutAnalysis } from '../api/v1alpha1/recommendermodel.js';
import {
  ANALYSIS_METRICS,
  type AnalysisMetric,
  type AnalysisResult,
  type ByVariant,
  type MetricResult,
  type MetricVerdict,
} from './types.js';

/** The CRD default of `minSamples`. */
export const DEFAULT_MIN_SAMPLES = 500;

/** Sample counts per metric and variant; a missing metric counts as zero samples. */
export type AnalysisSamples = Partial<Record<AnalysisMetric, ByVariant<number>>>;
/** Measured values per metric and variant; null means Prometheus had no value. */
export type AnalysisValues = Partial<Record<AnalysisMetric, ByVariant<number | null>>>;

const fmt: Record<AnalysisMetric, (v: number) => string> = {
  errorRate: (v) => `${(v * 100).toFixed(2)}%`,
  p99LatencyMs: (v) => `${v.toFixed(1)} ms`,
  driftPsi: (v) => v.toFixed(3),
  businessKpi: (v) => v.toFixed(4),
};

function thresholdOf(
  metric: AnalysisMetric,
  metrics: NonNullable<RecommenderModelSpecRolloutAnalysis['metrics']>,
): number | undefined {
  switch (metric) {
    case 'errorRate':
      return metrics.errorRate?.max;
    case 'p99LatencyMs':
      return metrics.p99LatencyMs?.max;
    case 'driftPsi':
      return metrics.driftPsi?.max;
    case 'businessKpi':
      return metrics.businessKpi?.minRelative;
  }
}

function finiteOrNull(v: number | null | undefined): number | null {
  return v === null || v === undefined || Number.isNaN(v) ? null : v;
}

/** The verdict of one metric (pure). */
export function computeMetricVerdict(
  metric: AnalysisMetric,
  threshold: number,
  minSamples: number,
  samples: ByVariant<number>,
  values: ByVariant<number | null>,
): MetricResult {
  const canary = finiteOrNull(values.canary);
  const stable = finiteOrNull(values.stable);
  const base = { metric, canary, stable, samples: { ...samples }, threshold };
  const result = (verdict: MetricVerdict, message: string): MetricResult => ({ ...base, verdict, message });
  // The business KPI is relative (canary / stable), so both variants need samples. The other
  // metrics are held against absolute limits and need only the canary's: at a 100% step stable
  // gets no traffic, and requiring it there would leave the last analysed step waiting forever.
  const relative = metric === 'businessKpi';
  const needed = relative ? (['canary', 'stable'] as const) : (['canary'] as const);
  const short = needed.filter((v) => samples[v] < minSamples);
  if (short.length > 0) {
    const what = relative ? 'exposures per variant' : 'canary requests';
    const detail = short.map((v) => `${v} has ${samples[v]}`).join(', ');
    return result('Inconclusive', `${metric}: waiting for ${minSamples} ${what} (${detail})`);
  }
  const f = fmt[metric];
  if (metric === 'businessKpi') {
    if (canary === null || stable === null) {
      return result('Inconclusive', `${metric}: no value for ${canary === null ? 'canary' : 'stable'}`);
    }
    if (stable === 0) {
      return canary > 0
        ? result('Pass', `${metric}: canary ${f(canary)} vs stable 0`)
        : result('Inconclusive', `${metric}: no conversions on either variant, nothing to compare`);
    }
    const ratio = canary / stable;
    const text = `canary ${f(canary)} / stable ${f(stable)} = ${ratio.toFixed(3)}`;
    return ratio < threshold
      ? result('Fail', `${metric}: ${text} < minRelative ${threshold}`)
      : result('Pass', `${metric}: ${text} >= minRelative ${threshold}`);
  }
  if (canary === null) return result('Inconclusive', `${metric}: no value for canary`);
  const vs = stable === null ? '' : ` (stable ${f(stable)})`;
  return canary > threshold
    ? result('Fail', `${metric}: canary ${f(canary)} > max ${f(threshold)}${vs}`)
    : result('Pass', `${metric}: canary ${f(canary)} <= max ${f(threshold)}${vs}`);
}

/**
 * The analysis verdict for the metrics the spec configures (pure): any Fail → Fail; else any
 * Inconclusive → Inconclusive; else Pass. No configured metric is a Pass.
 */
export function computeVerdict(
  analysis: RecommenderModelSpecRolloutAnalysis | undefined,
  samples: AnalysisSamples,
  values: AnalysisValues,
  at: Date,
): AnalysisResult {
  const minSamples = analysis?.minSamples ?? DEFAULT_MIN_SAMPLES;
  const metrics: MetricResult[] = [];
  for (const metric of ANALYSIS_METRICS) {
    const threshold = analysis?.metrics ? thresholdOf(metric, analysis.metrics) : undefined;
    if (threshold === undefined) continue;
    metrics.push(
      computeMetricVerdict(
        metric,
        threshold,
        minSamples,
        samples[metric] ?? { canary: 0, stable: 0 },
        values[metric] ?? { canary: null, stable: null },
      ),
    );
  }
  const failed = metrics.filter((m) => m.verdict === 'Fail');
  const waiting = metrics.filter((m) => m.verdict === 'Inconclusive');
  const verdict: MetricVerdict = failed.length ? 'Fail' : waiting.length ? 'Inconclusive' : 'Pass';
  const message =
    verdict === 'Pass'
      ? metrics.length
        ? `all ${metrics.length} metrics passed`
        : 'no analysis metrics configured'
      : (failed.length ? failed : waiting).map((m) => m.message).join('; ');
  return { verdict, metrics, at: at.toISOString(), message };
}
