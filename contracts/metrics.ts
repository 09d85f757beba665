/**
 * The serving tier's Prometheus metrics: every name and label name, defined once. Serving
 * registers them (serving/src/metrics.ts); the operator's canary analysis and drift rules select
 * on them (operator/src/analysis/). Docs: docs/serving.md (metrics), ADR 0005 (identity labels).
 */

/** Every serving metric name starts with this. */
export const METRIC_PREFIX = 'crema_';

/** Label names used by the serving metrics. */
export const METRIC_LABELS = {
  /** The RecommenderModel's name (CREMA_MODEL_NAME). */
  model: 'model',
  /** The RecommenderModel's namespace (POD_NAMESPACE). */
  namespace: 'namespace',
  /** sha256 of the model that answered: the RecommenderModel's `spec.model.sha256` it serves. */
  revision: 'revision',
  /** stable | canary (CREMA_VARIANT) on requests; the event's `variant` on experiment counters. */
  variant: 'variant',
  /** The route template, e.g. /v1/users/:id/offers. */
  route: 'route',
  method: 'method',
  statusCode: 'status_code',
  reason: 'reason',
  task: 'task',
  outcome: 'outcome',
  type: 'type',
  feature: 'feature',
  bin: 'bin',
  /** region_menu_state only: ok, missing or invalid. */
  state: 'state',
  /** model_info only: the `name` in the model's metadata (not the RecommenderModel). */
  metadataName: 'metadata_name',
} as const;

const L = METRIC_LABELS;

/**
 * Which serving process, and which model in it, a series comes from. Every metric that a canary
 * analysis or an SRE slices by model carries all three, so two RecommenderModels (or the same
 * name in two namespaces) behind one Prometheus are never pooled.
 */
export const IDENTITY_LABELS = [L.model, L.namespace, L.revision] as const;

/** One metric: its full name and its label names, in the order serving declares them. */
export interface MetricSpec<Label extends string = string> {
  readonly name: string;
  readonly labels: readonly Label[];
}

const metric = <const Label extends string>(name: string, labels: readonly Label[]): MetricSpec<Label> => ({
  name: `${METRIC_PREFIX}${name}`,
  labels,
});

/** The serving metrics. Histograms add Prometheus's `_bucket`, `_sum` and `_count` series. */
export const SERVING_METRICS = {
  httpRequestDuration: metric('http_request_duration_seconds', [
    ...IDENTITY_LABELS,
    L.variant,
    L.route,
    L.method,
    L.statusCode,
  ]),
  fallbacks: metric('fallbacks_total', [...IDENTITY_LABELS, L.route, L.reason]),
  requestsRejected: metric('requests_rejected_total', [...IDENTITY_LABELS, L.reason]),
  coldStartRequests: metric('cold_start_requests_total', [...IDENTITY_LABELS]),
  recommendationScore: metric('recommendation_score', [...IDENTITY_LABELS]),
  /** `revision` here is the sha256 of that task's model (one series per loaded task). */
  modelInfo: metric('model_info', [...IDENTITY_LABELS, L.task, L.metadataName]),
  /** No revision: a failed load has none, and a successful one shows in model_info. */
  modelLoads: metric('model_loads_total', [L.model, L.namespace, L.task, L.outcome]),
  events: metric('events_total', [...IDENTITY_LABELS, L.type, L.outcome]),
  /** Events answered 503 without being stored; `reason` from EVENT_REFUSAL_REASONS. */
  eventsRefused: metric('events_refused_total', [...IDENTITY_LABELS, L.reason]),
  experimentExposures: metric('experiment_exposures_total', [...IDENTITY_LABELS, L.variant]),
  experimentConversions: metric('experiment_conversions_total', [...IDENTITY_LABELS, L.variant]),
  experimentConversionValue: metric('experiment_conversion_value_dollars_total', [
    ...IDENTITY_LABELS,
    L.variant,
  ]),
  featureDriftPsi: metric('feature_drift_psi', [...IDENTITY_LABELS, L.feature]),
  featureDriftObservations: metric('feature_drift_observations', [...IDENTITY_LABELS, L.feature]),
  scoreDriftPsi: metric('score_drift_psi', [...IDENTITY_LABELS]),
  featureWindowShare: metric('feature_window_share', [...IDENTITY_LABELS, L.feature, L.bin]),
  /** 1 for the regional menu's current state (ok, missing, invalid: the last two serve the full menu). */
  regionMenuState: metric('region_menu_state', [L.model, L.namespace, L.state]),
} as const;

/** `reason` values of events_refused_total. */
export const EVENT_REFUSAL_REASONS = {
  /** The events stream holds its maximum of entries not yet processed by every consumer group. */
  streamFull: 'stream_full',
} as const;

/** The label names of one serving metric, as a union type (for prom-client's generics). */
export type LabelsOf<K extends keyof typeof SERVING_METRICS> =
  (typeof SERVING_METRICS)[K] extends MetricSpec<infer Label> ? Label : never;
