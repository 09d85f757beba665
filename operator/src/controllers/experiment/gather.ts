/**
 * Reads what serving counted for an experiment from Prometheus: per variant the exposed users
 * and the sufficient statistics of every metric, and per variant's model the guardrail numbers.
 * `toVariantSums` (pure) turns the samples into stats-api.ts inputs; `checkCountsFresh` (pure)
 * refuses counts that are absent or below those status already shows, so a look never goes back.
 */
import { EXPERIMENT_METRICS, type ExperimentMetric } from '../../../../contracts/experiments.js';
import type { PrometheusClient, PromSample } from '../../analysis/prometheus.js';
import {
  buildErrorsQuery,
  buildP99Query,
  buildRequestsQuery,
  buildSumsQuery,
  buildUsersQuery,
  type ExperimentTarget,
} from './queries.js';
import type { MetricSums } from './stats-api.js';
import type { ExperimentStatus } from './types.js';

/** One variant's sums for every metric. */
export type VariantSums = Record<ExperimentMetric, MetricSums>;

/** Guardrail numbers of one model over the window (undefined: no traffic). */
export interface ModelHealth {
  readonly requests: number;
  readonly p99Ms?: number;
  readonly errorRate?: number;
}

/** Everything read for one look. */
export interface ExperimentData {
  /** Absent when Prometheus has no users series of the experiment (no serving pod exports it now). */
  readonly sums?: ReadonlyMap<string, VariantSums>;
  readonly health: ReadonlyMap<string, ModelHealth>;
}

/**
 * Why `data` holds no new counts, or null when it does: no series at all (no pod scraped yet,
 * or Redis unreadable at scrape), or a variant's exposures or conversions below what status
 * already records. Either way the look is skipped and status keeps its counts: the totals in
 * Redis only grow, so lower numbers are a gap in the scrape, never the truth.
 */
export function checkCountsFresh(
  data: ExperimentData,
  recorded: ExperimentStatus['variants'],
): string | null {
  if (!data.sums) return 'serving exports no totals for this experiment yet (no series)';
  for (const v of recorded ?? []) {
    const now = v.name === undefined ? undefined : data.sums.get(v.name)?.conversion;
    if (!now) continue;
    if (now.n < (v.exposures ?? 0))
      return `variant ${v.name}: ${now.n} exposures read, below the ${v.exposures} recorded (a gap in the scrape)`;
    if (Math.round(now.sumY) < (v.conversions ?? 0))
      return `variant ${v.name}: ${Math.round(now.sumY)} conversions read, below the ${v.conversions} recorded (a gap in the scrape)`;
  }
  return null;
}

/** Builds per-variant sums from the users and sums samples (variants without samples get zeros). */
export function toVariantSums(
  variants: readonly string[],
  users: readonly PromSample[],
  sums: readonly PromSample[],
): Map<string, VariantSums> {
  const out = new Map<string, VariantSums>();
  for (const v of variants) {
    const n = Math.round(users.find((s) => s.labels['variant'] === v)?.value ?? 0);
    const stat = (metric: string, name: string) =>
      sums.find(
        (s) => s.labels['variant'] === v && s.labels['metric'] === metric && s.labels['stat'] === name,
      )?.value ?? 0;
    const entry = {} as Record<ExperimentMetric, MetricSums>;
    for (const m of EXPERIMENT_METRICS) {
      entry[m] = {
        n,
        sumY: stat(m, 'sumY'),
        sumYY: stat(m, 'sumYY'),
        sumX: stat(m, 'sumX'),
        sumXX: stat(m, 'sumXX'),
        sumXY: stat(m, 'sumXY'),
        nWithoutCovariate: Math.round(stat(m, 'nWithoutCovariate')),
      };
    }
    out.set(v, entry);
  }
  return out;
}

/** Guardrail numbers per model from the three samples lists. */
export function toModelHealth(
  models: readonly string[],
  requests: readonly PromSample[],
  errors: readonly PromSample[],
  p99: readonly PromSample[],
): Map<string, ModelHealth> {
  const out = new Map<string, ModelHealth>();
  for (const m of models) {
    const n = requests.find((s) => s.labels['model'] === m)?.value ?? 0;
    const failed = errors.find((s) => s.labels['model'] === m)?.value ?? 0;
    const q = p99.find((s) => s.labels['model'] === m)?.value;
    out.set(m, {
      requests: n,
      ...(n > 0 ? { errorRate: failed / n } : {}),
      ...(n > 0 && q !== undefined && Number.isFinite(q) ? { p99Ms: q } : {}),
    });
  }
  return out;
}

/** Runs the queries of one look. */
export async function fetchExperimentData(
  prom: PrometheusClient,
  t: ExperimentTarget,
  variants: readonly string[],
): Promise<ExperimentData> {
  const [users, sums, requests, errors, p99] = await Promise.all([
    prom.query(buildUsersQuery(t)),
    prom.query(buildSumsQuery(t)),
    prom.query(buildRequestsQuery(t)),
    prom.query(buildErrorsQuery(t)),
    prom.query(buildP99Query(t)),
  ]);
  return {
    ...(users.length > 0 ? { sums: toVariantSums(variants, users, sums) } : {}),
    health: toModelHealth(t.models, requests, errors, p99),
  };
}
