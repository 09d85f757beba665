/**
 * A look never takes counts back: when Prometheus has no series of an experiment (every serving
 * pod replaced, a scrape gap, Redis unreadable at scrape) or lower numbers than status records,
 * the reconcile keeps status's counts and does not count a look. The reconcile runs against
 * stand-ins of our own interfaces (the API client, the informers, the Prometheus client).
 */
import { describe, expect, it } from 'vitest';
import type { PrometheusClient, PromSample } from '../../analysis/prometheus.js';
import type { KubeClient, KubeObject, ResourceDef } from '../../runtime/kube.js';
import type { InformerSet } from '../../runtime/manager.js';
import { OperatorMetrics } from '../../runtime/metrics.js';
import { buildExperimentObjects, buildExperimentRouterConfig } from './desired.js';
import { checkCountsFresh, fetchExperimentData, toVariantSums } from './gather.js';
import { buildSumsQuery, buildUsersQuery } from './queries.js';
import { reconcileExperiment } from './reconcile.js';
import { analyze } from './stats.js';
import type { Experiment, ExperimentStatus, RecommenderModel } from './types.js';

const ns = 'shop';
const started = '2026-01-01T00:00:00Z';
const recorded: ExperimentStatus['variants'] = [
  { name: 'control', modelRef: 'drinks', exposures: 1200, conversions: 300 },
  { name: 'v2', modelRef: 'drinks-v2', exposures: 1180, conversions: 320 },
];
const EXP: Experiment = {
  apiVersion: 'crema.dev/v1alpha1',
  kind: 'Experiment',
  metadata: {
    name: 'ab',
    namespace: ns,
    uid: '11111111-2222-4333-8444-555555555555',
    generation: 1,
    resourceVersion: '7',
  },
  spec: {
    variants: [
      { name: 'control', modelRef: 'drinks', weight: 50 },
      { name: 'v2', modelRef: 'drinks-v2', weight: 50 },
    ],
    assignment: { salt: 's' },
    primaryMetric: 'conversion',
    minSamplesPerVariant: 1000,
    maxDuration: '14d',
    guardrails: { p99LatencyMs: 200 },
    decision: { alpha: 0.05, autoPromote: false },
  },
  status: { phase: 'Running', startedAt: started, looks: 4, variants: recorded },
};

const sample = (labels: Record<string, string>, value: number): PromSample => ({ labels, value });

/** Prometheus answering `users` per variant for the users query, sums in proportion. */
function prometheus(users: Record<string, number> | undefined): PrometheusClient {
  return {
    baseUrl: 'stand-in',
    async query(q) {
      if (q.includes('crema_experiment_users'))
        return Object.entries(users ?? {}).map(([variant, n]) => sample({ variant }, n));
      if (q.includes('crema_experiment_sums'))
        return Object.entries(users ?? {}).flatMap(([variant, n]) => [
          sample({ variant, metric: 'conversion', stat: 'sumY' }, Math.round(n * 0.27)),
          sample({ variant, metric: 'conversion', stat: 'sumYY' }, Math.round(n * 0.27)),
          sample({ variant, metric: 'conversion', stat: 'nWithoutCovariate' }, n),
        ]);
      return [];
    },
  };
}

/** Runs one reconcile of EXP and answers the status it wrote (undefined: none written). */
async function reconcileOnce(
  prom: PrometheusClient,
  exp: Experiment = EXP,
  result?: (r: { kind: string; ms?: number }) => void,
): Promise<ExperimentStatus | undefined> {
  const objects = new Map<string, KubeObject[]>();
  const put = (o: KubeObject) => objects.set(o.kind!, [...(objects.get(o.kind!) ?? []), o]);
  for (const name of ['drinks', 'drinks-v2'])
    put({
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name, namespace: ns },
      spec: { model: { uri: `file:///${name}.onnx`, sha256: 'a'.repeat(64), task: 'drink-ranking' } },
    } as RecommenderModel);
  put(exp);
  const control = objects.get('RecommenderModel')![0] as RecommenderModel;
  for (const o of buildExperimentObjects(exp, control, buildExperimentRouterConfig(exp, true))) put(o);
  const informers = {
    for: (r: ResourceDef) => ({
      get: (namespace: string, name: string) =>
        objects.get(r.kind)?.find((o) => o.metadata?.namespace === namespace && o.metadata?.name === name),
      list: () => objects.get(r.kind) ?? [],
    }),
  } as unknown as InformerSet;
  let written: ExperimentStatus | undefined;
  const client = {
    async request(_m: string, path: string, opts?: { body?: { status?: ExperimentStatus } }) {
      if (path.endsWith('/status')) written = opts?.body?.status;
      return { metadata: { resourceVersion: '8' }, ...(opts?.body ?? {}) };
    },
  } as unknown as KubeClient;
  const r = await reconcileExperiment(
    {
      client,
      events: { record: async () => {} },
      metrics: new OperatorMetrics(),
      now: () => new Date('2026-01-02T00:00:00Z'),
      log: () => {},
      analyze,
      prometheus: prom,
    },
    informers,
    `${ns}/ab`,
  );
  // Running: back at the next look; ended: done.
  expect(r.kind).toBe(
    written?.phase === 'Concluded' || written?.phase === 'Stopped' ? 'done' : 'requeueAfter',
  );
  result?.(r as { kind: string; ms?: number });
  return written;
}

describe('a look never takes counts back', () => {
  it('the queries take the max across pods (each exports the same Redis totals), then sum models', () => {
    const t = {
      namespace: 'ns',
      name: 'ab',
      run: '111111112222',
      models: ['drinks', 'drinks-v2'],
      window: '5m',
    };
    expect(buildUsersQuery(t)).toBe(
      'sum by (variant) (max by (variant, model) (crema_experiment_users{experiment="ab",namespace="ns",run="111111112222"}))',
    );
    expect(buildSumsQuery(t)).toBe(
      'sum by (variant, metric, stat) (max by (variant, metric, stat, model) (crema_experiment_sums{experiment="ab",namespace="ns",run="111111112222"}))',
    );
  });

  it('no users series is no sums at all, not zeros', async () => {
    const t = { namespace: ns, name: 'ab', run: '111111112222', models: ['drinks'], window: '5m' };
    const none = await fetchExperimentData(prometheus(undefined), t, ['control', 'v2']);
    expect(none.sums).toBeUndefined();
    expect(checkCountsFresh(none, recorded)).toMatch(/no series/);
    const some = await fetchExperimentData(prometheus({ control: 1300, v2: 1250 }), t, ['control', 'v2']);
    expect(some.sums?.get('v2')?.conversion.n).toBe(1250);
    expect(checkCountsFresh(some, recorded)).toBeNull();
  });

  it('counts below those recorded are a gap, not the truth', () => {
    const lower = {
      sums: toVariantSums(['control', 'v2'], [sample({ variant: 'control' }, 1300)], []),
      health: new Map(),
    };
    expect(checkCountsFresh(lower, recorded)).toMatch(/variant control: 0 conversions read, below the 300/);
    const fewer = {
      sums: toVariantSums(
        ['control', 'v2'],
        [sample({ variant: 'control' }, 600), sample({ variant: 'v2' }, 1180)],
        [],
      ),
      health: new Map(),
    };
    expect(checkCountsFresh(fewer, recorded)).toMatch(/variant control: 600 exposures read, below the 1200/);
    // A new experiment: nothing recorded, zeros are fine.
    expect(checkCountsFresh(fewer, undefined)).toBeNull();
  });

  it('the reconcile keeps status counts and the look number when the series are absent or lower', async () => {
    for (const users of [undefined, { control: 10, v2: 12 }]) {
      const s = await reconcileOnce(prometheus(users));
      expect(s?.variants?.map((v) => [v.name, v.exposures, v.conversions])).toEqual([
        ['control', 1200, 300],
        ['v2', 1180, 320],
      ]);
      expect(s?.looks).toBe(4);
      // The guardrails are still judged (no request histogram here: NoData).
      expect(s?.variants?.[1]?.guardrails?.[0]).toMatchObject({ name: 'p99LatencyMs', verdict: 'NoData' });
      expect(s?.conditions?.find((c) => c.type === 'DataAvailable')).toMatchObject({
        status: 'False',
        reason: 'NoNewData',
      });
    }
    // Higher counts are a look.
    const s = await reconcileOnce(prometheus({ control: 1300, v2: 1250 }));
    expect(s?.variants?.map((v) => v.exposures)).toEqual([1300, 1250]);
    expect(s?.looks).toBe(5);
  });
});

describe('one read of the counts per look interval', () => {
  it('a reconcile woken before the next look is due reads and writes nothing and comes back when it is', async () => {
    let queries = 0;
    const counting: PrometheusClient = {
      baseUrl: 'stand-in',
      query: async (q) => (queries++, prometheus({ control: 1300, v2: 1250 }).query(q)),
    };
    // Read 10 s ago (now is 2026-01-02T00:00:00Z; the interval 60 s).
    const recent = { ...EXP, status: { ...EXP.status!, lastLookAt: '2026-01-01T23:59:50.000Z' } };
    let next: { kind: string; ms?: number } | undefined;
    const first = await reconcileOnce(counting, recent, (r) => (next = r));
    expect(queries).toBe(0);
    expect(next).toEqual({ kind: 'requeueAfter', ms: 50_000 });
    // Counts, look number and lastLookAt as they were (the stand-in's status lacked conditions).
    expect(first?.variants?.map((v) => v.exposures)).toEqual([1200, 1180]);
    expect(first?.looks).toBe(4);
    expect(first?.lastLookAt).toBe('2026-01-01T23:59:50.000Z');
    // Woken again by that very write: nothing read, nothing written (no loop).
    const again = await reconcileOnce(counting, { ...recent, status: first! });
    expect(queries).toBe(0);
    expect(again).toBeUndefined();
    // Due: it reads, and lastLookAt moves even when there is nothing new.
    const due = { ...EXP, status: { ...EXP.status!, lastLookAt: '2026-01-01T23:59:00.000Z' } };
    const s = await reconcileOnce(counting, due, (r) => (next = r));
    expect(queries).toBeGreaterThan(0);
    expect(s?.lastLookAt).toBe('2026-01-02T00:00:00.000Z');
    expect(next).toEqual({ kind: 'requeueAfter', ms: 60_000 });
    const stale = await reconcileOnce(prometheus(undefined), due);
    expect(stale?.lastLookAt).toBe('2026-01-02T00:00:00.000Z');
    expect(stale?.looks).toBe(4);
  });
});

describe('what does not wait for the next look', () => {
  const counting = () => {
    const state = { queries: 0 };
    const prom: PrometheusClient = {
      baseUrl: 'stand-in',
      query: async (q) => (state.queries++, prometheus({ control: 1300, v2: 1250 }).query(q)),
    };
    return { state, prom };
  };
  const recent = (extra: Partial<Experiment>) => ({
    ...EXP,
    ...extra,
    status: { ...EXP.status!, lastLookAt: '2026-01-01T23:59:50.000Z' },
  });

  it('a conclude command decides on the latest counts, read now', async () => {
    const { state, prom } = counting();
    const exp = recent({
      metadata: { ...EXP.metadata, annotations: { 'crema.dev/conclude': 'true' } },
    });
    const s = await reconcileOnce(prom, exp);
    expect(state.queries).toBeGreaterThan(0);
    expect(s?.variants?.map((v) => v.exposures)).toEqual([1300, 1250]);
    expect(s?.phase).toBe('Concluded');
  });

  it('maxDuration reached: the ending look reads the counts too', async () => {
    const { state, prom } = counting();
    const exp = recent({ spec: { ...EXP.spec, maxDuration: '1d' } }); // started 24 h before now
    const s = await reconcileOnce(prom, exp);
    expect(state.queries).toBeGreaterThan(0);
    expect(s?.phase).toBe('Concluded');
  });

  it('a lastLookAt ahead of this clock (another leader) waits at most one interval', async () => {
    const { state, prom } = counting();
    const ahead = { ...EXP, status: { ...EXP.status!, lastLookAt: '2026-01-02T01:00:00.000Z' } };
    let next: { kind: string; ms?: number } | undefined;
    await reconcileOnce(prom, ahead, (r) => (next = r));
    expect(state.queries).toBe(0);
    expect(next).toEqual({ kind: 'requeueAfter', ms: 60_000 });
  });
});
