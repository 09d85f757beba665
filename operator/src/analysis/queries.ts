/**
 * PromQL for canary analysis, built from the serving tier's metrics (serving/src/metrics.ts).
 * Pure: every function returns a query string, so the exact PromQL is table-tested.
 *
 * Request metrics (error rate, p99, sample counts) select the serving process's `variant`
 * label (from CREMA_VARIANT) and only API routes (`/v1/...`), so Prometheus's own scrapes of
 * /metrics and the kubelet's probes neither count as samples nor dilute the error rate. Drift
 * gauges carry no variant label; they are selected by model name and revision (the model's
 * sha256), which is what tells stable from canary.
 */
import type { AnalysisMetric, Variant } from './types.js';

/** Raised for inputs that would make malformed PromQL (a bad window, label name or value). */
export class AnalysisInputError extends Error {
  override readonly name = 'AnalysisInputError';
}

/** Where one variant's numbers come from. */
export interface QueryTarget {
  readonly variant: Variant;
  /** The RecommenderModel name, which is the `model` label of the drift gauges. */
  readonly model: string;
  /** The model sha256 this variant serves, the `revision` label of the drift gauges. */
  readonly revision: string;
  /** PromQL range, e.g. 1m or 30s. */
  readonly window: string;
  /**
   * Extra label matchers added to every selector, e.g. `{ namespace: 'shop' }` when Prometheus
   * attaches target labels to serving pods. Default none.
   */
  readonly scope?: Readonly<Record<string, string>>;
  /** Drift features to consider; empty or absent means all. */
  readonly driftFeatures?: readonly string[];
  /** Metric name prefix. Default 'crema_'. */
  readonly prefix?: string;
}

/** The value query and the sample-count query of one metric. */
export interface MetricQueries {
  readonly value: string;
  readonly samples: string;
}

const WINDOW = /^[1-9][0-9]*(ms|s|m|h|d)$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** Routes of the versioned API; probes, /metrics and unmatched paths are not traffic. */
const API_ROUTES = '/v1/.+';

/** A PromQL double-quoted string literal. */
export function quoteLabelValue(v: string): string {
  return `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

function escapeRegex(v: string): string {
  return v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function checkWindow(window: string): string {
  if (!WINDOW.test(window))
    throw new AnalysisInputError(`window ${JSON.stringify(window)} is not a PromQL duration like 1m`);
  return window;
}

function matchers(pairs: [name: string, op: '=' | '=~', value: string][]): string {
  for (const [name] of pairs) {
    if (!LABEL_NAME.test(name))
      throw new AnalysisInputError(`label name ${JSON.stringify(name)} is not valid`);
  }
  return `{${pairs.map(([n, op, v]) => `${n}${op}${quoteLabelValue(v)}`).join(',')}}`;
}

function scopePairs(t: QueryTarget): [string, '=', string][] {
  return Object.entries(t.scope ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => [k, '=', v]);
}

function requestSelector(t: QueryTarget, extra: [string, '=' | '=~', string][] = []): string {
  return matchers([['variant', '=', t.variant], ...scopePairs(t), ['route', '=~', API_ROUTES], ...extra]);
}

function eventSelector(t: QueryTarget): string {
  return matchers([['variant', '=', t.variant], ...scopePairs(t)]);
}

const p = (t: QueryTarget) => t.prefix ?? 'crema_';

/** API requests the variant served in the window. */
export function buildRequestCountQuery(t: QueryTarget): string {
  return `sum(increase(${p(t)}http_request_duration_seconds_count${requestSelector(t)}[${checkWindow(t.window)}]))`;
}

/** Share of the variant's API requests answered 5xx (0-1); 0 when none failed, empty when there were none. */
export function buildErrorRateQuery(t: QueryTarget): string {
  const w = checkWindow(t.window);
  const m = `${p(t)}http_request_duration_seconds_count`;
  const failed = `sum(rate(${m}${requestSelector(t, [['status_code', '=~', '5..']])}[${w}]))`;
  // A variant that never failed has no 5xx series at all; `or vector(0)` makes that 0, not "no data".
  return `(${failed} or vector(0)) / sum(rate(${m}${requestSelector(t)}[${w}]))`;
}

/** 99th percentile latency of the variant's API requests, in milliseconds. */
export function buildP99LatencyQuery(t: QueryTarget): string {
  const w = checkWindow(t.window);
  return `histogram_quantile(0.99, sum by (le) (rate(${p(t)}http_request_duration_seconds_bucket${requestSelector(t)}[${w}]))) * 1000`;
}

/** Highest feature PSI of the variant's model revision, right now (serving smooths it over its own window). */
export function buildDriftPsiQuery(t: QueryTarget): string {
  const features = t.driftFeatures ?? [];
  const pairs: [string, '=' | '=~', string][] = [
    ['model', '=', t.model],
    ['revision', '=', t.revision],
    ...scopePairs(t),
  ];
  if (features.length > 0) pairs.push(['feature', '=~', features.map(escapeRegex).join('|')]);
  return `max(${p(t)}feature_drift_psi${matchers(pairs)})`;
}

/** Exposures (impression events) of the variant in the window. */
export function buildExposureCountQuery(t: QueryTarget): string {
  return `sum(increase(${p(t)}experiment_exposures_total${eventSelector(t)}[${checkWindow(t.window)}]))`;
}

/** Conversions per exposure of the variant in the window. */
export function buildBusinessKpiQuery(t: QueryTarget): string {
  const w = checkWindow(t.window);
  const conversions = `sum(rate(${p(t)}experiment_conversions_total${eventSelector(t)}[${w}]))`;
  return `(${conversions} or vector(0)) / sum(rate(${p(t)}experiment_exposures_total${eventSelector(t)}[${w}]))`;
}

/** The value and sample-count queries of every metric for one variant. */
export function buildAnalysisQueries(t: QueryTarget): Record<AnalysisMetric, MetricQueries> {
  const requests = buildRequestCountQuery(t);
  return {
    errorRate: { value: buildErrorRateQuery(t), samples: requests },
    p99LatencyMs: { value: buildP99LatencyQuery(t), samples: requests },
    // PSI from a handful of requests is noise, so drift needs the same request volume.
    driftPsi: { value: buildDriftPsiQuery(t), samples: requests },
    businessKpi: { value: buildBusinessKpiQuery(t), samples: buildExposureCountQuery(t) },
  };
}
