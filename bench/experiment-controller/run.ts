/**
 * CPU of the Experiment controller per reconcile with 100 running experiments (2 variants each,
 * 200 RecommenderModels, every look with data). Runs `reconcileExperiment` in-process with the
 * real statistics and status code over an in-memory informer cache (the router objects already
 * applied, so applying them is a comparison, as in a steady cluster), a Prometheus stand-in that
 * answers the five queries of a look with samples, and an API stand-in that answers the status
 * write. So it measures the controller's own CPU (PromQL building, sums, statistics, status,
 * diffing), not the API server's or Prometheus'. Reports CPU (user+system) per reconcile.
 *
 *   npx tsx bench/experiment-controller/run.ts
 */
import { EXPERIMENT_GAUGES } from '../../contracts/experiments.js';
import { analyze } from '../../operator/src/controllers/experiment/stats.js';
import { reconcileExperiment } from '../../operator/src/controllers/experiment/reconcile.js';
import {
  buildExperimentObjects,
  buildExperimentRouterConfig,
} from '../../operator/src/controllers/experiment/desired.js';
import type { Experiment, RecommenderModel } from '../../operator/src/controllers/experiment/types.js';
import type { PrometheusClient, PromSample } from '../../operator/src/analysis/prometheus.js';
import type { InformerSet } from '../../operator/src/runtime/manager.js';
import type { KubeClient, KubeObject, ResourceDef } from '../../operator/src/runtime/kube.js';
import { OperatorMetrics } from '../../operator/src/runtime/metrics.js';

const N = Number(process.env['BENCH_EXPERIMENTS'] ?? 100);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 30);
const ns = 'bench';
const byKind = new Map<string, Map<string, KubeObject>>();
const put = (o: KubeObject) => {
  const m = byKind.get(o.kind!) ?? new Map<string, KubeObject>();
  m.set(`${o.metadata!.namespace}/${o.metadata!.name}`, o);
  byKind.set(o.kind!, m);
};
const started = new Date(Date.now() - 3_600_000).toISOString();
for (let i = 0; i < N; i++) {
  for (const m of [`m${i}-a`, `m${i}-b`])
    put({
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name: m, namespace: ns },
      spec: { model: { uri: `file:///${m}.onnx`, sha256: 'a'.repeat(64), task: 'drink-ranking' } },
    } as RecommenderModel);
  const exp: Experiment = {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'Experiment',
    metadata: {
      name: `e${i}`,
      namespace: ns,
      uid: `${String(i).padStart(8, '0')}-0000-4000-8000-000000000000`,
      generation: 1,
      resourceVersion: '1',
      creationTimestamp: started as unknown as Date,
    },
    spec: {
      variants: [
        { name: 'control', modelRef: `m${i}-a`, weight: 50 },
        { name: 'v2', modelRef: `m${i}-b`, weight: 50 },
      ],
      assignment: { salt: `s${i}` },
      primaryMetric: 'conversion',
      minSamplesPerVariant: 1000,
      maxDuration: '14d',
      guardrails: { p99LatencyMs: 200, errorRate: 0.02 },
      decision: { alpha: 0.05, autoPromote: false },
    },
    status: { phase: 'Running', startedAt: started },
  };
  put(exp);
  for (const o of buildExperimentObjects(
    exp,
    byKind.get('RecommenderModel')!.get(`${ns}/m${i}-a`) as RecommenderModel,
    buildExperimentRouterConfig(exp, true),
  ))
    put(o);
}
const informers = {
  for: (r: ResourceDef) => ({
    get: (namespace: string, name: string) => byKind.get(r.kind)?.get(`${namespace}/${name}`),
    list: () => [...(byKind.get(r.kind)?.values() ?? [])],
  }),
} as unknown as InformerSet;

let look = 0;
const sample = (labels: Record<string, string>, value: number): PromSample => ({ labels, value });
const prometheus: PrometheusClient = {
  baseUrl: 'stand-in',
  async query(q) {
    // Counts grow a little every look, so every status differs (a write per reconcile).
    const n = 20_000 + look * 10;
    if (q.includes(EXPERIMENT_GAUGES.users.name))
      return ['control', 'v2'].map((variant) => sample({ variant }, n));
    if (q.includes(EXPERIMENT_GAUGES.sums.name)) {
      const out: PromSample[] = [];
      for (const variant of ['control', 'v2'])
        for (const metric of ['conversion', 'orderValue', 'attachRate']) {
          const y = n * 0.25;
          for (const [stat, v] of Object.entries({
            sumY: y,
            sumYY: y,
            sumX: n * 2,
            sumXX: n * 6,
            sumXY: y * 2.2,
            nWithoutCovariate: n / 3,
          }))
            out.push(sample({ variant, metric, stat }, v));
        }
      return out;
    }
    const model = /model=~"([^"]+)"/.exec(q)![1]!.split('|');
    return model.map((m) =>
      sample({ model: m }, q.includes('histogram_quantile') ? 40 : q.includes('5..') ? 1 : 1000),
    );
  },
};
let writes = 0;
const client = {
  requestCounts: {},
  async request(_method: string, _path: string, opts?: { body?: { status?: unknown } }) {
    writes++;
    return { metadata: { resourceVersion: String(writes) }, ...(opts?.body ?? {}) };
  },
} as unknown as KubeClient;
const deps = {
  client,
  events: { record: async () => {} },
  metrics: new OperatorMetrics(),
  now: () => new Date(),
  log: () => {},
  analyze,
  prometheus,
};

async function round(): Promise<void> {
  look++;
  for (let i = 0; i < N; i++) {
    const r = await reconcileExperiment(deps, informers, `${ns}/e${i}`);
    if (r.kind === 'error') throw r.error;
  }
}
for (let w = 0; w < 3; w++) await round(); // warm-up (JIT)
const t0 = process.cpuUsage();
const w0 = performance.now();
for (let r = 0; r < ROUNDS; r++) await round();
const cpu = process.cpuUsage(t0);
const wall = performance.now() - w0;
const per = (cpu.user + cpu.system) / (ROUNDS * N);
console.log(
  JSON.stringify({
    experiments: N,
    reconciles: ROUNDS * N,
    cpuMicrosPerReconcile: Math.round(per),
    cpuMsPerLookOfAll: Math.round((per * N) / 100) / 10,
    wallMs: Math.round(wall),
    statusWrites: writes,
  }),
);
