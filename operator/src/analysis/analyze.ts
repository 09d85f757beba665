/**
 * One canary analysis: query Prometheus for every configured metric on both variants, then hand
 * the numbers to the pure verdict. Prometheus errors propagate (typed, naming the query); the
 * caller decides whether an unreachable Prometheus counts as a failed check.
 */
import type { RecommenderModelSpecRolloutAnalysis } from '../api/v1alpha1/recommendermodel.js';
import type { PrometheusClient } from './prometheus.js';
import { buildAnalysisQueries, type QueryTarget } from './queries.js';
import type { AnalysisMetric, AnalysisResult, ByVariant, Variant } from './types.js';
import { computeVerdict, type AnalysisSamples, type AnalysisValues } from './verdict.js';

export interface AnalyzeCanaryInput {
  /** RecommenderModel name (the serving metrics' `model` label). */
  readonly model: string;
  /** The model's namespace (the serving metrics' `namespace` label). */
  readonly namespace: string;
  /** sha256 of the stable and canary models (the serving metrics' `revision` label). */
  readonly stableSha: string;
  readonly canarySha: string;
  /** PromQL range the rates are taken over, e.g. 1m. */
  readonly window: string;
  readonly analysis: RecommenderModelSpecRolloutAnalysis | undefined;
  /**
   * Extra label matchers for every query, e.g. `{ cluster: 'eu-1' }` when one Prometheus scrapes
   * several clusters. Default none: model, namespace and revision are always selected.
   */
  readonly scope?: Readonly<Record<string, string>>;
  /** Drift features to consider (spec.drift.features); default all. */
  readonly driftFeatures?: readonly string[];
  /** Default () => new Date(). */
  readonly clock?: () => Date;
}

const metricsConfigured = (a: RecommenderModelSpecRolloutAnalysis | undefined): AnalysisMetric[] =>
  (Object.keys(a?.metrics ?? {}) as AnalysisMetric[]).filter((m) => a?.metrics?.[m] !== undefined);

/** A query's single number: the first sample's value, or null for an empty result or NaN. */
async function scalar(client: PrometheusClient, promql: string): Promise<number | null> {
  const [first] = await client.query(promql);
  return first === undefined || Number.isNaN(first.value) ? null : first.value;
}

/** Queries Prometheus for the configured metrics of canary and stable and computes the verdict. */
export async function analyzeCanary(
  client: PrometheusClient,
  input: AnalyzeCanaryInput,
): Promise<AnalysisResult> {
  const target = (variant: Variant): QueryTarget => ({
    variant,
    model: input.model,
    namespace: input.namespace,
    revision: variant === 'canary' ? input.canarySha : input.stableSha,
    window: input.window,
    ...(input.scope ? { scope: input.scope } : {}),
    ...(input.driftFeatures ? { driftFeatures: input.driftFeatures } : {}),
  });
  const queries = {
    canary: buildAnalysisQueries(target('canary')),
    stable: buildAnalysisQueries(target('stable')),
  };
  const samples: AnalysisSamples = {};
  const values: AnalysisValues = {};
  // Identical sample queries (three metrics share the request count) are sent once.
  const cache = new Map<string, Promise<number | null>>();
  const run = (q: string) => {
    let p = cache.get(q);
    if (!p) cache.set(q, (p = scalar(client, q)));
    return p;
  };
  await Promise.all(
    metricsConfigured(input.analysis).map(async (metric) => {
      const [sc, ss, vc, vs] = await Promise.all([
        run(queries.canary[metric].samples),
        run(queries.stable[metric].samples),
        run(queries.canary[metric].value),
        run(queries.stable[metric].value),
      ]);
      const count = (n: number | null) => (n === null ? 0 : Math.round(n));
      samples[metric] = { canary: count(sc), stable: count(ss) } satisfies ByVariant<number>;
      values[metric] = { canary: vc, stable: vs };
    }),
  );
  return computeVerdict(input.analysis, samples, values, (input.clock ?? (() => new Date()))());
}
