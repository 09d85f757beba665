/**
 * PromQL for canary analysis, built from the serving tier's metrics (names and labels:
 * contracts/metrics.ts). Pure: every function returns a query string, so the exact PromQL is
 * table-tested.
 *
 * Every selector starts with the identity labels `model`, `namespace` and `revision`, so one
 * model's analysis never counts another model's traffic, even when both run canaries behind one
 * Prometheus. Request metrics (error rate, p99, sample counts) also select the serving process's
 * `variant` (from CREMA_VARIANT) and only API routes (`/v1/...`), so Prometheus's own scrapes of
 * /metrics and the kubelet's probes neither count as samples nor dilute the error rate. Drift
 * gauges carry no variant label; the revision tells stable from canary.
 */
import { METRIC_LABELS as L, SERVING_METRICS as M } from '../../../contracts/metrics.js';
import type { AnalysisMetric, Variant } from './types.js';

/** Raised for inputs that would make malformed PromQL (a bad window, label name or value). */
export class AnalysisInputError extends Error {
  override readonly name = 'AnalysisInputError';
}

/** Where one variant's numbers come from. */
export interface QueryTarget {
  readonly variant: Variant;
  /** The RecommenderModel name: the `model` label. */
  readonly model: string;
  /** The RecommenderModel's namespace: the `namespace` label. */
  readonly namespace: string;
  /** The model sha256 this variant serves: the `revision` label. */
  readonly revision: string;
  /** PromQL range, e.g. 1m or 30s. */
  readonly window: string;
  /**
   * Extra label matchers added to every selector, e.g. `{ cluster: 'eu-1' }` when one Prometheus
   * scrapes several clusters and adds a target label for each. Default none.
   */
  readonly scope?: Readonly<Record<string, string>>;
  /** Drift features to consider; empty or absent means all. */
  readonly driftFeatures?: readonly string[];
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

/** One label matcher. */
type Pair = [name: string, op: '=' | '=~', value: string];

function matchers(pairs: Pair[]): string {
  for (const [name] of pairs) {
    if (!LABEL_NAME.test(name))
      throw new AnalysisInputError(`label name ${JSON.stringify(name)} is not valid`);
  }
  return `{${pairs.map(([n, op, v]) => `${n}${op}${quoteLabelValue(v)}`).join(',')}}`;
}

/** The series of this model (name and namespace) at this revision, and nothing else. */
function identityPairs(t: QueryTarget): Pair[] {
  return [
    [L.model, '=', t.model],
    [L.namespace, '=', t.namespace],
    [L.revision, '=', t.revision],
  ];
}

function scopePairs(t: QueryTarget): Pair[] {
  return Object.entries(t.scope ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => [k, '=', v]);
}

function requestSelector(t: QueryTarget, extra: Pair[] = []): string {
  return matchers([
    ...identityPairs(t),
    [L.variant, '=', t.variant],
    ...scopePairs(t),
    [L.route, '=~', API_ROUTES],
    ...extra,
  ]);
}

function eventSelector(t: QueryTarget): string {
  return matchers([...identityPairs(t), [L.variant, '=', t.variant], ...scopePairs(t)]);
}

const REQUESTS = `${M.httpRequestDuration.name}_count`;

/** API requests the variant served in the window. */
export function buildRequestCountQuery(t: QueryTarget): string {
  return `sum(increase(${REQUESTS}${requestSelector(t)}[${checkWindow(t.window)}]))`;
}

/** Share of the variant's API requests answered 5xx (0-1); 0 when none failed, empty when there were none. */
export function buildErrorRateQuery(t: QueryTarget): string {
  const w = checkWindow(t.window);
  const failed = `sum(rate(${REQUESTS}${requestSelector(t, [[L.statusCode, '=~', '5..']])}[${w}]))`;
  // A variant that never failed has no 5xx series at all; `or vector(0)` makes that 0, not "no data".
  return `(${failed} or vector(0)) / sum(rate(${REQUESTS}${requestSelector(t)}[${w}]))`;
}

/** 99th percentile latency of the variant's API requests, in milliseconds. */
export function buildP99LatencyQuery(t: QueryTarget): string {
  const w = checkWindow(t.window);
  return `histogram_quantile(0.99, sum by (le) (rate(${M.httpRequestDuration.name}_bucket${requestSelector(t)}[${w}]))) * 1000`;
}

/** Highest feature PSI of the variant's model revision, right now (serving smooths it over its own window). */
export function buildDriftPsiQuery(t: QueryTarget): string {
  const features = t.driftFeatures ?? [];
  const pairs: Pair[] = [...identityPairs(t), ...scopePairs(t)];
  if (features.length > 0) pairs.push([L.feature, '=~', features.map(escapeRegex).join('|')]);
  return `max(${M.featureDriftPsi.name}${matchers(pairs)})`;
}

/** Exposures (impression events) of the variant in the window. */
export function buildExposureCountQuery(t: QueryTarget): string {
  return `sum(increase(${M.experimentExposures.name}${eventSelector(t)}[${checkWindow(t.window)}]))`;
}

/** Conversions per exposure of the variant in the window. */
export function buildBusinessKpiQuery(t: QueryTarget): string {
  const w = checkWindow(t.window);
  const conversions = `sum(rate(${M.experimentConversions.name}${eventSelector(t)}[${w}]))`;
  return `(${conversions} or vector(0)) / sum(rate(${M.experimentExposures.name}${eventSelector(t)}[${w}]))`;
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
