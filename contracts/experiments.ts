/**
 * What serving, the router and the operator's Experiment controller agree on about experiments:
 * the headers the router adds to a request of an experiment's user, the per-user state and the
 * per-experiment totals serving keeps in Redis, and the gauges serving exports from those totals
 * and the controller reads (sufficient statistics, operator/src/controllers/experiment/stats-api.ts).
 * No label carries a user id. Design: docs/adr/0012-experiment-controller.md (and its amendment).
 */
import { METRIC_PREFIX } from './metrics.js';

/** Headers the experiment router sets on every request it forwards (client values are replaced). */
export const EXPERIMENT_HEADERS = {
  /** `<namespace>/<name>` of the experiment. */
  experiment: 'x-crema-experiment',
  /**
   * The run: which Experiment object (experimentRunOf its metadata.uid). An Experiment deleted
   * and re-created under the same name is a new run and counts from zero.
   */
  run: 'x-crema-experiment-run',
  /**
   * The variant the sticky hash assigned the request's user. Absent when the router sent the
   * request to stable instead of that variant (its upstream down or unknown): serving then
   * records no exposure, yet still counts an order of a user already exposed.
   */
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

/** `stat` label values of the sums gauge (names as in stats-api.ts MetricSums). */
export const EXPERIMENT_STATS = ['sumY', 'sumYY', 'sumX', 'sumXX', 'sumXY', 'nWithoutCovariate'] as const;
export type ExperimentStat = (typeof EXPERIMENT_STATS)[number];

/** Label names of the experiment gauges. */
export const EXPERIMENT_LABELS = {
  experiment: 'experiment',
  variant: 'variant',
  /** The RecommenderModel that served the variant (the serving process's CREMA_MODEL_NAME). */
  model: 'model',
  namespace: 'namespace',
  /** The Experiment object's run (experimentRunOf its uid). */
  run: 'run',
  metric: 'metric',
  stat: 'stat',
} as const;

const L = EXPERIMENT_LABELS;

/**
 * The gauges. `experiment` is the experiment's name (its namespace is `namespace`, the Experiment
 * object `run`: a re-created Experiment of the same name exports other series). Every serving
 * process exports the same totals, read from Redis at scrape time (so a restarted or new pod
 * reports them all at once); readers take `max` across pods, then `sum` over models.
 */
export const EXPERIMENT_GAUGES = {
  /** Users exposed, each counted once per experiment (n). */
  users: {
    name: `${METRIC_PREFIX}experiment_users`,
    labels: [L.experiment, L.variant, L.model, L.namespace, L.run],
  },
  /** Sufficient statistics of each metric over the exposed users. */
  sums: {
    name: `${METRIC_PREFIX}experiment_sums`,
    labels: [L.experiment, L.variant, L.model, L.namespace, L.run, L.metric, L.stat],
  },
} as const;

/** A run: 8 to 32 lowercase hex digits (experimentRunOf gives 12). */
export const EXPERIMENT_RUN = /^[0-9a-f]{8,32}$/;

/**
 * The run of an Experiment object: the first 12 hex digits of its metadata.uid (dashes
 * dropped). Throws when the uid has fewer than 12 hex digits.
 */
export function experimentRunOf(uid: string): string {
  const run = uid.replace(/-/g, '').toLowerCase().slice(0, 12);
  if (!/^[0-9a-f]{12}$/.test(run)) throw new RangeError(`metadata.uid ${JSON.stringify(uid)} is not a UID`);
  return run;
}

/**
 * Redis hash of one experiment run's totals, updated by the same script that records an exposure
 * or order (so exactly once). Fields: `users|<variant>|<model>` and
 * `sum|<variant>|<model>|<metric>|<stat>`. Same hash tag as the user keys: one slot. Expires
 * `ttl` (the experiment's maxDuration) after the run's last exposure or order.
 */
export function experimentTotalsKey(namespace: string, experiment: string, run: string): string {
  return `crema:exp:{${namespace}/${experiment}}:r:${run}:totals`;
}

/** Redis set of the runs whose totals serving exports: `<namespace>/<name>/<run>` each. */
export const EXPERIMENT_INDEX_KEY = 'crema:exp:index';

/** One entry of EXPERIMENT_INDEX_KEY. */
export function experimentIndexEntry(namespace: string, experiment: string, run: string): string {
  return `${namespace}/${experiment}/${run}`;
}

/** Parses an index entry (experimentIndexEntry's inverse); undefined for another shape. */
export function parseExperimentIndexEntry(
  entry: string,
): { namespace: string; name: string; run: string } | undefined {
  const cut = entry.lastIndexOf('/');
  const id = parseExperimentId(entry.slice(0, cut));
  const run = entry.slice(cut + 1);
  return cut > 0 && id && EXPERIMENT_RUN.test(run) ? { ...id, run } : undefined;
}

/** One field of the totals hash, parsed; undefined for a field of another shape. */
export type TotalsField =
  | { readonly kind: 'users'; readonly variant: string; readonly model: string }
  | {
      readonly kind: 'sum';
      readonly variant: string;
      readonly model: string;
      readonly metric: ExperimentMetric;
      readonly stat: ExperimentStat;
    };

/** The totals field of `f`. Variant and model names are DNS names: they hold no `|`. */
export function totalsFieldName(f: TotalsField): string {
  return f.kind === 'users'
    ? `users|${f.variant}|${f.model}`
    : `sum|${f.variant}|${f.model}|${f.metric}|${f.stat}`;
}

/** Parses a totals field name (totalsFieldName's inverse). */
export function parseTotalsField(name: string): TotalsField | undefined {
  const p = name.split('|');
  if (p[0] === 'users' && p.length === 3 && p[1] && p[2])
    return { kind: 'users', variant: p[1], model: p[2] };
  if (
    p[0] === 'sum' &&
    p.length === 5 &&
    p[1] &&
    p[2] &&
    (EXPERIMENT_METRICS as readonly string[]).includes(p[3]!) &&
    (EXPERIMENT_STATS as readonly string[]).includes(p[4]!)
  )
    return {
      kind: 'sum',
      variant: p[1],
      model: p[2],
      metric: p[3] as ExperimentMetric,
      stat: p[4] as ExperimentStat,
    };
  return undefined;
}

/** Redis hash of one user in one experiment run: v (variant), x:<metric>, c, t, a. Expires with the run. */
export function experimentUserKey(
  namespace: string,
  experiment: string,
  run: string,
  userId: string,
): string {
  return `crema:exp:{${namespace}/${experiment}}:r:${run}:u:${userId}`;
}

/** Parses `x-crema-experiment`: `<namespace>/<name>`, both DNS names. */
export function parseExperimentId(v: string): { namespace: string; name: string } | undefined {
  const m = /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$/.exec(v);
  return m ? { namespace: m[1]!, name: m[3]! } : undefined;
}
