/**
 * Proof that the test control plane is a real Kubernetes: controllers run, watches stream,
 * server-side apply tracks field managers, and garbage collection follows owner references.
 */
import * as k8s from '@kubernetes/client-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { eventually } from '../../operator/test/helpers.js';

const kc = new k8s.KubeConfig();
kc.loadFromFile(inject('kubeconfigPath'));
const core = kc.makeApiClient(k8s.CoreV1Api);
const apps = kc.makeApiClient(k8s.AppsV1Api);
const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
const ns = `testenv-${Date.now().toString(36)}`;

beforeAll(async () => {
  await core.createNamespace({ body: { metadata: { name: ns } } });
});

afterAll(async () => {
  await core.deleteNamespace({ name: ns }).catch(() => {});
});

describe('test control plane', () => {
  it('serves the pinned Kubernetes version with an admin identity', async () => {
    const version = await kc.makeApiClient(k8s.VersionApi).getCode();
    expect(version.gitVersion).toMatch(/^v1\.34\.\d+$/);
    const review = await kc.makeApiClient(k8s.AuthorizationV1Api).createSelfSubjectAccessReview({
      body: { spec: { resourceAttributes: { verb: '*', resource: '*', group: '*' } } },
    });
    expect(review.status?.allowed).toBe(true);
  });

  it('runs kube-controller-manager: a Deployment gets its ReplicaSet and Pods', async () => {
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: { containers: [{ name: 'web', image: 'registry.invalid/web:1' }] },
          },
        },
      },
    });
    const rs = await eventually(async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace: ns, labelSelector: 'app=web' });
      return list.items.length === 1 ? list.items[0] : undefined;
    });
    expect(rs.metadata?.ownerReferences?.[0]).toMatchObject({
      kind: 'Deployment',
      name: 'web',
      controller: true,
    });
    const pods = await eventually(async () => {
      const list = await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' });
      return list.items.length === 2 ? list.items : undefined;
    });
    // No kubelet and no scheduler: the pods exist but stay Pending.
    expect(pods.every((p) => p.status?.phase === 'Pending')).toBe(true);
  });

  it('delivers watch events for add, update and delete', async () => {
    const events: Array<[string, string | undefined]> = [];
    const watch = new k8s.Watch(kc);
    const ac = await watch.watch(
      `/api/v1/namespaces/${ns}/configmaps`,
      { labelSelector: 'watched=yes' },
      (phase, obj: k8s.V1ConfigMap) => events.push([phase, obj.data?.['v']]),
      () => {},
    );
    try {
      const cm = { metadata: { name: 'watched', labels: { watched: 'yes' } }, data: { v: '1' } };
      await core.createNamespacedConfigMap({ namespace: ns, body: cm });
      await core.replaceNamespacedConfigMap({
        name: 'watched',
        namespace: ns,
        body: { ...cm, data: { v: '2' } },
      });
      await core.deleteNamespacedConfigMap({ name: 'watched', namespace: ns });
      await eventually(async () => events.length >= 3);
      expect(events).toEqual([
        ['ADDED', '1'],
        ['MODIFIED', '2'],
        ['DELETED', '2'],
      ]);
    } finally {
      ac.abort();
    }
  });

  it('server-side apply keeps fields owned by another field manager', async () => {
    const base = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'shared', namespace: ns } };
    await objects.patch(
      { ...base, data: { a: 'from-crema' } },
      undefined,
      undefined,
      'crema-operator',
      true,
      k8s.PatchStrategy.ServerSideApply,
    );
    await objects.patch(
      { ...base, data: { b: 'from-sre' } },
      undefined,
      undefined,
      'sre-tool',
      true,
      k8s.PatchStrategy.ServerSideApply,
    );
    // crema-operator re-applies its intent; sre-tool's field must survive.
    const after = await objects.patch<k8s.V1ConfigMap>(
      { ...base, data: { a: 'from-crema-v2' } } as k8s.V1ConfigMap,
      undefined,
      undefined,
      'crema-operator',
      true,
      k8s.PatchStrategy.ServerSideApply,
    );
    expect(after.data).toEqual({ a: 'from-crema-v2', b: 'from-sre' });
    const managers = after.metadata?.managedFields?.map((m) => m.manager).sort();
    expect(managers).toEqual(['crema-operator', 'sre-tool']);
  });

  it('garbage-collects a dependent when its owner is deleted', async () => {
    const owner = await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'owner' } },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: {
        metadata: {
          name: 'dependent',
          ownerReferences: [
            { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata!.uid! },
          ],
        },
      },
    });
    await core.deleteNamespacedConfigMap({ name: 'owner', namespace: ns });
    await eventually(async () => {
      try {
        await core.readNamespacedConfigMap({ name: 'dependent', namespace: ns });
        return false;
      } catch (err) {
        return (err as { code?: number }).code === 404;
      }
    });
  });
});

describe('test redis-server', () => {
  it('is a real Redis', async () => {
    const redis = new Redis(inject('redisUrl'));
    try {
      await redis.set('testenv:probe', 'ok');
      expect(await redis.get('testenv:probe')).toBe('ok');
      expect(await redis.info('server')).toMatch(/redis_version:\d+\./);
    } finally {
      redis.disconnect();
    }
  });
});
