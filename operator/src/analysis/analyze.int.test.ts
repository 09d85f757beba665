/**
 * Canary analysis against a real Prometheus scraping fake serving /metrics endpoints (one per
 * variant and scenario). Each scenario is the same RecommenderModel name and revisions in its own
 * namespace, all canarying at once: only the serving metrics' `namespace` label tells them apart,
 * so a scenario that passes while its neighbour fails shows the analysis pools nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrometheus, type PrometheusServer } from '../../../hack/testenv/observability.js';
import type { RecommenderModelSpecRolloutAnalysis } from '../api/v1alpha1/recommendermodel.js';
import { analyzeCanary } from './analyze.js';
import {
  startFakeServingMetrics,
  type FakeServing,
  type FakeServingState,
} from '../../test/fake-serving-metrics.js';
import { createPrometheusClient, PrometheusQueryError, type PrometheusClient } from './prometheus.js';
import type { AnalysisResult } from './types.js';

const STABLE_SHA = 'a'.repeat(64);
const CANARY_SHA = 'c'.repeat(64);
const WINDOW = '10s';
const analysis: RecommenderModelSpecRolloutAnalysis = {
  minSamples: 100,
  metrics: {
    errorRate: { max: 0.05 },
    p99LatencyMs: { max: 100 },
    driftPsi: { max: 0.2 },
    businessKpi: { minRelative: 0.9 },
  },
};

const scenarios: Record<string, Partial<FakeServingState>> = {
  healthy: {},
  // 30% of canary requests fail.
  errors: { errorShare: 0.3 },
  // ~2 API requests/s is ~20 in the window, under minSamples; the 50 scrapes/s of /metrics it
  // also records must not count as traffic.
  quiet: { rps: 2, metricsRps: 50, exposuresPerSecond: 2, conversionsPerSecond: 0.5 },
};

let prom: PrometheusServer;
let client: PrometheusClient;
const fakes: FakeServing[] = [];

beforeAll(async () => {
  const targets = [];
  for (const [scenario, canaryState] of Object.entries(scenarios)) {
    const id = { model: 'drinks', namespace: scenario };
    const stable = await startFakeServingMetrics({ ...id, variant: 'stable', revision: STABLE_SHA });
    const canary = await startFakeServingMetrics({
      ...id,
      variant: 'canary',
      revision: CANARY_SHA,
      state: canaryState,
    });
    fakes.push(stable, canary);
    // A target label as a Prometheus scraping several clusters would add; the analysis scopes on it.
    targets.push(
      { target: stable.target, labels: { cluster: 'test' } },
      { target: canary.target, labels: { cluster: 'test' } },
    );
  }
  prom = await startPrometheus({ scrapeTargets: targets });
  client = createPrometheusClient(prom.url, { timeoutMs: 5000 });
});

afterAll(async () => {
  await prom?.stop();
  await Promise.all(fakes.map((f) => f.close()));
});

const analyze = (scenario: string) =>
  analyzeCanary(client, {
    model: 'drinks',
    namespace: scenario,
    stableSha: STABLE_SHA,
    canarySha: CANARY_SHA,
    window: WINDOW,
    analysis,
    scope: { cluster: 'test' },
  });

/** Analyses until the healthy scenario has enough samples (about one window after start). */
async function analyzeOnceWarm(): Promise<Record<string, AnalysisResult>> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const healthy = await analyze('healthy');
    if (healthy.verdict !== 'Inconclusive' || Date.now() > deadline) {
      return { healthy, errors: await analyze('errors'), quiet: await analyze('quiet') };
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

describe('analyzeCanary against a real Prometheus', () => {
  let results: Record<string, AnalysisResult>;
  beforeAll(async () => {
    results = await analyzeOnceWarm();
  }, 45_000);

  it('passes a healthy canary on every metric, with real numbers, beside a failing one', () => {
    const r = results['healthy']!;
    expect(r.verdict, r.message).toBe('Pass');
    const by = Object.fromEntries(r.metrics.map((m) => [m.metric, m]));
    expect(by['errorRate']).toMatchObject({ canary: 0, stable: 0 });
    // 20 ms requests fall in the (15, 25] ms bucket; histogram_quantile interpolates inside it.
    expect(by['p99LatencyMs']!.canary).toBeGreaterThan(15);
    expect(by['p99LatencyMs']!.canary).toBeLessThanOrEqual(25);
    expect(by['driftPsi']!.canary).toBeCloseTo(0.03, 5);
    expect(by['businessKpi']!.canary).toBeCloseTo(0.25, 1);
    expect(by['errorRate']!.samples.canary).toBeGreaterThanOrEqual(100);
    // Its own ~50 req/s over 10 s, not the ~100 req/s of all canaries of this model name.
    expect(by['errorRate']!.samples.canary).toBeLessThan(700);
  });

  it('fails a canary with a high 5xx share and says so', () => {
    const r = results['errors']!;
    expect(r.verdict).toBe('Fail');
    const err = r.metrics.find((m) => m.metric === 'errorRate')!;
    expect(err.verdict).toBe('Fail');
    expect(err.canary).toBeCloseTo(0.3, 1);
    expect(r.message).toMatch(/^errorRate: canary 3\d\.\d\d% > max 5\.00%/);
  });

  it('is inconclusive with too little canary traffic, and names the shortfall', () => {
    const r = results['quiet']!;
    expect(r.verdict).toBe('Inconclusive');
    for (const m of r.metrics) expect(m.samples.canary, m.metric).toBeLessThan(100);
    expect(r.message).toMatch(/errorRate: waiting for 100 canary requests \(canary has \d+\)/);
  });

  it('names the query when Prometheus rejects it', async () => {
    const err = await client
      .query('sum(rate(crema_http_request_duration_seconds_count[1m])')
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrometheusQueryError);
    expect((err as PrometheusQueryError).kind).toBe('api');
    expect((err as Error).message).toContain('"sum(rate(crema_http_request_duration_seconds_count[1m])"');
    expect((err as Error).message).toMatch(/bad_data/);
  });

  it('says which Prometheus it could not reach', async () => {
    const gone = createPrometheusClient('http://127.0.0.1:1', { timeoutMs: 2000 });
    await expect(gone.query('up')).rejects.toThrow(/"up" failed \(unreachable\): http:\/\/127\.0\.0\.1:1/);
  });
});
