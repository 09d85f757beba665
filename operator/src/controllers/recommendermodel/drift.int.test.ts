/**
 * Drift → rollback through real parts: the operator's drift rules loaded into a real
 * Prometheus, which scrapes a stand-in serving /metrics endpoint (a fixture, not a mock of
 * Prometheus); a real Alertmanager posts to the operator's authenticated webhook; the canary is
 * rolled back. Measures the time from the webhook receiving the alert to canary weight 0 in the
 * router config, and from the drift appearing in the metrics to weight 0.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  startAlertmanager,
  startPrometheus,
  type AlertmanagerServer,
  type PrometheusServer,
} from '../../../../hack/testenv/observability.js';
import { startFakeServingMetrics, type FakeServing } from '../../../test/fake-serving-metrics.js';
import { buildDriftRules } from '../../analysis/rules.js';
import type { RunningOperator } from '../../operator.js';
import { RESOURCES, resourcePath, type KubeClient, type KubeObject } from '../../runtime/kube.js';
import { eventually, notifyAlertWebhook } from '../../../test/helpers.js';
import { startOperatorForTest, type OperatorTestEnv } from '../../../test/operator.js';
import type { RecommenderModel } from './types.js';

const ns = `drift-${Date.now().toString(36)}`;
const TOKEN = 'test-webhook-token';
const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
let client: KubeClient;
let op: RunningOperator;
let env: OperatorTestEnv;
let fake: FakeServing | undefined;
let prom: PrometheusServer | undefined;
let am: AlertmanagerServer | undefined;
let dir: string;
const alertsAt: number[] = [];

const getModel = () =>
  client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, 'drinks'));
async function canaryWeightInRouter(): Promise<number> {
  const cm = await client.request<KubeObject & { data: Record<string, string> }>(
    'GET',
    resourcePath(RESOURCES.configMap, ns, 'drinks-router'),
  );
  const doc = JSON.parse(cm.data['router.json']!) as { variants: Array<{ name: string; weight: number }> };
  return doc.variants.find((v) => v.name === 'canary')?.weight ?? 0;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-drift-'));
  env = await startOperatorForTest({
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    simulatePodReadiness: true,
    operator: {
      alertWebhook: { port: 0, host: '127.0.0.1', bearerToken: TOKEN },
      log: (m) => {
        if (m.startsWith('drift alert')) alertsAt.push(Date.now());
      },
    },
  });
  client = env.client;
  op = env.op;
});

afterAll(async () => {
  await prom?.stop();
  await am?.stop();
  await fake?.close();
  await env?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('drift alert on the canary (control plane only: pod readiness simulated)', () => {
  it(
    'rolls the canary back through Prometheus, Alertmanager and the webhook',
    { timeout: 150_000 },
    async () => {
      await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
        body: {
          apiVersion: 'crema.dev/v1alpha1',
          kind: 'RecommenderModel',
          metadata: { name: 'drinks', namespace: ns },
          spec: {
            model: { uri: 'file:///models/a.onnx', sha256: A, task: 'drink-ranking' },
            serving: { minReplicas: 1, maxReplicas: 2 },
            // A step without pause holds: only the drift alert can end this rollout.
            rollout: {
              steps: [
                { weight: 20, analysis: false },
                { weight: 100, analysis: false },
              ],
            },
            drift: { psiThreshold: 0.2, window: '5s', action: 'Rollback' },
          },
        },
      });
      await eventually(async () => (await getModel()).status?.stable?.modelSha === A, 60_000, 'stable');
      await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, 'drinks'), {
        contentType: 'application/merge-patch+json',
        body: { spec: { model: { sha256: B, uri: 'file:///models/b.onnx' } } },
      });
      const rolling = await eventually(
        async () => {
          const m = await getModel();
          return m.status?.canary?.weight === 20 ? m : undefined;
        },
        60_000,
        'canary at 20%',
      );
      // Status records the step first; the router config follows within moments.
      await eventually(async () => (await canaryWeightInRouter()) === 20, 1500, 'router config at 20%');

      // The operator's rules for the live revisions, a canary endpoint with healthy PSI.
      const rulesPath = join(dir, 'drift.rules.yaml');
      await writeFile(rulesPath, buildDriftRules([rolling]));
      fake = await startFakeServingMetrics({
        variant: 'canary',
        model: 'drinks',
        namespace: ns,
        revision: B,
        state: { psi: { hour: 0.05 } },
      });
      am = await startAlertmanager({
        webhookUrl: `http://127.0.0.1:${op.alertWebhookPort}/alerts`,
        bearerToken: TOKEN,
        log: () => {},
      });
      prom = await startPrometheus({
        scrapeTargets: [fake.target],
        ruleFiles: [rulesPath],
        alertmanagerUrl: am.url,
        log: () => {},
      });
      await new Promise((r) => setTimeout(r, 3000));
      expect((await getModel()).status?.canary?.weight).toBe(20); // healthy: nothing happens

      const driftStarted = Date.now();
      fake.set({ psi: { hour: 0.45 } });
      await eventually(async () => (await canaryWeightInRouter()) === 0, 60_000, 'router weight 0');
      const weightZeroAt = Date.now();
      // The router config is applied before status is written: wait for the status too.
      const m = await eventually(
        async () => {
          const x = await getModel();
          return x.status?.canary ? undefined : x;
        },
        10_000,
        'status without canary',
      );
      expect(m.status?.stable?.modelSha).toBe(A);
      expect(m.status?.abortedModelSha).toBe(B);
      const rolledBack = m.status?.conditions?.find((c) => c.type === 'RolledBack');
      expect(rolledBack).toMatchObject({ status: 'True', reason: 'DriftDetected' });
      expect(rolledBack?.message).toMatch(/CremaFeatureDrift/);
      expect(alertsAt.length).toBeGreaterThan(0);
      const alertToZero = weightZeroAt - alertsAt[0]!;
      console.log(
        `[drift] drift in metrics -> canary weight 0: ${weightZeroAt - driftStarted} ms; webhook alert -> weight 0: ${alertToZero} ms`,
      );
      expect(alertToZero).toBeLessThan(5000);
    },
  );

  it('a drift alert on stable sets DriftDetected; the webhook refuses a wrong token', async () => {
    const payload = (token: string) =>
      notifyAlertWebhook(op.alertWebhookPort!, token, {
        namespace: ns,
        model: 'drinks',
        revision: A,
        variant: 'stable',
        psi: 0.37,
      });
    expect((await payload('wrong-token')).status).toBe(401);
    expect((await payload(TOKEN)).status).toBe(200);
    const m = await eventually(
      async () => {
        const x = await getModel();
        return x.status?.conditions?.find((c) => c.type === 'DriftDetected' && c.status === 'True')
          ? x
          : undefined;
      },
      10_000,
      'DriftDetected',
    );
    expect(m.status?.conditions?.find((c) => c.type === 'DriftDetected')?.message).toMatch(/PSI 0.370/);
    // No earlier stable revision to return to: stable stays, and says it drifted.
    expect(m.status?.stable?.modelSha).toBe(A);
    const events = await client.request<{ items: Array<{ reason?: string }> }>(
      'GET',
      `/api/v1/namespaces/${ns}/events`,
    );
    expect(events.items.map((e) => e.reason)).toContain('DriftDetected');
  });
});
