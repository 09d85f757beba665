/**
 * Progressive delivery end to end (issue 6, point 6), with real parts: the test control plane
 * (global setup), the operator in-process with canary analysis against a real Prometheus and
 * drift alerts from a real Alertmanager, and real serving processes (serving/src/server.ts) for
 * stable and canary plus a real router process, started from what the operator rendered
 * (Deployment env, `<model>-router` router.json, `<model>-drift-rules` rules) by `Kubelet`
 * (./kubelet.ts; there is no kubelet). Prometheus scrapes the serving processes every second.
 * A bounded traffic generator (./traffic.ts) sends recommendation requests for random seeded
 * users through the router.
 *
 * Models: the real trained ranker (manifests/models/artifacts) as revision 1, and byte-distinct
 * copies of it as canaries (./models.ts). Users follow the trained model's feature baseline.
 *
 * Scenarios (run in this order: Prometheus pools request metrics of every process by variant,
 * so the quiet scenario runs first and the error scenario last):
 * - D: too little traffic: analysis stays Inconclusive, the rollout waits and says why;
 * - A: healthy canary promoted 20 → 50 → 100 with analysis passing; the share served by each
 *   variant per step is within ±2 points of the weight, every request went to the variant its
 *   user hashes to, and no request failed;
 * - B: the canary's metadata carries a training baseline (recency_days) that live traffic does
 *   not follow, so the real canary process reports high `crema_feature_drift_psi`; the
 *   operator's drift rule fires in Prometheus, Alertmanager posts to the operator's webhook and
 *   the canary is rolled back;
 * - C: the canary process is started with `CREMA_MAX_IN_FLIGHT=1` (serving's own load-shedding
 *   option, set by Kubelet's fault hook for this one Deployment: the operator has no way to
 *   render per-track env), so it answers most concurrent requests with a real 503 OVERLOADED
 *   that its own request metrics record; the error-rate analysis fails twice (failureLimit 1)
 *   and the canary is rolled back. Nothing fakes the errors or the metrics.
 *
 * Each scenario prints one JSON line (`[e2e] {...}`) with its measurements.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { assignVariant } from '../../../contracts/variant-hash.js';
import {
  startAlertmanager,
  startPrometheus,
  type AlertmanagerServer,
  type PrometheusServer,
} from '../../../hack/testenv/observability.js';
import { freeFixedPort } from '../../../hack/testenv/process.js';
import { createPrometheusClient } from '../analysis/prometheus.js';
import type { RecommenderModel } from '../controllers/recommendermodel/types.js';
import { installCrds } from '../install.js';
import { startOperator, type RunningOperator } from '../operator.js';
import { KubeApiError, RESOURCES, resourcePath, type KubeClient, type KubeObject } from '../runtime/kube.js';
import { eventually, testClient } from '../testing/helpers.js';
import { deleteModel, Kubelet, type Epoch } from './kubelet.js';
import { seedUsers, writeRevision, type Revision } from './models.js';
import { failed, startTraffic, type Sample, type Traffic } from './traffic.js';

const ns = `e2e-pd-${Date.now().toString(36)}`;
const TOKEN = 'e2e-webhook-token';
const DRIFT_FEATURES = ['recency_days', 'frequency_30d', 'monetary_30d'];
let dir: string;
let client: KubeClient;
let op: RunningOperator | undefined;
let prom: PrometheusServer | undefined;
let am: AlertmanagerServer | undefined;
let kubelet: Kubelet | undefined;
let users: string[] = [];
const traffics: Traffic[] = [];
const webhookAlerts: { at: number; line: string }[] = [];
const quiet = () => {};

const getModel = (name: string) =>
  client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, name));
const cond = (m: RecommenderModel, t: string) => m.status?.conditions?.find((c) => c.type === t);
const deploymentExists = (name: string) =>
  client.request('GET', resourcePath(RESOURCES.deployment, ns, name)).then(
    () => true,
    (e: unknown) => (e instanceof KubeApiError && e.notFound ? false : Promise.reject(e)),
  );
async function canaryWeightInConfigMap(name: string): Promise<number> {
  const cm = await client.request<KubeObject & { data: Record<string, string> }>(
    'GET',
    resourcePath(RESOURCES.configMap, ns, `${name}-router`),
  );
  const doc = JSON.parse(cm.data['router.json']!) as { variants: Array<{ name: string; weight: number }> };
  return doc.variants.find((v) => v.name === 'canary')?.weight ?? 0;
}

async function createModel(name: string, stable: Revision, extra: Record<string, unknown>): Promise<void> {
  await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name, namespace: ns },
      spec: {
        model: { uri: stable.uri, sha256: stable.sha256, task: 'drink-ranking' },
        serving: { minReplicas: 1, maxReplicas: 2 },
        ...extra,
      },
    },
  });
  await eventually(
    async () => cond(await getModel(name), 'Ready')?.status === 'True',
    60_000,
    `${name} Ready (its stable serving process ready)`,
  );
  await eventually(() => kubelet!.router(name), 30_000, `${name} router running`);
}

const setModel = (name: string, rev: Revision) =>
  client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, name), {
    contentType: 'application/merge-patch+json',
    body: { spec: { model: { sha256: rev.sha256, uri: rev.uri } } },
  });

async function canaryAt(name: string, weight: number, timeoutMs = 60_000): Promise<RecommenderModel> {
  return eventually(
    async () => {
      const m = await getModel(name);
      return m.status?.canary?.weight === weight ? m : undefined;
    },
    timeoutMs,
    `${name} canary at ${weight}%`,
  );
}

function traffic(name: string, opts: { concurrency?: number; ratePerSecond?: number } = {}): Traffic {
  const t = startTraffic({ url: kubelet!.router(name)!.url, users, maxDurationMs: 120_000, ...opts });
  traffics.push(t);
  return t;
}

const canaryWeightOf = (e: Epoch) => e.variants.find((v) => v.name === 'canary')?.weight ?? 0;
const canaryRouted = (e: Epoch) =>
  e.variants.some((v) => v.name === 'canary' && v.weight > 0 && !v.upstream?.endsWith(':1'));

/** Requests answered entirely within epoch `i` (after the router applied it, before the next write). */
function inEpoch(samples: readonly Sample[], epochs: readonly Epoch[], i: number): Sample[] {
  const e = epochs[i]!;
  const from = e.appliedAt ?? Infinity;
  const to = epochs[i + 1]?.writtenAt ?? Infinity;
  return samples.filter((s) => s.start >= from && s.end <= to);
}

function share(samples: readonly Sample[], variant: string): number {
  return samples.length ? (100 * samples.filter((s) => s.variant === variant).length) / samples.length : 0;
}

/** Polls the ConfigMap every 50 ms until the canary weight is 0; returns when it saw it. */
async function weightZeroAt(name: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await canaryWeightInConfigMap(name)) === 0) return Date.now();
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${name}: canary weight not 0 within ${timeoutMs} ms`);
}

/** The first router epoch without canary weight after the last one with canary weight, once applied. */
async function rollbackApplied(name: string): Promise<Epoch> {
  return eventually(
    () => {
      const { epochs } = kubelet!.router(name)!;
      let last = -1;
      epochs.forEach((e, i) => {
        if (canaryWeightOf(e) > 0) last = i;
      });
      const e = last >= 0 ? epochs.slice(last + 1).find((x) => canaryWeightOf(x) === 0) : undefined;
      return e?.appliedAt !== undefined ? e : undefined;
    },
    20_000,
    `${name}: router applied weight 0`,
  );
}

/** The model once its RolledBack condition is True (the status is written after the router config). */
const rolledBackModel = (name: string) =>
  eventually(
    async () => {
      const m = await getModel(name);
      return cond(m, 'RolledBack')?.status === 'True' ? m : undefined;
    },
    20_000,
    `${name} RolledBack`,
  );

async function cleanup(name: string): Promise<void> {
  await deleteModel(client, ns, name);
  await kubelet?.forget(name);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-e2e-pd-'));
  client = await testClient(inject('kubeconfigPath'));
  await installCrds(client);
  await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: ns } } });
  const redis = new Redis(inject('redisUrl'));
  try {
    users = await seedUsers(redis, 'e2e-progressive-delivery', 20_000);
  } finally {
    redis.disconnect();
  }
  // Fixed before the servers start (Prometheus scrapes them): below the ephemeral range, so no
  // outgoing connection or listen(0) can take one in the meantime (that happened in CI).
  const taken = new Set<number>();
  for (let i = 0; i < 7; i++) taken.add(await freeFixedPort(taken));
  const [webhookPort, ...ports] = [...taken] as [number, ...number[]];
  am = await startAlertmanager({
    webhookUrl: `http://127.0.0.1:${webhookPort}/alerts`,
    bearerToken: TOKEN,
    log: quiet,
  });
  prom = await startPrometheus({
    scrapeTargets: ports.map((p) => `127.0.0.1:${p}`),
    alertmanagerUrl: am.url,
    log: quiet,
  });
  op = await startOperator({
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    healthPort: 0,
    healthHost: '127.0.0.1',
    leaderElection: false,
    prometheusUrl: prom.url,
    alertWebhook: { port: webhookPort, host: '127.0.0.1', bearerToken: TOKEN },
    log: (line) => {
      if (line.startsWith('drift alert')) webhookAlerts.push({ at: Date.now(), line });
    },
  });
  kubelet = new Kubelet({
    client,
    namespace: ns,
    redisUrl: inject('redisUrl'),
    ports,
    prometheus: prom,
    dir,
    extraEnv: (deployment) => (deployment === 'errors-canary' ? { CREMA_MAX_IN_FLIGHT: '1' } : undefined),
    log: process.env['CREMA_E2E_VERBOSE'] ? (l) => console.log(`[kubelet] ${l}`) : quiet,
  });
  kubelet.start();
}, 180_000);

afterAll(async () => {
  await Promise.all(traffics.map((t) => t.stop()));
  await kubelet?.stop();
  await op?.stop();
  await prom?.stop();
  await am?.stop();
  await client?.request('DELETE', `/api/v1/namespaces/${ns}`).catch(() => {});
  client?.close();
  await rm(dir, { recursive: true, force: true });
}, 60_000);

describe('progressive delivery end to end', () => {
  it('D: with too little traffic the rollout waits and says why', { timeout: 120_000 }, async () => {
    const name = 'quiet';
    const v1 = await writeRevision(dir, { name, file: 'quiet-r1' });
    const v2 = await writeRevision(dir, { name, file: 'quiet-r2', doc: 'quiet revision 2' });
    try {
      await createModel(name, v1, {
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
      const t = traffic(name, { ratePerSecond: 4 });
      await setModel(name, v2);
      await canaryAt(name, 20);
      const waiting = await eventually(
        async () => {
          const m = await getModel(name);
          const records = (m.status?.canary?.analysis ?? []).filter((a) => a.step === 0);
          return records.length >= 3 ? m : undefined;
        },
        40_000,
        'three analyses of step 1',
      );
      await t.stop();
      const records = waiting.status!.canary!.analysis!;
      expect(records.every((a) => a.verdict === 'Inconclusive')).toBe(true);
      expect(records[0]!.message).toMatch(/errorRate: waiting for 100 canary requests \(canary has \d+/);
      expect(waiting.status?.canary).toMatchObject({ step: 0, weight: 20, failures: 0, modelSha: v2.sha256 });
      expect(waiting.status?.stable).toMatchObject({ revision: 1, modelSha: v1.sha256 });
      const progressing = cond(waiting, 'Progressing');
      expect(progressing?.status).toBe('True');
      expect(progressing?.message).toMatch(
        /analysis inconclusive: errorRate: waiting for 100 canary requests/,
      );
      expect(cond(waiting, 'RolledBack')?.status).not.toBe('True');
      expect(await canaryWeightInConfigMap(name)).toBe(20);
      // The little traffic there was went through and was answered.
      expect(t.samples.length).toBeGreaterThan(10);
      expect(t.samples.filter(failed)).toHaveLength(0);
      console.log(
        `[e2e] ${JSON.stringify({
          scenario: 'D',
          requests: t.samples.length,
          ratePerSecond: 4,
          analyses: records.length,
          verdicts: records.map((a) => a.verdict),
          progressing: progressing?.message,
          failedRequests: t.samples.filter(failed).length,
        })}`,
      );
    } finally {
      await cleanup(name);
    }
  });

  it(
    'A: a healthy canary is promoted 20 → 50 → 100 and traffic follows the weights',
    { timeout: 150_000 },
    async () => {
      const name = 'drinks';
      const v1 = await writeRevision(dir, { name, file: 'drinks-r1' });
      const v2 = await writeRevision(dir, { name, file: 'drinks-r2', doc: 'drinks revision 2' });
      try {
        await createModel(name, v1, {
          rollout: {
            steps: [
              { weight: 20, pause: '2s' },
              { weight: 50, pause: '2s' },
              // Analysed too: absolute limits need only canary samples (stable gets none at 100%).
              { weight: 100, pause: '2s' },
            ],
            analysis: {
              interval: '6s',
              minSamples: 200,
              failureLimit: 0,
              metrics: { errorRate: { max: 0.01 }, p99LatencyMs: { max: 1000 }, driftPsi: { max: 0.2 } },
            },
          },
          drift: { features: DRIFT_FEATURES, psiThreshold: 0.2, window: '10s' },
        });
        const t = traffic(name, { concurrency: 8 });
        const started = Date.now();
        await setModel(name, v2);
        const promoted = await eventually(
          async () => {
            const m = await getModel(name);
            return !m.status?.canary && m.status?.stable?.revision === 2 ? m : undefined;
          },
          90_000,
          'promoted',
        );
        // The stable Deployment rolls to revision 2: a new stable process, then the router moves to it.
        const newStable = await eventually(
          () =>
            kubelet!
              .processesOf(name)
              .find((p) => p.track === 'stable' && p.sha === v2.sha256 && p.readyAt !== undefined),
          60_000,
          'stable process of revision 2 ready',
        );
        const routedToNew = await eventually(
          () =>
            kubelet!
              .router(name)!
              .epochs.find(
                (e) => e.appliedAt && e.variants.some((v) => v.upstream?.endsWith(`:${newStable.port}`)),
              ),
          30_000,
          'router on the new stable process',
        );
        await new Promise((r) => setTimeout(r, 1500));
        await t.stop();

        expect(promoted.status?.stable).toMatchObject({ revision: 2, modelSha: v2.sha256, uri: v2.uri });
        expect(promoted.status?.history?.[0]).toMatchObject({
          revision: 1,
          modelSha: v1.sha256,
          reason: expect.stringMatching(/Replaced by revision 2 after a successful canary/),
        });
        expect(cond(promoted, 'RolledBack')?.status).not.toBe('True');
        await eventually(async () => !(await deploymentExists(`${name}-canary`)), 30_000, 'canary removed');

        const { epochs } = kubelet!.router(name)!;
        const samples = t.samples.filter((s) => s.start >= started);
        const steps = [20, 50, 100].map((w) => {
          const i = epochs.findIndex((e) => canaryWeightOf(e) === w && canaryRouted(e));
          expect(i, `an epoch at ${w}%`).toBeGreaterThanOrEqual(0);
          const measured = inEpoch(samples, epochs, i);
          const e = epochs[i]!;
          const misrouted = measured.filter((s) => s.variant !== assignVariant(s.userId, e.salt, e.variants));
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
        // After the router moved to the new stable process, revision 2 answers as stable.
        const after = samples.filter((s) => s.start >= routedToNew.appliedAt!);
        const at100 = epochs.find((e) => canaryWeightOf(e) === 100)!;
        const failedTotal = samples.filter(failed);
        console.log(
          `[e2e] ${JSON.stringify({
            scenario: 'A',
            requests: samples.length,
            fallbackAnswers: samples.filter((s) => s.fallback).length,
            steps: steps.map((s) => ({
              weight: s.weight,
              requests: s.requests,
              canarySharePct: Number(s.canaryShare.toFixed(2)),
              misrouted: s.misrouted.length,
            })),
            failedRequests: failedTotal.length,
            failedDuringPromotion: failedTotal.filter((s) => s.start >= at100.writtenAt).length,
          })}`,
        );
        for (const s of steps) {
          // Every request went where its user hashes to, and each process served its own revision.
          expect(s.misrouted).toHaveLength(0);
          for (const r of s.revisions) expect([`stable:${v1.sha256}`, `canary:${v2.sha256}`]).toContain(r);
          if (s.weight < 100) {
            expect(s.requests, `requests measured at ${s.weight}%`).toBeGreaterThanOrEqual(3000);
            expect(Math.abs(s.canaryShare - s.weight), `canary share at ${s.weight}%`).toBeLessThanOrEqual(2);
          } else {
            expect(s.requests).toBeGreaterThan(100);
            expect(s.canaryShare).toBe(100);
          }
        }
        expect(after.length).toBeGreaterThan(0);
        expect(after.every((s) => s.variant === 'stable' && (s.fallback || s.revision === v2.sha256))).toBe(
          true,
        );
        expect(failedTotal).toHaveLength(0);
      } finally {
        await cleanup(name);
      }
    },
  );

  it(
    'B: a canary with drifted features is rolled back by the drift alert',
    { timeout: 120_000 },
    async () => {
      const name = 'drift';
      const v1 = await writeRevision(dir, { name, file: 'drift-r1' });
      // Trained on users who had nearly all ordered within the first baseline bin of recency_days.
      const v2 = await writeRevision(dir, {
        name,
        file: 'drift-r2',
        doc: 'drift revision 2',
        mutate: (meta) => {
          const b = meta.baseline.features['recency_days']!;
          const rest = 0.1 / (b.probs.length - 1);
          const shifted = { edges: b.edges, probs: b.probs.map((_, i) => (i ? rest : 0.9)) };
          return {
            ...meta,
            baseline: { ...meta.baseline, features: { ...meta.baseline.features, recency_days: shifted } },
          };
        },
      });
      try {
        await createModel(name, v1, {
          // Steps without pause hold: only the drift alert can end this rollout.
          rollout: {
            steps: [
              { weight: 50, analysis: false },
              { weight: 100, analysis: false },
            ],
          },
          drift: { features: DRIFT_FEATURES, psiThreshold: 0.2, window: '5s', action: 'Rollback' },
        });
        const t = traffic(name, { concurrency: 4 });
        await setModel(name, v2);
        const canaryStarted = Date.now();
        await canaryAt(name, 50);
        const zeroAt = await weightZeroAt(name, 60_000);
        const m = await rolledBackModel(name);
        const applied = await rollbackApplied(name);
        await new Promise((r) => setTimeout(r, 1000));
        await t.stop();

        const rolledBack = cond(m, 'RolledBack');
        expect(rolledBack).toMatchObject({ status: 'True', reason: 'DriftDetected' });
        expect(rolledBack?.message).toMatch(/CremaFeatureDrift/);
        expect(m.status?.canary).toBeUndefined();
        expect(m.status?.abortedModelSha).toBe(v2.sha256);
        expect(m.status?.stable).toMatchObject({ revision: 1, modelSha: v1.sha256 });
        await eventually(async () => !(await deploymentExists(`${name}-canary`)), 30_000, 'canary removed');

        // The alert came through the webhook, and Alertmanager knows when it started firing.
        const hook = webhookAlerts.find((a) => a.at >= canaryStarted && a.line.includes(`/${name} `));
        expect(hook, 'drift alert received by the webhook').toBeDefined();
        const amAlerts = (await (await fetch(`${am!.url}/api/v2/alerts`)).json()) as Array<{
          labels: Record<string, string>;
          startsAt: string;
        }>;
        const fired = amAlerts.find(
          (a) => a.labels['crema_model'] === name && a.labels['variant'] === 'canary',
        );
        // What the real canary process reported, and that stable's traffic did not drift.
        const promClient = createPrometheusClient(prom!.url);
        const canaryRule = kubelet!.rulesLoaded.find(
          (r) => r.name.endsWith(`.${name}-drift-rules`) && r.text.includes(v2.sha256),
        );
        const features = DRIFT_FEATURES.join('|');
        const psi = async (expr: string) => (await promClient.query(expr))[0]?.value ?? NaN;
        // The canary is gone by now: the highest PSI it reported. Stable still serves: its PSI now,
        // over its full window of live requests (early readings over a handful of requests are noisy).
        const canaryPsi = await psi(
          `max(max_over_time(crema_feature_drift_psi{model="${name}",revision="${v2.sha256}",feature=~"${features}"}[2m]))`,
        );
        const stablePsi = await psi(
          `max(crema_feature_drift_psi{model="${name}",revision="${v1.sha256}",feature=~"${features}"})`,
        );

        const samples = t.samples;
        const afterRollback = samples.filter((s) => s.start >= applied.appliedAt!);
        expect(afterRollback.length).toBeGreaterThan(0);
        expect(
          afterRollback.every((s) => s.variant === 'stable' && (s.fallback || s.revision === v1.sha256)),
        ).toBe(true);
        const result = {
          scenario: 'B',
          requests: samples.length,
          canaryPsi: Number(canaryPsi.toFixed(3)),
          stablePsi: Number(stablePsi.toFixed(3)),
          alertFiringToWeight0Ms: fired ? zeroAt - Date.parse(fired.startsAt) : null,
          // Prometheus forgets its Alertmanagers on every reload and rediscovers them ~5 s later;
          // the canary's rule arrives with the canary, so its alert may wait for that.
          canaryRuleLoadedToWebhookMs: canaryRule ? hook!.at - canaryRule.at : null,
          alertFiringToWebhookMs: fired ? hook!.at - Date.parse(fired.startsAt) : null,
          webhookToWeight0Ms: zeroAt - hook!.at,
          webhookToRouterAppliedMs: applied.appliedAt! - hook!.at,
          failedRequests: samples.filter(failed).length,
          failedAfterRollback: afterRollback.filter(failed).length,
        };
        console.log(`[e2e] ${JSON.stringify(result)}`);
        expect(canaryPsi).toBeGreaterThan(0.2);
        expect(stablePsi).toBeLessThan(0.2);
        expect(result.webhookToWeight0Ms).toBeLessThan(5000);
        expect(result.failedRequests).toBe(0);
      } finally {
        await cleanup(name);
      }
    },
  );

  it('C: a canary answering 5xx fails analysis and is rolled back', { timeout: 120_000 }, async () => {
    const name = 'errors';
    const v1 = await writeRevision(dir, { name, file: 'errors-r1' });
    const v2 = await writeRevision(dir, { name, file: 'errors-r2', doc: 'errors revision 2' });
    try {
      await createModel(name, v1, {
        rollout: {
          steps: [
            { weight: 50, pause: '2s' },
            { weight: 100, pause: '2s', analysis: false },
          ],
          analysis: {
            interval: '4s',
            minSamples: 100,
            failureLimit: 1,
            metrics: { errorRate: { max: 0.05 } },
          },
        },
      });
      const t = traffic(name, { concurrency: 8 });
      await setModel(name, v2);
      await canaryAt(name, 50);
      const firstFail = await eventually(
        async () => {
          const m = await getModel(name);
          if (cond(m, 'RolledBack')?.status === 'True') return m; // both failures between two polls
          return m.status?.canary?.analysis?.some((a) => a.verdict === 'Fail') ? m : undefined;
        },
        40_000,
        'a failed analysis',
      );
      const zeroAt = await weightZeroAt(name, 30_000);
      const m = await rolledBackModel(name);
      const applied = await rollbackApplied(name);
      await new Promise((r) => setTimeout(r, 1000));
      await t.stop();

      const rolledBack = cond(m, 'RolledBack');
      expect(rolledBack).toMatchObject({ status: 'True', reason: 'AnalysisFailed' });
      expect(rolledBack?.message).toMatch(/errorRate/);
      expect(m.status?.canary).toBeUndefined();
      expect(m.status?.abortedModelSha).toBe(v2.sha256);
      expect(m.status?.stable).toMatchObject({ revision: 1, modelSha: v1.sha256 });
      const ended = m.status!.history![0]!;
      const endedAt = Date.parse(ended.endedAt ?? '');
      expect(ended).toMatchObject({
        revision: 2,
        modelSha: v2.sha256,
        reason: expect.stringMatching(/^AnalysisFailed: /),
      });
      await eventually(async () => !(await deploymentExists(`${name}-canary`)), 30_000, 'canary removed');
      const fail = firstFail.status?.canary?.analysis?.find((a) => a.verdict === 'Fail');
      if (fail) {
        expect(fail.message).toMatch(/errorRate/);
        expect(cond(firstFail, 'Progressing')?.message).toMatch(/analysis failed \(1\/1 tolerated\)/);
      }

      // The errors are the canary process's own 503s, seen by the generator and by Prometheus.
      const samples = t.samples;
      const canaryErrors = samples.filter((s) => s.status === 503);
      expect(canaryErrors.length).toBeGreaterThan(0);
      const promClient = createPrometheusClient(prom!.url);
      const [seen] = await promClient.query(
        'sum(max_over_time(crema_http_request_duration_seconds_count{variant="canary",route="/v1/recommendations",status_code="503"}[2m]))',
      );
      expect(seen?.value ?? 0).toBeGreaterThan(0);
      const afterRollback = samples.filter((s) => s.start >= applied.appliedAt!);
      expect(afterRollback.length).toBeGreaterThan(0);
      const result = {
        scenario: 'C',
        requests: samples.length,
        failedBeforeRollback: samples.filter((s) => failed(s) && s.start < applied.appliedAt!).length,
        canary503sInPrometheus: seen?.value ?? 0,
        firstFailedAnalysisToWeight0Ms: fail ? zeroAt - Date.parse(fail.at ?? '') : null,
        rollbackDecisionToWeight0Ms: zeroAt - endedAt,
        rollbackDecisionToRouterAppliedMs: applied.appliedAt! - endedAt,
        failedAfterRollback: afterRollback.filter(failed).length,
      };
      console.log(`[e2e] ${JSON.stringify(result)}`);
      expect(result.failedAfterRollback).toBe(0);
      expect(afterRollback.every((s) => s.variant === 'stable')).toBe(true);
    } finally {
      await cleanup(name);
    }
  });

  it('the stand-in kubelet ran without errors', () => {
    expect(kubelet!.errors).toEqual([]);
  });
});
