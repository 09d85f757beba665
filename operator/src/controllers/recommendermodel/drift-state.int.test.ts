/**
 * Drift alert state lives in the cluster (ADR 0004): two operator replicas in-process with
 * leader election against the real API server. Alertmanager's notification reaching the standby
 * still rolls the leader's canary back; an alert recorded before a restart still counts for the
 * operator that comes after; an entry Alertmanager stops repeating expires, and only the leader
 * removes it. Control plane only: pod readiness is simulated (no kubelet).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startOperator, type OperatorConfig, type RunningOperator } from '../../operator.js';
import { DRIFT_ALERTS_CONFIGMAP } from '../../rollout/alerts.js';
import { RESOURCES, resourcePath, type KubeClient, type KubeObject } from '../../runtime/kube.js';
import {
  auditedWrites,
  eventually,
  notifyAlertWebhook,
  type WebhookDriftAlert,
} from '../../../test/helpers.js';
import {
  TEST_SERVING_REDIS_URL,
  startOperatorForTest,
  type OperatorTestEnv,
} from '../../../test/operator.js';
import type { RecommenderModel } from './types.js';

const ns = `drift-ha-${Date.now().toString(36)}`;
const TOKEN = 'test-webhook-token';
const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
let env: OperatorTestEnv;
let client: KubeClient;
const ops: RunningOperator[] = [];

/** One more replica of the operator in `ns`, with leader election and the webhook. */
function replicaConfig(identity: string, extra: Partial<OperatorConfig> = {}): OperatorConfig {
  return {
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    healthPort: 0,
    healthHost: '127.0.0.1',
    leaderElection: true,
    leaseNamespace: ns,
    leaseDurationMs: 3000,
    identity,
    log: () => {},
    // A replica that loses its lease in a test stops acting; it must not exit the test process.
    onLostLeadership: () => {},
    servingRedisUrl: TEST_SERVING_REDIS_URL,
    alertWebhook: { port: 0, host: '127.0.0.1', bearerToken: TOKEN },
    ...extra,
  };
}

async function startReplica(identity: string, extra?: Partial<OperatorConfig>): Promise<RunningOperator> {
  const op = await startOperator(replicaConfig(identity, extra));
  ops.push(op);
  return op;
}

/** Leader and standby once one of `replicas` leads. */
async function roles(replicas: RunningOperator[]) {
  const leader = await eventually(() => replicas.find((r) => r.manager.isLeader), 15_000, 'a leader');
  const standby = replicas.find((r) => r !== leader);
  return { leader, standby: standby! };
}

const getModel = (name: string) =>
  client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, name));

const condition = (m: RecommenderModel, type: string) => m.status?.conditions?.find((c) => c.type === type);

/** POSTs one Alertmanager notification with one alert to `op`'s webhook; the HTTP status and body. */
async function notify(op: RunningOperator, alert: Omit<WebhookDriftAlert, 'namespace' | 'startsAt'>) {
  return notifyAlertWebhook(op.alertWebhookPort!, TOKEN, {
    ...alert,
    namespace: ns,
    startsAt: new Date(Date.now() - 60_000).toISOString(),
  });
}

async function alertEntries(): Promise<Record<string, string>> {
  const cm = await client
    .request<KubeObject & { data?: Record<string, string> }>(
      'GET',
      resourcePath(RESOURCES.configMap, ns, DRIFT_ALERTS_CONFIGMAP),
    )
    .catch(() => undefined);
  return cm?.data ?? {};
}

/** Creates model `name` at revision A and waits until it is stable. */
async function createStableModel(name: string, spec: Partial<RecommenderModel['spec']> = {}) {
  await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name, namespace: ns },
      spec: {
        model: { uri: 'file:///models/a.onnx', sha256: A, task: 'drink-ranking' },
        serving: { minReplicas: 1, maxReplicas: 2 },
        drift: { psiThreshold: 0.2, window: '5s' },
        ...spec,
      },
    },
  });
  await eventually(
    async () => (await getModel(name)).status?.stable?.modelSha === A,
    60_000,
    `${name} stable`,
  );
}

/** Writes of operator replica `identity` in the test namespace (API server audit log). */
async function writesOf(identity: string): Promise<string[]> {
  return (await auditedWrites(inject('auditLogPath'), `crema-operator/${identity}`, ns))
    .filter((e) => e.objectRef?.resource !== 'leases')
    .map((e) => `${e.verb} ${e.objectRef?.resource}/${e.objectRef?.name}`);
}

beforeAll(async () => {
  env = await startOperatorForTest({
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    simulatePodReadiness: true,
    operator: replicaConfig(`${ns}-a`),
  });
  client = env.client;
  ops.push(env.op);
});

afterAll(async () => {
  for (const op of ops) await op.stop();
  await env?.stop();
});

describe('drift alert state in the cluster (control plane only: pod readiness simulated)', () => {
  it(
    "two replicas: the standby's webhook records a canary drift alert and the leader rolls the canary back",
    { timeout: 120_000 },
    async () => {
      await startReplica(`${ns}-b`);
      const { leader, standby } = await roles(ops);
      await createStableModel('drinks', {
        // A step without pause holds: only the drift alert can end this rollout.
        rollout: {
          steps: [
            { weight: 20, analysis: false },
            { weight: 100, analysis: false },
          ],
        },
      });
      await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, 'drinks'), {
        contentType: 'application/merge-patch+json',
        body: { spec: { model: { sha256: B, uri: 'file:///models/b.onnx' } } },
      });
      await eventually(async () => (await getModel('drinks')).status?.canary?.weight === 20, 60_000, '20%');

      const posted = Date.now();
      expect(
        await notify(standby, {
          status: 'firing',
          model: 'drinks',
          revision: B,
          variant: 'canary',
          psi: 0.45,
        }),
      ).toEqual({ status: 200, body: { accepted: 1, ignored: 0 } });
      const m = await eventually(
        async () => {
          const x = await getModel('drinks');
          return x.status?.abortedModelSha === B && !x.status.canary ? x : undefined;
        },
        10_000,
        'the leader rolled the canary back',
      );
      console.log(`[drift-state] standby webhook -> canary rolled back in status: ${Date.now() - posted} ms`);
      expect(m.status?.stable?.modelSha).toBe(A);
      expect(condition(m, 'RolledBack')).toMatchObject({ status: 'True', reason: 'DriftDetected' });
      expect(condition(m, 'RolledBack')?.message).toMatch(
        /CremaFeatureDrift \(canary revision bbbbbbbbbbbb\)/,
      );
      expect(Object.values(await alertEntries())).toEqual([expect.stringContaining(`"revision":"${B}"`)]);
      // The standby observed and recorded; it decided and reconciled nothing.
      const standbyWrites = await writesOf(standby.identity);
      expect(standbyWrites.length).toBeGreaterThan(0);
      expect(new Set(standbyWrites.map((w) => w.split(' ')[1]))).toEqual(
        new Set([`configmaps/${DRIFT_ALERTS_CONFIGMAP}`]),
      );
      expect(await writesOf(leader.identity)).toContain('patch recommendermodels/drinks');
    },
  );

  it(
    'an alert recorded before the leader restarts still counts for the next leader; resolved clears it',
    { timeout: 120_000 },
    async () => {
      await createStableModel('addons');
      const { leader } = await roles(ops);
      expect(
        await notify(leader, {
          status: 'firing',
          model: 'addons',
          revision: A,
          variant: 'stable',
          psi: 0.37,
        }),
      ).toMatchObject({ status: 200, body: { accepted: 1 } });
      await eventually(
        async () => condition(await getModel('addons'), 'DriftDetected')?.status === 'True',
        10_000,
        'DriftDetected',
      );

      // Every replica goes (a rollout of the operator Deployment); a fresh one takes over.
      for (const op of ops.splice(0)) await op.stop();
      const fresh = await startReplica(`${ns}-c`);
      await eventually(() => fresh.manager.isLeader, 15_000, 'the fresh replica leads');
      // A spec change, so the fresh leader has certainly reconciled the model when status is current.
      const { metadata } = await client.request<RecommenderModel>(
        'PATCH',
        resourcePath(RESOURCES.recommenderModel, ns, 'addons'),
        { contentType: 'application/merge-patch+json', body: { spec: { serving: { maxReplicas: 3 } } } },
      );
      const m = await eventually(
        async () => {
          const x = await getModel('addons');
          return x.status?.observedGeneration === metadata?.generation ? x : undefined;
        },
        15_000,
        'the fresh leader reconciled the change',
      );
      expect(condition(m, 'DriftDetected')).toMatchObject({ status: 'True', reason: 'FeatureDrift' });
      expect(condition(m, 'DriftDetected')?.message).toMatch(/PSI 0\.370/);

      expect(
        await notify(fresh, {
          status: 'resolved',
          model: 'addons',
          revision: A,
          variant: 'stable',
          psi: 0.1,
        }),
      ).toMatchObject({ status: 200, body: { accepted: 1 } });
      await eventually(
        async () => condition(await getModel('addons'), 'DriftDetected')?.status === 'False',
        10_000,
        'DriftDetected cleared by the resolved alert',
      );
      expect(Object.values(await alertEntries()).filter((v) => v.includes('"model":"addons"'))).toEqual([]);
    },
  );

  it(
    'an alert Alertmanager stops repeating expires: the leader removes it, the standby never writes it',
    { timeout: 120_000 },
    async () => {
      for (const op of ops.splice(0)) await op.stop();
      const ttl = { driftAlertTtlMs: 3000 };
      const { leader, standby } = await roles([
        await startReplica(`${ns}-d`, ttl),
        await startReplica(`${ns}-e`, ttl),
      ]);
      await createStableModel('pickup');
      expect(
        await notify(standby, {
          status: 'firing',
          model: 'pickup',
          revision: A,
          variant: 'stable',
          psi: 0.5,
        }),
      ).toMatchObject({ status: 200, body: { accepted: 1 } });
      await eventually(
        async () => condition(await getModel('pickup'), 'DriftDetected')?.status === 'True',
        10_000,
        'DriftDetected',
      );
      // No repeat within the TTL: the entry goes and the condition with it.
      await eventually(
        async () => condition(await getModel('pickup'), 'DriftDetected')?.status === 'False',
        15_000,
        'DriftDetected cleared after expiry',
      );
      await eventually(
        async () => !Object.values(await alertEntries()).some((v) => v.includes('"model":"pickup"')),
        10_000,
        'expired entry removed',
      );
      const standbyWrites = await writesOf(standby.identity);
      const leaderWrites = await writesOf(leader.identity);
      // The standby wrote the alert (one patch, or a create and a patch); the removal was the leader's.
      expect(standbyWrites.every((w) => w.endsWith(`configmaps/${DRIFT_ALERTS_CONFIGMAP}`))).toBe(true);
      expect(standbyWrites.length).toBeLessThanOrEqual(2);
      expect(leaderWrites).toContain(`patch configmaps/${DRIFT_ALERTS_CONFIGMAP}`);
    },
  );

  it(
    'two replicas writing alerts at once, into a namespace with no alert ConfigMap yet, lose none',
    { timeout: 60_000 },
    async () => {
      const [a, b] = ops;
      await client.request('DELETE', resourcePath(RESOURCES.configMap, ns, DRIFT_ALERTS_CONFIGMAP));
      const features = Array.from({ length: 12 }, (_, i) => `f${i}`);
      const send = (status: 'firing' | 'resolved') =>
        Promise.all(
          features.map((feature, i) =>
            notify(i % 2 ? a! : b!, {
              status,
              model: 'pickup',
              revision: A,
              variant: 'stable',
              psi: 0.5,
              feature,
            }),
          ),
        );
      expect((await send('firing')).map((r) => r.status)).toEqual(features.map(() => 200));
      const entries = Object.values(await alertEntries());
      expect(entries.map((v) => (JSON.parse(v) as { feature: string }).feature).sort()).toEqual(
        [...features].sort(),
      );
      expect((await send('resolved')).map((r) => r.status)).toEqual(features.map(() => 200));
      expect(await alertEntries()).toEqual({});
    },
  );
});
