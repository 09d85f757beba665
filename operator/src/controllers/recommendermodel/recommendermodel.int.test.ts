/**
 * The RecommenderModel controller against the real API server and controller-manager:
 * children created with the specified fields, updates followed without touching other
 * managers' fields, status from the cluster, garbage collection on delete, and zero writes on
 * a no-op resync (counted from the API server's audit log).
 *
 * Control plane only, no kubelet: `simulatePodsReady` patches pod status to Running/Ready so the ReplicaSet
 * and Deployment controllers report ready replicas, as they would with real pods.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { RunningOperator } from '../../operator.js';
import { FIELD_MANAGER } from '../../runtime/apply.js';
import {
  KubeApiError,
  RESOURCES,
  resourcePath,
  type KubeClient,
  type KubeList,
  type KubeObject,
} from '../../runtime/kube.js';
import { auditedWrites, eventually, simulatePodsReady } from '../../../test/helpers.js';
import { startOperatorForTest, type OperatorTestEnv } from '../../../test/operator.js';
import type { RecommenderModel } from './types.js';

const ns = `rm-${Date.now().toString(36)}`;
const SHA1 = 'a'.repeat(64);
const SHA2 = 'b'.repeat(64);
let client: KubeClient;
let op: RunningOperator;
let env: OperatorTestEnv;

type Obj = KubeObject & {
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  data?: Record<string, string>;
};

const get = (r: Parameters<typeof resourcePath>[0], name: string) =>
  client.request<Obj>('GET', resourcePath(r, ns, name));
const getModel = (name: string) =>
  client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, name));
const condition = (m: RecommenderModel, type: string) => m.status?.conditions?.find((c) => c.type === type);

function model(name: string, sha = SHA1, serving: Record<string, unknown> = {}): RecommenderModel {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    metadata: { name, namespace: ns },
    spec: {
      model: { uri: `file:///models/${name}.onnx`, sha256: sha, task: 'drink-ranking' },
      serving: { minReplicas: 2, maxReplicas: 6, ...serving },
    },
  } as RecommenderModel;
}

beforeAll(async () => {
  env = await startOperatorForTest({
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    operator: { resyncMs: 1500 },
  });
  client = env.client;
  op = env.op;
});

afterAll(() => env?.stop());

describe('RecommenderModel controller (control plane only: pod readiness simulated)', () => {
  it('creates every child with the specified fields and owner references', async () => {
    const created = await client.request<RecommenderModel>(
      'POST',
      resourcePath(RESOURCES.recommenderModel, ns),
      {
        body: model('drinks', SHA1, { minReplicas: 3, maxReplicas: 9, port: 9090 }),
      },
    );
    const deploy = await eventually(
      () => get(RESOURCES.deployment, 'drinks-stable').catch(() => undefined),
      20_000,
      'deployment',
    );
    // Children are applied one after another: wait for the last ones too before reading them.
    for (const [r, child] of [
      [RESOURCES.hpa, 'drinks'],
      [RESOURCES.service, 'drinks'],
      [RESOURCES.pdb, 'drinks'],
      [RESOURCES.configMap, 'drinks-model'],
    ] as const)
      await eventually(() => get(r, child).catch(() => undefined), 20_000, `${r.kind} ${child}`);
    const spec = deploy.spec as {
      replicas?: number;
      selector: { matchLabels: Record<string, string> };
      template: {
        metadata: { annotations: Record<string, string> };
        spec: { containers: Array<Record<string, unknown>> };
      };
    };
    expect(spec.selector.matchLabels).toEqual({ 'crema.dev/model': 'drinks', 'crema.dev/track': 'stable' });
    expect(spec.template.metadata.annotations['crema.dev/model-sha256']).toBe(SHA1);
    const container = spec.template.spec.containers[0]!;
    expect(container['image']).toBe('crema/serving:0.1.0');
    expect(container['ports']).toEqual([expect.objectContaining({ containerPort: 9090 })]);
    // The model is fetched and checked by the init container, then loaded from its volume.
    expect(container['env']).toEqual(
      expect.arrayContaining([
        { name: 'CREMA_RANKING_MODEL_SHA256', value: SHA1 },
        { name: 'CREMA_RANKING_MODEL_URI', value: 'file:///var/lib/crema/models/drink-ranking.onnx' },
        { name: 'REDIS_URL', value: 'redis://crema-redis.crema-system.svc:6379' },
      ]),
    );
    const init = (spec.template.spec as { initContainers?: Array<{ env: unknown[] }> }).initContainers?.[0];
    expect(init?.env).toEqual(
      expect.arrayContaining([
        { name: 'CREMA_FETCH_URI', value: 'file:///models/drinks.onnx' },
        { name: 'CREMA_FETCH_SHA256', value: SHA1 },
      ]),
    );
    // The HPA owns replicas: the operator's applied configuration must not contain them.
    const ours = deploy.metadata?.managedFields?.find((m) => m.manager === FIELD_MANAGER);
    expect(ours?.operation).toBe('Apply');
    expect(JSON.stringify(ours?.fieldsV1)).not.toContain('f:replicas');

    const hpa = await get(RESOURCES.hpa, 'drinks');
    expect(hpa.spec).toMatchObject({
      minReplicas: 3,
      maxReplicas: 9,
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'drinks-stable' },
    });
    const svc = await get(RESOURCES.service, 'drinks');
    expect(svc.spec).toMatchObject({
      selector: { 'crema.dev/model': 'drinks', 'crema.dev/track': 'stable' },
    });
    const pdb = await get(RESOURCES.pdb, 'drinks');
    expect(pdb.spec).toMatchObject({ maxUnavailable: 1 });
    const cm = await get(RESOURCES.configMap, 'drinks-model');
    expect(JSON.parse(cm.data!['model.json']!)).toMatchObject({
      uri: 'file:///models/drinks.onnx',
      sha256: SHA1,
    });
    for (const child of [deploy, hpa, svc, pdb, cm]) {
      expect(child.metadata?.ownerReferences).toEqual([
        expect.objectContaining({
          kind: 'RecommenderModel',
          name: 'drinks',
          uid: created.metadata!.uid,
          controller: true,
        }),
      ]);
    }
  });

  it('reports Progressing until pods are ready, then Ready with the ready replica count', async () => {
    const waiting = await eventually(async () => {
      const m = await getModel('drinks');
      return m.status?.observedGeneration === m.metadata?.generation && condition(m, 'Ready') ? m : undefined;
    });
    expect(waiting.status?.stable).toMatchObject({ modelSha: SHA1, revision: 1 });
    expect(condition(waiting, 'Ready')?.status).toBe('False');
    expect(waiting.status?.phase).toBe('Progressing');

    // The HPA controller scales the Deployment to minReplicas; the stand-in kubelet readies the pods.
    const ready = await eventually(
      async () => {
        await simulatePodsReady(client, ns, 'crema.dev/model=drinks');
        const m = await getModel('drinks');
        return condition(m, 'Ready')?.status === 'True' && m.status?.readyReplicas === 3 ? m : undefined;
      },
      45_000,
      'Ready=True with 3 ready replicas',
    );
    expect(ready.status?.phase).toBe('Ready');
    expect(ready.status?.readyReplicas).toBe(3);
    expect(condition(ready, 'Ready')).toMatchObject({
      reason: 'Serving',
      observedGeneration: ready.metadata?.generation,
    });
    const events = await client.request<KubeList<KubeObject & { reason?: string }>>(
      'GET',
      `/api/v1/namespaces/${ns}/events`,
      {
        query: { fieldSelector: 'involvedObject.name=drinks' },
      },
    );
    expect(events.items.map((e) => e.reason)).toContain('Ready');
  });

  it('sends zero writes on a no-op resync', async () => {
    // Let everything settle, then watch the audit log across several resync periods.
    await eventually(async () => op.manager.queueDepth('recommendermodel') === 0, 10_000);
    await new Promise((r) => setTimeout(r, 1500));
    const before = await auditedWrites(inject('auditLogPath'), 'crema-operator', ns);
    const reconcilesBefore = await reconcileCount();
    await new Promise((r) => setTimeout(r, 4000));
    const after = await auditedWrites(inject('auditLogPath'), 'crema-operator', ns);
    expect(await reconcileCount()).toBeGreaterThan(reconcilesBefore + 1); // resyncs did run
    expect(after.slice(before.length).map((e) => `${e.verb} ${e.requestURI}`)).toEqual([]);
  });

  it('follows spec changes, records the new revision, and keeps other managers’ fields', async () => {
    // An SRE tool owns an annotation and a label on the Deployment and the Service.
    for (const r of [RESOURCES.deployment, RESOURCES.service]) {
      const name = r === RESOURCES.deployment ? 'drinks-stable' : 'drinks';
      await client.request('PATCH', resourcePath(r, ns, name), {
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'sre-tool' },
        body: {
          apiVersion: r.group ? `${r.group}/${r.version}` : r.version,
          kind: r.kind,
          metadata: {
            name,
            namespace: ns,
            annotations: { 'sre.example/pager': 'team-coffee' },
            labels: { cost: 'rush' },
          },
        },
      });
    }
    const current = await getModel('drinks');
    await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, 'drinks'), {
      contentType: 'application/merge-patch+json',
      body: { spec: { model: { sha256: SHA2 }, serving: { maxReplicas: 12 } } },
    });
    const hpa = await eventually(async () => {
      const h = await get(RESOURCES.hpa, 'drinks');
      return (h.spec as { maxReplicas: number }).maxReplicas === 12 ? h : undefined;
    });
    expect(hpa.spec).toMatchObject({ minReplicas: 3 });
    const deploy = await eventually(async () => {
      const d = await get(RESOURCES.deployment, 'drinks-stable');
      const ann = (d.spec as { template: { metadata: { annotations: Record<string, string> } } }).template
        .metadata.annotations;
      return ann['crema.dev/model-sha256'] === SHA2 ? d : undefined;
    });
    expect(deploy.metadata?.annotations?.['sre.example/pager']).toBe('team-coffee');
    expect(deploy.metadata?.labels?.['cost']).toBe('rush');
    const svc = await get(RESOURCES.service, 'drinks');
    expect(svc.metadata?.annotations?.['sre.example/pager']).toBe('team-coffee');

    const updated = await eventually(async () => {
      const m = await getModel('drinks');
      return m.status?.stable?.revision === 2 && m.status.observedGeneration === m.metadata?.generation
        ? m
        : undefined;
    });
    expect(updated.metadata?.generation).toBeGreaterThan(current.metadata!.generation!);
    expect(updated.status?.stable?.modelSha).toBe(SHA2);
    expect(updated.status?.history?.[0]).toMatchObject({
      revision: 1,
      modelSha: SHA1,
      reason: expect.stringMatching(/Superseded/),
    });
  });

  it('serves /healthz, /readyz and Prometheus metrics about its work', async () => {
    const base = `http://127.0.0.1:${op.healthPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(
      /crema_operator_reconcile_total\{controller="recommendermodel",result="success"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /crema_operator_reconcile_duration_seconds_count\{controller="recommendermodel"\} [1-9]/,
    );
    expect(metrics).toContain('crema_operator_workqueue_depth{controller="recommendermodel"}');
    expect(metrics).toMatch(
      /crema_operator_writes_total\{controller="recommendermodel",kind="Deployment"\} [1-9]/,
    );
    expect(metrics).toMatch(/crema_operator_api_requests\{method="PATCH"\} [1-9]/);
  });

  it('accepts any Kubernetes quantity, renders it as written and then leaves the canonical form alone', async () => {
    await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
      // One replica, the HPA's minimum: its first sync (15 s in) then changes nothing.
      body: model('sized', SHA1, {
        minReplicas: 1,
        maxReplicas: 2,
        resources: { requests: { cpu: '0.5', memory: '1.5Gi' }, limits: { memory: '2G', cpu: '1500m' } },
      }),
    });
    const deploy = await eventually(
      () => get(RESOURCES.deployment, 'sized-stable').catch(() => undefined),
      20_000,
    );
    const pod = deploy.spec!['template'] as {
      spec: { containers: Array<{ name: string; resources: unknown }> };
    };
    // The API server stores the canonical form.
    expect(pod.spec.containers.find((c) => c.name === 'serving')!.resources).toEqual({
      requests: { cpu: '500m', memory: '1536Mi' },
      limits: { memory: '2G', cpu: '1500m' },
    });
    const m = await eventually(async () => {
      const x = await getModel('sized');
      return x.status?.observedGeneration === x.metadata?.generation ? x : undefined;
    });
    expect(condition(m, 'Degraded')).toMatchObject({ status: 'False' });
    // Resyncs compare amounts, not spellings: no write.
    await eventually(async () => op.manager.queueDepth('recommendermodel') === 0, 10_000);
    await new Promise((r) => setTimeout(r, 1500));
    const before = (await auditedWrites(inject('auditLogPath'), 'crema-operator', ns)).length;
    await new Promise((r) => setTimeout(r, 3500));
    const after = await auditedWrites(inject('auditLogPath'), 'crema-operator', ns);
    expect(after.slice(before).map((e) => `${e.verb} ${e.requestURI}`)).toEqual([]);
  });

  it('a spec it cannot render is Degraded, naming the field, and nothing running is touched', async () => {
    const before = await get(RESOURCES.deployment, 'sized-stable');
    await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, 'sized'), {
      contentType: 'application/merge-patch+json',
      body: { spec: { serving: { resources: { requests: { memory: '4Gi' } } } } },
    });
    const m = await eventually(async () => {
      const x = await getModel('sized');
      return condition(x, 'Degraded')?.reason === 'InvalidSpec' ? x : undefined;
    }, 20_000);
    expect(condition(m, 'Degraded')).toMatchObject({
      status: 'True',
      message:
        'spec.serving.resources.requests.memory (4Gi) is above spec.serving.resources.limits.memory (2G)',
    });
    expect((await get(RESOURCES.deployment, 'sized-stable')).metadata?.resourceVersion).toBe(
      before.metadata?.resourceVersion,
    );
    // And the API server refuses what is no quantity at all, naming the field.
    const refused = await client
      .request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, 'sized'), {
        contentType: 'application/merge-patch+json',
        body: { spec: { serving: { resources: { requests: { memory: '1.5GB' } } } } },
      })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(KubeApiError);
    expect((refused as KubeApiError).message).toMatch(/spec.serving.resources.requests.memory/);
    await client.request('DELETE', resourcePath(RESOURCES.recommenderModel, ns, 'sized'));
  });

  it('garbage-collects every child when the model is deleted', { timeout: 120_000 }, async () => {
    await client.request('DELETE', resourcePath(RESOURCES.recommenderModel, ns, 'drinks'));
    for (const [r, name] of [
      [RESOURCES.deployment, 'drinks-stable'],
      [RESOURCES.service, 'drinks'],
      [RESOURCES.hpa, 'drinks'],
      [RESOURCES.pdb, 'drinks'],
      [RESOURCES.configMap, 'drinks-model'],
    ] as const) {
      await eventually(
        () =>
          get(r, name).then(
            () => false,
            (e: unknown) => e instanceof KubeApiError && e.notFound,
          ),
        // The garbage collector learns about a new CRD's kind on its discovery resync (30 s).
        75_000,
        `${r.kind} ${name} deleted`,
      );
    }
  });
});

async function reconcileCount(): Promise<number> {
  const m = await op.metrics.reconciles.get();
  return m.values.reduce((s, v) => s + v.value, 0);
}
