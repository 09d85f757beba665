/**
 * Progressive delivery end to end on a real node (root): the operator in-process against the
 * cluster, serving, canary and router pods from Crema's own images started by the kubelet from
 * what the operator rendered, traffic from the host to the model's Service (kube-proxy; the
 * Service points at the router pods while traffic is split), canary analysis against a real
 * Prometheus that discovers the pods through the API server, and drift alerts from a real
 * Alertmanager to the operator's webhook (operator/test/e2e/node-env.ts).
 *
 * Models: the real trained ranker (manifests/models/artifacts) as revision 1, byte-distinct
 * copies of it as canaries (./models.ts), fetched by the pods from the test's artifact store.
 * Users follow the trained model's feature baseline.
 *
 * Which config routed each request comes from the router's `x-crema-router-config` header; the
 * test records every router.json the operator wrote, so shares and assignments are computed per
 * weight setting.
 *
 * Scenarios (one model at a time, each removed before the next):
 * - D: too little traffic: analysis stays Inconclusive, the rollout waits and says why;
 * - A: a healthy canary promoted 20 → 50 → 100: per step the canary's share of answers is within
 *   ±3 points of the weight, every request went to the variant its user hashes to, no request
 *   failed, and after the promotion revision 2 answers as stable;
 * - B: a canary whose metadata carries a training baseline live traffic does not follow reports
 *   high `crema_feature_drift_psi`; the operator's drift rule fires in Prometheus, Alertmanager
 *   posts to the webhook and the canary is rolled back;
 * - C: an SRE's fault on the canary Deployment (`CREMA_MAX_IN_FLIGHT=1`, applied with a field
 *   manager of its own, which the operator's apply leaves alone) makes its pods answer real 503s;
 *   the error-rate analysis fails and the canary is rolled back.
 *
 * Traffic: B runs open-loop at a fixed rate (a few hundred requests a second); A and C run a
 * closed loop (A needs volume for quiet drift statistics, C needs overlapping requests for its
 * fault to bite). Serving sheds only on sustained overload, so a busy machine no longer fails them.
 *
 * Each scenario prints one `[e2e] {...}` JSON line with its measurements.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVING_METRICS } from '../../../contracts/metrics.js';
import { assignVariant } from '../../../contracts/variant-hash.js';
import { createPrometheusClient } from '../../src/analysis/prometheus.js';
import type { RecommenderModel } from '../../src/controllers/recommendermodel/types.js';
import type { RouterConfig } from '../../../contracts/router-config.js';
import { KubeApiError, RESOURCES, resourcePath, type KubeObject } from '../../src/runtime/kube.js';
import { eventually } from '../helpers.js';
import {
  cond,
  createModel,
  deleteModel,
  getModel,
  serviceUrl,
  setModel,
  startNodeE2e,
  type NodeE2e,
} from './node-env.js';
import { failed, failureSummary, startTraffic, type Sample, type Traffic } from './traffic.js';

const DRIFT_FEATURES = ['recency_days', 'frequency_30d', 'monetary_30d'];
let e: NodeE2e;
const traffics: Traffic[] = [];

/** Every router.json written for a model, by the id the router reports for it. */
interface Written {
  readonly id: string;
  readonly doc: RouterConfig;
  readonly at: number;
}
const configs = new Map<string, Written[]>();
let watching = true;
let watcher: Promise<void> = Promise.resolve();

const routerId = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 12);
const canaryWeight = (doc: RouterConfig) => doc.variants.find((v) => v.name === 'canary')?.weight ?? 0;

async function routerConfigText(name: string): Promise<string | undefined> {
  try {
    const cm = await e.client.request<KubeObject & { data?: Record<string, string> }>(
      'GET',
      resourcePath(RESOURCES.configMap, e.ns, `${name}-router`),
    );
    return cm.data?.['router.json'];
  } catch (err) {
    if (err instanceof KubeApiError && err.notFound) return undefined;
    throw err;
  }
}

/** Records every version of each model's router.json (polled every 50 ms). */
function watchRouterConfigs(names: () => string[]): void {
  watcher = (async () => {
    while (watching) {
      for (const name of names()) {
        const text = await routerConfigText(name).catch(() => undefined);
        if (!text) continue;
        const list = configs.get(name) ?? [];
        const id = routerId(text);
        if (list[list.length - 1]?.id !== id)
          list.push({ id, doc: JSON.parse(text) as RouterConfig, at: Date.now() });
        configs.set(name, list);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
}

const live = new Set<string>();

/**
 * Status at `weight` and the router config too: status records a step first and the config
 * follows within moments (reading the config in between would see the previous weight).
 */
async function canaryAt(name: string, weight: number, timeoutMs = 120_000): Promise<RecommenderModel> {
  return eventually(
    async () => {
      const m = await getModel(e, name);
      if (m.status?.canary?.weight !== weight) return undefined;
      const text = await routerConfigText(name);
      return text && canaryWeight(JSON.parse(text) as RouterConfig) === weight ? m : undefined;
    },
    timeoutMs,
    `${name} canary at ${weight}%`,
  );
}

async function traffic(
  name: string,
  opts: { concurrency?: number; ratePerSecond?: number } = {},
): Promise<Traffic> {
  const t = startTraffic({ url: await serviceUrl(e, name), users: e.users, maxDurationMs: 240_000, ...opts });
  traffics.push(t);
  return t;
}

/** Samples routed by the config with canary weight `w` (the last one written with that weight). */
function routedAt(
  name: string,
  samples: readonly Sample[],
  w: number,
): { config?: Written; samples: Sample[] } {
  const config = [...(configs.get(name) ?? [])].reverse().find((c) => canaryWeight(c.doc) === w);
  return {
    ...(config ? { config } : {}),
    samples: config ? samples.filter((s) => s.routerConfig === config.id) : [],
  };
}

function share(samples: readonly Sample[], variant: string): number {
  return samples.length ? (100 * samples.filter((s) => s.variant === variant).length) / samples.length : 0;
}

/** Polls the ConfigMap until the canary weight is 0; returns when it saw it. */
async function weightZeroAt(name: string, timeoutMs: number): Promise<number> {
  return eventually(
    async () => {
      const text = await routerConfigText(name);
      return text && canaryWeight(JSON.parse(text) as RouterConfig) === 0 ? Date.now() : undefined;
    },
    timeoutMs,
    `${name}: canary weight 0`,
  );
}

const rolledBackModel = async (name: string) => {
  let last: RecommenderModel | undefined;
  try {
    return await eventually(
      async () => {
        last = await getModel(e, name);
        return cond(last, 'RolledBack')?.status === 'True' ? last : undefined;
      },
      // C waits here for two failed analyses of pods that are still rolling in with the fault.
      120_000,
      `${name} RolledBack`,
    );
  } catch (err) {
    // Say where the rollout stood: the conditions' messages name what the analysis saw.
    const why = (last?.status?.conditions ?? []).map(
      (c) => `${c.type}=${c.status} ${c.reason}: ${c.message}`,
    );
    throw new Error(`${(err as Error).message}; conditions: ${why.join(' | ')}`);
  }
};

const deploymentGone = (name: string) =>
  eventually(
    () =>
      e.client.request('GET', resourcePath(RESOURCES.deployment, e.ns, name)).then(
        () => false,
        (err: unknown) => (err instanceof KubeApiError && err.notFound ? true : Promise.reject(err)),
      ),
    60_000,
    `${name} removed`,
  );

async function cleanup(name: string): Promise<void> {
  live.delete(name);
  await deleteModel(e, name);
}

beforeAll(async () => {
  e = await startNodeE2e({ name: 'e2e-pd', observability: true });
  watchRouterConfigs(() => [...live]);
}, 300_000);

afterAll(async () => {
  watching = false;
  await watcher;
  await Promise.all(traffics.map((t) => t.stop()));
  await e?.stop();
}, 120_000);

describe('progressive delivery end to end on a real node', () => {
  it('D: with too little traffic the rollout waits and says why', { timeout: 240_000 }, async () => {
    const name = 'quiet';
    live.add(name);
    const v1 = await e.revision({ file: 'quiet-r1' });
    const v2 = await e.revision({ file: 'quiet-r2', doc: 'quiet revision 2' });
    try {
      await createModel(e, name, v1, {
        rollout: {
          steps: [
            { weight: 20, pause: '1s' },
            { weight: 100, pause: '1s', analysis: false },
          ],
          analysis: {
            interval: '3s',
            minSamples: 100,
            failureLimit: 0,
            metrics: { errorRate: { max: 0.05 } },
          },
        },
      });
      const t = await traffic(name, { ratePerSecond: 4 });
      await setModel(e, name, v2);
      await canaryAt(name, 20);
      const waiting = await eventually(
        async () => {
          const m = await getModel(e, name);
          return (m.status?.canary?.analysis ?? []).filter((a) => a.step === 0).length >= 3 ? m : undefined;
        },
        60_000,
        'three analyses of step 1',
      );
      await t.stop();
      const records = waiting.status!.canary!.analysis!;
      const progressing = cond(waiting, 'Progressing');
      console.log(
        `[e2e] ${JSON.stringify({
          scenario: 'D',
          requests: t.samples.length,
          ratePerSecond: 4,
          analyses: records.length,
          progressing: progressing?.message,
          failedRequests: t.samples.filter(failed).length,
          failures: t.samples.filter(failed).slice(0, 5),
        })}`,
      );
      expect(records.every((a) => a.verdict === 'Inconclusive')).toBe(true);
      expect(records[0]!.message).toMatch(/errorRate: waiting for 100 canary requests \(canary has \d+/);
      expect(waiting.status?.canary).toMatchObject({ step: 0, weight: 20, failures: 0, modelSha: v2.sha256 });
      expect(waiting.status?.stable).toMatchObject({ revision: 1, modelSha: v1.sha256 });
      expect(progressing?.message).toMatch(
        /analysis inconclusive: errorRate: waiting for 100 canary requests/,
      );
      expect(cond(waiting, 'RolledBack')?.status).not.toBe('True');
      expect(t.samples.length).toBeGreaterThan(10);
      expect(t.samples.filter(failed)).toHaveLength(0);
    } finally {
      await cleanup(name);
    }
  });

  it(
    'A: a healthy canary is promoted 20 → 50 → 100 and traffic follows the weights',
    { timeout: 300_000 },
    async () => {
      const name = 'drinks';
      live.add(name);
      const v1 = await e.revision({ file: 'drinks-r1' });
      const v2 = await e.revision({ file: 'drinks-r2', doc: 'drinks revision 2' });
      try {
        await createModel(e, name, v1, {
          rollout: {
            steps: [
              { weight: 20, pause: '6s' },
              { weight: 50, pause: '6s' },
              { weight: 100, pause: '3s' },
            ],
            analysis: {
              interval: '5s',
              minSamples: 100,
              failureLimit: 0,
              metrics: { errorRate: { max: 0.01 }, p99LatencyMs: { max: 1000 }, driftPsi: { max: 0.2 } },
            },
          },
          drift: { features: DRIFT_FEATURES, psiThreshold: 0.2, window: '10s' },
        });
        // Closed loop, as many requests as the machine serves: the drift rule and analysis
        // compare short windows (10 s, 5 s) of the canary's share of traffic, and at a few hundred
        // requests a second the PSI of a healthy canary is noisy enough to cross 0.2 (seen:
        // 0.209 on frequency_30d at 80 canary requests a second; issue 12 covers drift power).
        const t = await traffic(name, { concurrency: 6 });
        const started = Date.now();
        await setModel(e, name, v2);
        let seen: RecommenderModel | undefined;
        const promoted = await eventually(
          async () => {
            const m = (seen = await getModel(e, name));
            return !m.status?.canary && m.status?.stable?.revision === 2 ? m : undefined;
          },
          240_000,
          'promoted',
        ).catch((err: unknown) => {
          // Say where the rollout stood and what the analyses said.
          const s = seen?.status;
          const why = (s?.conditions ?? []).map((c) => `${c.type}=${c.status} ${c.reason}: ${c.message}`);
          throw new Error(
            `${(err as Error).message}; conditions: ${why.join(' | ')}; analyses: ${JSON.stringify(s?.canary?.analysis?.slice(0, 5))}`,
          );
        });
        await deploymentGone(`${name}-canary`);
        await deploymentGone(`${name}-router`);
        // Stable runs revision 2 on every pod and the Service points at them again.
        await eventually(
          async () => {
            const last = t.samples.slice(-30);
            return last.length === 30 && last.every((s) => !s.routerConfig && s.revision === v2.sha256);
          },
          90_000,
          'revision 2 answering as stable, directly',
        );
        await t.stop();

        expect(promoted.status?.stable).toMatchObject({ revision: 2, modelSha: v2.sha256, uri: v2.uri });
        expect(promoted.status?.history?.[0]).toMatchObject({
          revision: 1,
          modelSha: v1.sha256,
          reason: expect.stringMatching(/Replaced by revision 2 after a successful canary/),
        });
        expect(cond(promoted, 'RolledBack')?.status).not.toBe('True');

        const samples = t.samples.filter((s) => s.start >= started);
        const steps = [20, 50, 100].map((w) => {
          const { config, samples: measured } = routedAt(name, samples, w);
          expect(config, `a router config at ${w}%`).toBeDefined();
          const misrouted = measured.filter(
            (s) => s.variant !== assignVariant(s.userId, config!.doc.salt, config!.doc.variants),
          );
          const revisions = new Set(
            measured.filter((s) => !s.fallback).map((s) => `${s.variant}:${s.revision}`),
          );
          return {
            weight: w,
            requests: measured.length,
            canaryShare: share(measured, 'canary'),
            misrouted,
            revisions,
          };
        });
        // Once every router pod sends all traffic to the canary, revision 1 never answers again:
        // the promotion keeps the canary pods in front until every stable pod runs revision 2.
        const written = configs.get(name) ?? [];
        const firstFull = written.findIndex((c) => canaryWeight(c.doc) === 100);
        // The partial steps' configs (the weight-0 config recurs once the canary is gone).
        const before = new Set(
          written
            .slice(0, firstFull)
            .filter((c) => canaryWeight(c.doc) > 0)
            .map((c) => c.id),
        );
        const cutoff = Math.max(
          ...samples.filter((s) => s.routerConfig && before.has(s.routerConfig)).map((s) => s.start),
        );
        const afterFull = samples.filter((s) => s.start > cutoff && !s.fallback && !failed(s));
        const oldAnswers = afterFull.filter((s) => s.revision !== v2.sha256);
        const failedTotal = samples.filter(failed);
        console.log(
          `[e2e] ${JSON.stringify({
            scenario: 'A',
            afterFullCanary: afterFull.length,
            revision1AnswersAfterFullCanary: oldAnswers.length,
            revision1Examples: oldAnswers
              .slice(0, 3)
              .map((s) => ({ ms: s.start - cutoff, variant: s.variant, routerConfig: s.routerConfig })),
            requests: samples.length,
            fallbackAnswers: samples.filter((s) => s.fallback).length,
            steps: steps.map((s) => ({
              weight: s.weight,
              requests: s.requests,
              canarySharePct: Number(s.canaryShare.toFixed(2)),
              misrouted: s.misrouted.length,
              misroutedExamples: s.misrouted.slice(0, 3),
            })),
            failedRequests: failedTotal.length,
            errors: failureSummary(failedTotal),
          })}`,
        );
        for (const s of steps) {
          expect(s.misrouted).toHaveLength(0);
          for (const r of s.revisions) expect([`stable:${v1.sha256}`, `canary:${v2.sha256}`]).toContain(r);
          if (s.weight < 100) {
            expect(s.requests, `requests measured at ${s.weight}%`).toBeGreaterThanOrEqual(1000);
            expect(Math.abs(s.canaryShare - s.weight), `canary share at ${s.weight}%`).toBeLessThanOrEqual(3);
          } else {
            expect(s.requests).toBeGreaterThan(100);
            expect(s.canaryShare).toBe(100);
          }
        }
        expect(afterFull.length).toBeGreaterThan(100);
        expect(oldAnswers.slice(0, 5), 'revision 1 answered after all traffic went to revision 2').toEqual(
          [],
        );
        expect(failedTotal).toHaveLength(0);
      } finally {
        await cleanup(name);
      }
    },
  );

  it(
    'B: a canary with drifted features is rolled back by the drift alert',
    { timeout: 240_000 },
    async () => {
      const name = 'drift';
      live.add(name);
      const v1 = await e.revision({ file: 'drift-r1' });
      // Trained on users who had nearly all ordered within the first baseline bin of recency_days.
      const v2 = await e.revision({
        file: 'drift-r2',
        doc: 'drift revision 2',
        mutate: (meta) => {
          const b = meta.baseline.features['recency_days']!;
          const rest = 0.1 / (b.probs.length - 1);
          const shifted = { edges: b.edges, probs: b.probs.map((_, i) => (i ? rest : 0.9)) };
          // In every context too: serving compares with the contexts' baselines (ADR 0010).
          const c = meta.baseline.contexts;
          const contexts = c && {
            ...c,
            counts: { ...c.counts, recency_days: c.requests.map((n) => shifted.probs.map((p) => p * n)) },
          };
          return {
            ...meta,
            baseline: {
              ...meta.baseline,
              features: { ...meta.baseline.features, recency_days: shifted },
              ...(contexts ? { contexts } : {}),
            },
          };
        },
      });
      try {
        await createModel(e, name, v1, {
          // Steps without pause hold: only the drift alert can end this rollout.
          rollout: {
            steps: [
              { weight: 50, analysis: false },
              { weight: 100, analysis: false },
            ],
          },
          drift: { features: DRIFT_FEATURES, psiThreshold: 0.2, window: '5s', action: 'Rollback' },
        });
        const t = await traffic(name, { ratePerSecond: 300 });
        await setModel(e, name, v2);
        const canaryStarted = Date.now();
        await canaryAt(name, 50);
        const zeroAt = await weightZeroAt(name, 120_000);
        const m = await rolledBackModel(name);
        await deploymentGone(`${name}-canary`);
        await new Promise((r) => setTimeout(r, Math.max(2000, zeroAt + 6000 - Date.now())));
        await t.stop();

        expect(cond(m, 'RolledBack')).toMatchObject({ status: 'True', reason: 'DriftDetected' });
        expect(cond(m, 'RolledBack')?.message).toMatch(/CremaFeatureDrift/);
        expect(m.status?.canary).toBeUndefined();
        expect(m.status?.abortedModelSha).toBe(v2.sha256);
        expect(m.status?.stable).toMatchObject({ revision: 1, modelSha: v1.sha256 });
        const hook = e.webhookAlerts.find((a) => a.at >= canaryStarted && a.line.includes(`/${name} `));
        expect(hook, 'drift alert received by the webhook').toBeDefined();
        const amAlerts = (await (await fetch(`${e.am!.url}/api/v2/alerts`)).json()) as Array<{
          labels: Record<string, string>;
          startsAt: string;
        }>;
        const fired = amAlerts.find(
          (a) => a.labels['crema_model'] === name && a.labels['variant'] === 'canary',
        );
        const prom = createPrometheusClient(e.prom!.url);
        const features = DRIFT_FEATURES.join('|');
        const psi = async (expr: string) => (await prom.query(expr))[0]?.value ?? NaN;
        // What the real canary pods reported (labelled with the RecommenderModel's name, as the
        // rules select), and stable's PSI now over its full window.
        const canaryPsi = await psi(
          `max(max_over_time(${SERVING_METRICS.featureDriftPsi.name}{namespace="${e.ns}",model="${name}",revision="${v2.sha256}",feature=~"${features}"}[3m]))`,
        );
        const stablePsi = await psi(
          `max(${SERVING_METRICS.featureDriftPsi.name}{namespace="${e.ns}",model="${name}",revision="${v1.sha256}",feature=~"${features}"})`,
        );
        const afterRollback = t.samples.filter((s) => s.start >= zeroAt + 3000);
        const result = {
          scenario: 'B',
          requests: t.samples.length,
          canaryPsi: Number(canaryPsi.toFixed(3)),
          stablePsi: Number(stablePsi.toFixed(3)),
          alertFiringToWebhookMs: fired ? hook!.at - Date.parse(fired.startsAt) : null,
          webhookToWeight0Ms: zeroAt - hook!.at,
          alertFiringToWeight0Ms: fired ? zeroAt - Date.parse(fired.startsAt) : null,
          failedRequests: t.samples.filter(failed).length,
          errors: failureSummary(t.samples),
        };
        console.log(`[e2e] ${JSON.stringify(result)}`);
        expect(canaryPsi).toBeGreaterThan(0.2);
        expect(stablePsi).toBeLessThan(0.2);
        expect(result.webhookToWeight0Ms).toBeLessThan(5000);
        expect(afterRollback.length).toBeGreaterThan(0);
        expect(
          afterRollback.every((s) => s.variant === 'stable' && (s.fallback || s.revision === v1.sha256)),
        ).toBe(true);
        expect(result.failedRequests).toBe(0);
      } finally {
        await cleanup(name);
      }
    },
  );

  it('C: a canary answering 5xx fails analysis and is rolled back', { timeout: 240_000 }, async () => {
    const name = 'errors';
    live.add(name);
    const v1 = await e.revision({ file: 'errors-r1' });
    const v2 = await e.revision({ file: 'errors-r2', doc: 'errors revision 2' });
    try {
      await createModel(e, name, v1, {
        rollout: {
          steps: [
            { weight: 50, pause: '1m' },
            { weight: 100, pause: '2s', analysis: false },
          ],
          analysis: {
            interval: '5s',
            minSamples: 50,
            failureLimit: 1,
            metrics: { errorRate: { max: 0.05 } },
          },
        },
      });
      // Closed loop here: the fault (one request in flight per canary pod) only bites when
      // requests overlap, which a steady open-loop rate on a fast path rarely makes happen.
      const t = await traffic(name, { concurrency: 8 });
      await setModel(e, name, v2);
      await canaryAt(name, 50);
      // An SRE's fault on the canary: its pods shed all but one concurrent request (real 503s).
      await e.client.request('PATCH', resourcePath(RESOURCES.deployment, e.ns, `${name}-canary`), {
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'e2e-fault', force: true },
        body: {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: `${name}-canary`, namespace: e.ns },
          spec: {
            template: {
              spec: { containers: [{ name: 'serving', env: [{ name: 'CREMA_MAX_IN_FLIGHT', value: '1' }] }] },
            },
          },
        },
      });
      const m = await rolledBackModel(name).catch((err: unknown) => {
        // Say what the clients saw: 503s here and no rollback means the analysis missed them.
        const seen = t.samples.filter((x) => x.status === 503).length;
        throw new Error(`${(err as Error).message}; clients saw ${seen} 503s of ${t.samples.length}`);
      });
      const zeroAt = await weightZeroAt(name, 30_000);
      await deploymentGone(`${name}-canary`);
      await new Promise((r) => setTimeout(r, Math.max(2000, zeroAt + 6000 - Date.now())));
      await t.stop();

      expect(cond(m, 'RolledBack')).toMatchObject({ status: 'True', reason: 'AnalysisFailed' });
      expect(cond(m, 'RolledBack')?.message).toMatch(/errorRate/);
      expect(m.status?.abortedModelSha).toBe(v2.sha256);
      expect(m.status?.stable).toMatchObject({ revision: 1, modelSha: v1.sha256 });
      const canaryErrors = t.samples.filter((s) => s.status === 503);
      expect(canaryErrors.length).toBeGreaterThan(0);
      const prom = createPrometheusClient(e.prom!.url);
      const [seen] = await prom.query(
        `sum(max_over_time(${SERVING_METRICS.httpRequestDuration.name}_count{namespace="${e.ns}",variant="canary",route="/v1/recommendations",status_code="503"}[5m]))`,
      );
      expect(seen?.value ?? 0).toBeGreaterThan(0);
      const afterRollback = t.samples.filter((s) => s.start >= zeroAt + 3000);
      const result = {
        scenario: 'C',
        requests: t.samples.length,
        canary503s: canaryErrors.length,
        canary503sInPrometheus: seen?.value ?? 0,
        failedAfterRollback: afterRollback.filter(failed).length,
      };
      console.log(`[e2e] ${JSON.stringify(result)}`);
      expect(afterRollback.length).toBeGreaterThan(0);
      expect(result.failedAfterRollback).toBe(0);
      expect(afterRollback.every((s) => s.variant === 'stable')).toBe(true);
    } finally {
      await cleanup(name);
    }
  });
});
