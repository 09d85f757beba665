import { describe, expect, it } from 'vitest';
import {
  AnalysisInputError,
  buildAnalysisQueries,
  buildBusinessKpiQuery,
  buildDriftPsiQuery,
  buildErrorRateQuery,
  buildExposureCountQuery,
  buildP99LatencyQuery,
  buildRequestCountQuery,
  type QueryTarget,
} from './queries.js';

const canary: QueryTarget = {
  variant: 'canary',
  model: 'drinks',
  namespace: 'shop',
  revision: 'abc123',
  window: '1m',
};
const stable: QueryTarget = { ...canary, variant: 'stable', revision: 'def456', window: '30s' };
const scoped: QueryTarget = { ...canary, scope: { cluster: 'eu-1', app: 'drinks' } };
const REQ = 'crema_http_request_duration_seconds';
/** The identity matchers of the canary and the stable target. */
const C = 'model="drinks",namespace="shop",revision="abc123"';
const S = 'model="drinks",namespace="shop",revision="def456"';

describe('analysis PromQL', () => {
  it.each([
    [
      'requests, canary',
      buildRequestCountQuery(canary),
      `sum(increase(${REQ}_count{${C},variant="canary",route=~"/v1/.+"}[1m]))`,
    ],
    [
      'error rate, stable',
      buildErrorRateQuery(stable),
      `(sum(rate(${REQ}_count{${S},variant="stable",route=~"/v1/.+",status_code=~"5.."}[30s])) or vector(0)) / sum(rate(${REQ}_count{${S},variant="stable",route=~"/v1/.+"}[30s]))`,
    ],
    [
      'p99 ms, canary',
      buildP99LatencyQuery(canary),
      `histogram_quantile(0.99, sum by (le) (rate(${REQ}_bucket{${C},variant="canary",route=~"/v1/.+"}[1m]))) * 1000`,
    ],
    ['drift, canary revision', buildDriftPsiQuery(canary), `max(crema_feature_drift_psi{${C}})`],
    ['drift, stable revision', buildDriftPsiQuery(stable), `max(crema_feature_drift_psi{${S}})`],
    [
      'drift, chosen features (regex-escaped)',
      buildDriftPsiQuery({ ...canary, driftFeatures: ['hour', 'temp.c'] }),
      `max(crema_feature_drift_psi{${C},feature=~"hour|temp\\\\.c"})`,
    ],
    [
      'exposures, canary',
      buildExposureCountQuery(canary),
      `sum(increase(crema_experiment_exposures_total{${C},variant="canary"}[1m]))`,
    ],
    [
      'conversions per exposure, canary',
      buildBusinessKpiQuery(canary),
      `(sum(rate(crema_experiment_conversions_total{${C},variant="canary"}[1m])) or vector(0)) / sum(rate(crema_experiment_exposures_total{${C},variant="canary"}[1m]))`,
    ],
    [
      'scope labels, sorted, on request metrics',
      buildRequestCountQuery(scoped),
      `sum(increase(${REQ}_count{${C},variant="canary",app="drinks",cluster="eu-1",route=~"/v1/.+"}[1m]))`,
    ],
    [
      'scope labels on drift',
      buildDriftPsiQuery(scoped),
      `max(crema_feature_drift_psi{${C},app="drinks",cluster="eu-1"})`,
    ],
    [
      'quotes and backslashes in a label value are escaped',
      buildDriftPsiQuery({ ...canary, model: 'a"b\\c' }),
      'max(crema_feature_drift_psi{model="a\\"b\\\\c",namespace="shop",revision="abc123"})',
    ],
  ])('%s', (_name, got, want) => {
    expect(got).toBe(want);
  });

  it('gives every metric a value query and a sample-count query', () => {
    const q = buildAnalysisQueries(canary);
    expect(q.errorRate.samples).toBe(buildRequestCountQuery(canary));
    expect(q.p99LatencyMs.samples).toBe(buildRequestCountQuery(canary));
    expect(q.driftPsi.samples).toBe(buildRequestCountQuery(canary));
    expect(q.businessKpi.samples).toBe(buildExposureCountQuery(canary));
    expect(q.p99LatencyMs.value).toBe(buildP99LatencyQuery(canary));
  });

  it('selects only its own model, namespace and revision in every selector of every query', () => {
    // Two RecommenderModels canarying at once: another name, the same name in another
    // namespace, and the same model at another revision must each be excluded everywhere.
    for (const t of [canary, stable, { ...canary, model: 'addons', namespace: 'north' }]) {
      const queries = Object.values(buildAnalysisQueries(t)).flatMap((q) => [q.value, q.samples]);
      const selectors = queries.flatMap((q) => q.match(/\{[^}]*\}/g) ?? []);
      expect(selectors.length).toBeGreaterThanOrEqual(queries.length);
      for (const sel of selectors) {
        expect(sel, sel).toContain(`model="${t.model}"`);
        expect(sel, sel).toContain(`namespace="${t.namespace}"`);
        expect(sel, sel).toContain(`revision="${t.revision}"`);
      }
    }
  });

  it.each([
    ['window', { ...canary, window: '1 m' }, /window "1 m"/],
    ['window', { ...canary, window: '0s' }, /window "0s"/],
    ['scope label name', { ...canary, scope: { 'bad-name': 'x' } }, /label name "bad-name"/],
  ])('rejects a bad %s', (_what, t, msg) => {
    expect(() => buildErrorRateQuery(t)).toThrow(AnalysisInputError);
    expect(() => buildErrorRateQuery(t)).toThrow(msg);
  });
});
