/**
 * Canary analysis results: one verdict per metric and an overall verdict, in the shape the
 * rollout state machine consumes and status records.
 */

/** Pass and Fail are decisions; Inconclusive means "not enough evidence yet, keep waiting". */
export type MetricVerdict = 'Pass' | 'Fail' | 'Inconclusive';

/** The metrics an analysis can check (the keys of `spec.rollout.analysis.metrics`). */
export type AnalysisMetric = 'errorRate' | 'p99LatencyMs' | 'driftPsi' | 'businessKpi';

/** Every metric, in the order results are reported. */
export const ANALYSIS_METRICS: readonly AnalysisMetric[] = [
  'errorRate',
  'p99LatencyMs',
  'driftPsi',
  'businessKpi',
];

/** The two serving variants compared, as in the serving metrics' `variant` label. */
export type Variant = 'stable' | 'canary';

export interface MetricResult {
  metric: AnalysisMetric;
  /** The canary's value (error share 0-1, milliseconds, PSI, or conversions per exposure); null when Prometheus has none. */
  canary: number | null;
  stable: number | null;
  /** Requests (exposures for businessKpi) each variant served in the window. */
  samples: { canary: number; stable: number };
  /** The spec's bound: max for errorRate/p99LatencyMs/driftPsi, minRelative for businessKpi. */
  threshold: number;
  verdict: MetricVerdict;
  message: string;
}

export interface AnalysisResult {
  verdict: MetricVerdict;
  metrics: MetricResult[];
  /** RFC 3339 time of the analysis. */
  at: string;
  message: string;
}

/** A pair of per-variant numbers. */
export interface ByVariant<T> {
  canary: T;
  stable: T;
}
