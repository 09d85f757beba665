/**
 * PromQL of the Experiment controller (pure; table-tested): the per-variant sufficient statistics
 * serving keeps in Redis and every serving pod exports as gauges (contracts/experiments.ts; `max`
 * across pods, since each reports the same totals and max takes the freshest, then `sum` over the
 * models that served a variant) and the guardrails per variant's model, from the
 * request histogram every serving process exports (contracts/metrics.ts).
 */
import {
  EXPERIMENT_GAUGES,
  EXPERIMENT_LABELS as E,
  experimentRunOf,
} from '../../../../contracts/experiments.js';
import { METRIC_LABELS as L, SERVING_METRICS as M } from '../../../../contracts/metrics.js';
import { quoteLabelValue } from '../../analysis/queries.js';

const WINDOW = /^[1-9][0-9]*(s|m|h)$/;

/** Which experiment, and the models of its variants. */
export interface ExperimentTarget {
  readonly namespace: string;
  readonly name: string;
  /**
   * The Experiment object's run (contracts/experiments.ts experimentRunOf its uid): only its
   * totals are read, never those of an earlier object of the same name still exported until
   * they expire. experimentTargetOf sets it.
   */
  readonly run: string;
  readonly models: readonly string[];
  /** Guardrail window, e.g. 5m. */
  readonly window: string;
}

/** The target of a look at `exp` (its run from its uid). */
export function experimentTargetOf(
  exp: {
    metadata?: { name?: string; namespace?: string; uid?: string };
    spec: { variants: ReadonlyArray<{ modelRef: string }> };
  },
  window: string,
): ExperimentTarget {
  return {
    namespace: exp.metadata!.namespace!,
    name: exp.metadata!.name!,
    run: experimentRunOf(exp.metadata!.uid!),
    models: exp.spec.variants.map((v) => v.modelRef),
    window,
  };
}

const expSelector = (t: ExperimentTarget) =>
  `{${E.experiment}=${quoteLabelValue(t.name)},${E.namespace}=${quoteLabelValue(t.namespace)},${E.run}=${quoteLabelValue(t.run)}}`;

/** Exposed users per variant. */
export function buildUsersQuery(t: ExperimentTarget): string {
  return `sum by (${E.variant}) (max by (${E.variant}, ${E.model}) (${EXPERIMENT_GAUGES.users.name}${expSelector(t)}))`;
}

/** Every sum per variant, metric and stat. */
export function buildSumsQuery(t: ExperimentTarget): string {
  const by = `${E.variant}, ${E.metric}, ${E.stat}`;
  return `sum by (${by}) (max by (${by}, ${E.model}) (${EXPERIMENT_GAUGES.sums.name}${expSelector(t)}))`;
}

function requests(t: ExperimentTarget, extra = ''): string {
  if (!WINDOW.test(t.window))
    throw new RangeError(`guardrail window ${JSON.stringify(t.window)} is not like 5m`);
  const models = t.models.map((m) => m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  return `{${L.namespace}=${quoteLabelValue(t.namespace)},${L.model}=~${quoteLabelValue(models)},${L.route}=~"/v1/.+"${extra}}`;
}

/** p99 latency of each variant's model's API requests in the window, ms. */
export function buildP99Query(t: ExperimentTarget): string {
  return `histogram_quantile(0.99, sum by (${L.model}, le) (rate(${M.httpRequestDuration.name}_bucket${requests(t)}[${t.window}]))) * 1000`;
}

/** API requests of each variant's model in the window. */
export function buildRequestsQuery(t: ExperimentTarget): string {
  return `sum by (${L.model}) (increase(${M.httpRequestDuration.name}_count${requests(t)}[${t.window}]))`;
}

/** 5xx answers of each variant's model in the window (no series: none failed). */
export function buildErrorsQuery(t: ExperimentTarget): string {
  return `sum by (${L.model}) (increase(${M.httpRequestDuration.name}_count${requests(t, `,${L.statusCode}=~"5.."`)}[${t.window}]))`;
}
