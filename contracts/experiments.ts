/**
 * What serving, the router and the operator's Experiment controller agree on about experiments:
 * the headers the router adds to a request of an experiment's user, the per-user state serving
 * keeps in Redis, and the counters serving exports and the controller reads (sufficient
 * statistics, operator/src/controllers/experiment/stats-api.ts). No label carries a user id.
 * Design: docs/adr/0012-experiment-controller.md.
 */
import { METRIC_PREFIX } from './metrics.js';

/** Headers the experiment router sets on every request it forwards (client values are replaced). */
export const EXPERIMENT_HEADERS = {
  /** `<namespace>/<name>` of the experiment. */
  experiment: 'x-crema-experiment',
  /** The variant the sticky hash assigned the request's user. */
  variant: 'x-crema-experiment-variant',
  /** How long serving remembers the user's exposure, seconds (the experiment's maxDuration). */
  ttlSeconds: 'x-crema-experiment-ttl',
} as const;

/** The primary metrics; each is a per-user outcome Y (stats-api.ts). */
export const EXPERIMENT_METRICS = ['conversion', 'orderValue', 'attachRate'] as const;
export type ExperimentMetric = (typeof EXPERIMENT_METRICS)[number];

/**
 * The user feature (contracts/features.ts USER_FEATURES) that is each metric's pre-experiment
 * covariate X for CUPED: prior order rate, prior spend, prior add-on attach.
 */
export const EXPERIMENT_COVARIATES: Record<ExperimentMetric, string> = {
  conversion: 'frequency_30d',
  orderValue: 'monetary_30d',
  attachRate: 'addon_attach_rate',
};

/** `stat` label values of the sums counter (names as in stats-api.ts MetricSums). */
export const EXPERIMENT_STATS = ['sumY', 'sumYY', 'sumX', 'sumXX', 'sumXY', 'nWithoutCovariate'] as const;
export type ExperimentStat = (typeof EXPERIMENT_STATS)[number];

/** Label names of the experiment counters. */
export const EXPERIMENT_LABELS = {
  experiment: 'experiment',
  variant: 'variant',
  /** The RecommenderModel that served the variant (the serving process's CREMA_MODEL_NAME). */
  model: 'model',
  namespace: 'namespace',
  metric: 'metric',
  stat: 'stat',
} as const;

const L = EXPERIMENT_LABELS;

/** The counters. `experiment` is the experiment's name (its namespace is `namespace`). */
export const EXPERIMENT_COUNTERS = {
  /** Users exposed, each counted once per experiment (n). */
  users: {
    name: `${METRIC_PREFIX}experiment_users_total`,
    labels: [L.experiment, L.variant, L.model, L.namespace],
  },
  /** Sufficient statistics of each metric over the exposed users. */
  sums: {
    name: `${METRIC_PREFIX}experiment_sums_total`,
    labels: [L.experiment, L.variant, L.model, L.namespace, L.metric, L.stat],
  },
} as const;

/** Redis hash of one user in one experiment: v (variant), x:<metric>, c, t, a. Expires with the experiment. */
export function experimentUserKey(namespace: string, experiment: string, userId: string): string {
  return `crema:exp:{${namespace}/${experiment}}:u:${userId}`;
}

/** Parses `x-crema-experiment`: `<namespace>/<name>`, both DNS names. */
export function parseExperimentId(v: string): { namespace: string; name: string } | undefined {
  const m = /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$/.exec(v);
  return m ? { namespace: m[1]!, name: m[3]! } : undefined;
}
