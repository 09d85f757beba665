/**
 * The shipped RBAC (manifests/operator/rbac.yaml) is enough and no more: the operator, running
 * with a token of the crema-operator ServiceAccount against the real API server (RBAC
 * authorization), elects itself, reconciles a model end to end, records a drift alert from its
 * webhook in the namespace's alert ConfigMap, and is refused Secrets.
 */
import * as k8s from '@kubernetes/client-node';
import { readFile, rm, writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { installCrds } from './install.js';
import { startOperator, type RunningOperator } from './operator.js';
import { DRIFT_ALERTS_CONFIGMAP } from './rollout/alerts.js';
import {
  KubeApiError,
  RESOURCES,
  createKubeClient,
  resourcePath,
  type KubeClient,
  type KubeObject,
} from './runtime/kube.js';
import { eventually, notifyAlertWebhook, testClient } from '../test/helpers.js';
import { TEST_SERVING_REDIS_URL } from '../test/operator.js';
import type { RecommenderModel } from './api/v1alpha1/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ns = `rbac-${Date.now().toString(36)}`;
let admin: KubeClient;
let op: RunningOperator | undefined;
let dir: string;
let saKubeconfig: string;

/** Applies every document of a manifest file with server-side apply. */
async function applyFile(path: string): Promise<void> {
  for (const doc of parseAllDocuments(await readFile(path, 'utf8'))) {
    const obj = doc.toJSON() as KubeObject & { apiVersion: string; kind: string };
    const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
    const plural = `${obj.kind.toLowerCase()}s`;
    const base = group ? `/apis/${group}/${version}` : `/api/${version}`;
    const path2 = obj.metadata?.namespace
      ? `${base}/namespaces/${obj.metadata.namespace}/${plural}/${obj.metadata.name}`
      : `${base}/${plural}/${obj.metadata!.name}`;
    await admin.request('PATCH', path2, {
      body: obj,
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager: 'crema-tests', force: true },
    });
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-rbac-'));
  admin = await testClient(inject('kubeconfigPath'));
  await installCrds(admin);
  for (const name of ['crema-system', ns]) {
    await admin
      .request('POST', '/api/v1/namespaces', { body: { metadata: { name } } })
      .catch((e: unknown) => {
        if (!(e instanceof KubeApiError && e.conflict)) throw e;
      });
  }
  await applyFile(join(root, 'manifests/operator/rbac.yaml'));
  // A short-lived token of the ServiceAccount, in a kubeconfig like the in-cluster one.
  const tr = await admin.request<{ status: { token: string } }>(
    'POST',
    '/api/v1/namespaces/crema-system/serviceaccounts/crema-operator/token',
    {
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 3600 },
      },
    },
  );
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(inject('kubeconfigPath'));
  const cluster = kc.getCurrentCluster()!;
  saKubeconfig = join(dir, 'sa.kubeconfig');
  await writeFile(
    saKubeconfig,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        { name: 'c', cluster: { server: cluster.server, 'certificate-authority-data': cluster.caData } },
      ],
      users: [{ name: 'sa', user: { token: tr.status.token } }],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'sa' } }],
      'current-context': 'c',
    }),
  );
});

afterAll(async () => {
  await op?.stop();
  await admin?.request('DELETE', `/api/v1/namespaces/${ns}`).catch(() => {});
  admin?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('operator RBAC', () => {
  it('reconciles with only the shipped permissions', { timeout: 60_000 }, async () => {
    op = await startOperator({
      kubeconfigPath: saKubeconfig,
      healthPort: 0,
      healthHost: '127.0.0.1',
      leaseNamespace: 'crema-system',
      leaseDurationMs: 3000,
      log: () => {},
      servingRedisUrl: TEST_SERVING_REDIS_URL,
      alertWebhook: { port: 0, host: '127.0.0.1', bearerToken: 'rbac-token' },
    });
    await eventually(() => op!.manager.isLeader, 15_000, 'leader with the SA token');
    await admin.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
      body: {
        apiVersion: 'crema.dev/v1alpha1',
        kind: 'RecommenderModel',
        metadata: { name: 'drinks', namespace: ns },
        spec: {
          model: { uri: 'file:///models/d.onnx', sha256: 'd'.repeat(64), task: 'drink-ranking' },
          drift: {},
        },
      },
    });
    const m = await eventually(
      async () => {
        const x = await admin.request<RecommenderModel>(
          'GET',
          resourcePath(RESOURCES.recommenderModel, ns, 'drinks'),
        );
        return x.status?.observedGeneration === x.metadata?.generation ? x : undefined;
      },
      30_000,
      'status written',
    );
    expect(m.status?.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'False' });
    for (const [r, name] of [
      [RESOURCES.deployment, 'drinks-stable'],
      [RESOURCES.service, 'drinks'],
      [RESOURCES.service, 'drinks-stable'],
      [RESOURCES.serviceAccount, 'drinks-router'],
      [RESOURCES.role, 'drinks-router'],
      [RESOURCES.roleBinding, 'drinks-router'],
      [RESOURCES.hpa, 'drinks'],
      [RESOURCES.pdb, 'drinks'],
      [RESOURCES.configMap, 'drinks-model'],
      [RESOURCES.configMap, 'drinks-router'],
      [RESOURCES.configMap, 'drinks-drift-rules'],
    ] as const) {
      await admin.request('GET', resourcePath(r, ns, name));
    }
  });

  it('records drift alerts in the cluster (create and merge-patch of the alert ConfigMap)', async () => {
    const notify = (status: 'firing' | 'resolved') =>
      notifyAlertWebhook(op!.alertWebhookPort!, 'rbac-token', {
        status,
        namespace: ns,
        model: 'drinks',
        revision: 'd'.repeat(64),
        variant: 'stable',
        psi: 0.4,
      });
    expect(await notify('firing')).toEqual({ status: 200, body: { accepted: 1, ignored: 0 } });
    const entries = async () =>
      (
        await admin.request<KubeObject & { data?: Record<string, string> }>(
          'GET',
          resourcePath(RESOURCES.configMap, ns, DRIFT_ALERTS_CONFIGMAP),
        )
      ).data ?? {};
    expect(Object.keys(await entries())).toHaveLength(1);
    expect(await notify('resolved')).toEqual({ status: 200, body: { accepted: 1, ignored: 0 } });
    expect(await entries()).toEqual({});
  });

  it('is refused what it does not need', async () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(saKubeconfig);
    const sa = await createKubeClient(kc, { userAgent: 'crema-rbac-test' });
    try {
      const err = await sa.request('GET', `/api/v1/namespaces/${ns}/secrets`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KubeApiError);
      expect((err as KubeApiError).status).toBe(403);
      const crd = await sa
        .request('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions')
        .catch((e: unknown) => e);
      expect((crd as KubeApiError).status).toBe(403);
    } finally {
      sa.close();
    }
  });
});
