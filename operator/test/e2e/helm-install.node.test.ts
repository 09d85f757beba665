/**
 * `helm install` of charts/crema on the real node (root; Crema's images built and imported by
 * hack/testenv/cluster.ts): the chart's CRDs, RBAC and two-replica operator Deployment in
 * crema-system, which enforces PodSecurity "restricted"; both operator pods Ready, one holding the
 * Lease; the examples of manifests/examples applied into crema-demo and reconciled into running,
 * Ready serving pods (the models' files served from manifests/models/artifacts); then
 * `helm upgrade` with a changed value rolls the operator pods one at a time while the Lease object
 * stays (same uid, a new holder) and no model loses its state (same stable revision, same serving
 * pods, no restarts, still Ready).
 *
 * Prints `[node-e2e] {...}` lines with the time from `helm install` to the operator Ready and to
 * the first model Ready, and the longest time the Lease had no live holder during the upgrade.
 */
import { cp, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { startLocalCluster, type LocalCluster } from '../../../hack/testenv/cluster.js';
import { ensureNamespace } from '../../../hack/testenv/host-services.js';
import { CHART_DIR, ensureHelm, helmRun } from '../../../hack/testenv/helm.js';
import type { RecommenderModel } from '../../src/api/v1alpha1/index.js';
import {
  KubeApiError,
  RESOURCES,
  resourcePath,
  type KubeList,
  type KubeObject,
} from '../../src/runtime/kube.js';
import { eventually } from '../helpers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SYSTEM = 'crema-system';
const DEMO = 'crema-demo';
const RELEASE = 'crema';

let cluster: LocalCluster;
let artifacts: string;
let helm: string;
let helmEnv: NodeJS.ProcessEnv;

const log = (what: Record<string, unknown>) => console.log(`[node-e2e] ${JSON.stringify(what)}`);

interface Lease extends KubeObject {
  spec?: {
    holderIdentity?: string;
    renewTime?: string;
    leaseDurationSeconds?: number;
    leaseTransitions?: number;
  };
}
interface PodObj extends KubeObject {
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string }>;
    containerStatuses?: Array<{ name: string; restartCount?: number; ready?: boolean }>;
  };
}
interface DeploymentObj extends KubeObject {
  spec?: { replicas?: number };
  status?: {
    readyReplicas?: number;
    updatedReplicas?: number;
    replicas?: number;
    observedGeneration?: number;
  };
}

const helmCmd = async (args: string[]) => {
  const res = await helmRun(helm, args, { env: helmEnv });
  if (res.code !== 0) throw new Error(`helm ${args[0]} failed: ${res.stderr}`);
  return res;
};
const get = <T>(path: string) => cluster.client.request<T>('GET', path);
const lease = () => get<Lease>(resourcePath(RESOURCES.lease, SYSTEM, 'crema-operator'));
const operatorPods = async () =>
  (
    await cluster.client.request<KubeList<PodObj>>('GET', resourcePath(RESOURCES.pod, SYSTEM), {
      query: { labelSelector: 'app.kubernetes.io/name=crema-operator' },
    })
  ).items;
const isReady = (p: PodObj) => !!p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
const modelPods = async () =>
  (
    await cluster.client.request<KubeList<PodObj>>('GET', resourcePath(RESOURCES.pod, DEMO), {
      query: { labelSelector: 'crema.dev/model' },
    })
  ).items;
const models = async () =>
  (
    await cluster.client.request<KubeList<RecommenderModel>>(
      'GET',
      resourcePath(RESOURCES.recommenderModel, DEMO),
    )
  ).items;
const modelReady = (m: RecommenderModel) =>
  m.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

/** Server-side applies every document of a manifest file into `namespace`; returns "Kind/name"s. */
async function applyFile(file: string, namespace: string): Promise<string[]> {
  const applied: string[] = [];
  for (const doc of parseAllDocuments(await readFile(file, 'utf8'))) {
    const obj = doc.toJSON() as (KubeObject & { apiVersion: string; kind: string }) | null;
    if (!obj) continue;
    const [group, version] = obj.apiVersion.split('/') as [string, string];
    const path = `/apis/${group}/${version}/namespaces/${namespace}/${obj.kind.toLowerCase()}s/${obj.metadata!.name}`;
    await cluster.client.request('PATCH', path, {
      body: { ...obj, metadata: { ...obj.metadata, namespace } },
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager: 'crema-e2e', force: true },
    });
    applied.push(`${obj.kind}/${obj.metadata!.name}`);
  }
  return applied;
}

/** Operator Deployment fully rolled out: every replica updated and Ready, no old pods left. */
async function operatorRolledOut(): Promise<boolean> {
  const d = await get<DeploymentObj>(resourcePath(RESOURCES.deployment, SYSTEM, `${RELEASE}-operator`));
  const pods = await operatorPods();
  return (
    d.status?.observedGeneration === d.metadata?.generation &&
    d.status?.updatedReplicas === 2 &&
    d.status?.readyReplicas === 2 &&
    d.status?.replicas === 2 &&
    pods.length === 2 &&
    pods.every(isReady)
  );
}

beforeAll(async () => {
  artifacts = await mkdtemp(join(tmpdir(), 'crema-helm-e2e-'));
  await cp(join(root, 'manifests/models/artifacts'), artifacts, { recursive: true });
  helmEnv = {
    HELM_CACHE_HOME: join(artifacts, '.helm/cache'),
    HELM_CONFIG_HOME: join(artifacts, '.helm/config'),
    HELM_DATA_HOME: join(artifacts, '.helm/data'),
  };
  helm = (await ensureHelm()).helm;
  cluster = await startLocalCluster({ artifactsDir: artifacts, log: () => {} });
  helmEnv['KUBECONFIG'] = cluster.kubeconfigPath;
  // The local cluster installs crds/ by itself (server-side apply, no release): remove them so the
  // chart installs its own, as on a fresh cluster.
  for (const f of (await readdir(join(root, 'crds'))).filter((x) => x.endsWith('.yaml'))) {
    const name = f.slice(0, -'.yaml'.length);
    const path = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`;
    await cluster.client.request('DELETE', path);
    await eventually(
      () =>
        get(path).then(
          () => false,
          (e: unknown) => e instanceof KubeApiError && e.status === 404,
        ),
      60_000,
      `CRD ${name} deleted`,
    );
  }
  // The release namespace enforces PodSecurity "restricted": the operator pods must comply.
  await ensureNamespace(cluster.client, SYSTEM);
  await cluster.client.request('PATCH', `/api/v1/namespaces/${SYSTEM}`, {
    contentType: 'application/merge-patch+json',
    body: { metadata: { labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } } },
  });
  await ensureNamespace(cluster.client, DEMO);
}, 1_200_000);

afterAll(async () => {
  await cluster?.stop();
  if (artifacts) await rm(artifacts, { recursive: true, force: true });
}, 180_000);

describe('helm install on the real node', () => {
  let installedAt = 0;

  it('installs CRDs, RBAC and the two-replica operator; both pods Ready under PodSecurity restricted, one leads', async () => {
    installedAt = Date.now();
    await helmCmd([
      'install',
      RELEASE,
      CHART_DIR,
      '--namespace',
      SYSTEM,
      // Small requests: two cores run the whole cluster here.
      '--set',
      'resources.requests.cpu=50m,resources.requests.memory=128Mi',
    ]);
    await eventually(operatorRolledOut, 180_000, 'both operator pods Ready');
    const operatorReadyMs = Date.now() - installedAt;
    const pods = await operatorPods();
    const held = await eventually(
      async () => {
        const l = await lease();
        return pods.some((p) => p.metadata!.name === l.spec?.holderIdentity) ? l : undefined;
      },
      30_000,
      'the Lease held by an operator pod',
    );
    expect(held.spec?.holderIdentity).toBeTruthy();
    const crds = await get<KubeList<KubeObject>>('/apis/apiextensions.k8s.io/v1/customresourcedefinitions');
    const ours = crds.items.filter((c) => c.metadata!.name!.endsWith('.crema.dev'));
    expect(ours).toHaveLength(3);
    for (const c of ours) expect(c.metadata!.annotations?.['helm.sh/resource-policy']).toBe('keep');
    log({ test: 'helm install', operatorReadyMs });
  });

  it('reconciles manifests/examples into running, Ready serving pods', async () => {
    const applied: string[] = [];
    for (const f of (await readdir(join(root, 'manifests/examples'))).sort())
      applied.push(...(await applyFile(join(root, 'manifests/examples', f), DEMO)));
    expect(applied).toEqual(expect.arrayContaining(['RecommenderModel/drinks', 'RecommenderModel/addons']));
    const first = await eventually(
      async () => (await models()).find(modelReady),
      300_000,
      'a first model Ready',
    );
    const firstModelReadyMs = Date.now() - installedAt;
    await eventually(
      async () => {
        const ms = await models();
        return ms.length >= 2 && ms.every(modelReady);
      },
      300_000,
      'every example model Ready',
    );
    const allModelsReadyMs = Date.now() - installedAt;
    const pods = await modelPods();
    expect(pods.filter((p) => p.status?.phase === 'Running' && isReady(p)).length).toBeGreaterThanOrEqual(2);
    log({
      test: 'examples reconciled',
      firstModel: first.metadata?.name,
      installToFirstModelReadyMs: firstModelReadyMs,
      installToAllModelsReadyMs: allModelsReadyMs,
      servingPods: pods.length,
    });
  });

  it('helm upgrade with a changed value rolls the operator without losing the Lease or any model state', async () => {
    const leaseBefore = await lease();
    const podsBefore = new Set((await operatorPods()).map((p) => p.metadata!.uid));
    const snapshot = async () =>
      Object.fromEntries(
        (await models()).map((m) => [
          m.metadata!.name,
          { stable: m.status?.stable?.modelSha, generation: m.metadata!.generation, ready: modelReady(m) },
        ]),
      );
    const servingPods = async () =>
      Object.fromEntries(
        (await modelPods()).map((p) => [
          p.metadata!.uid,
          (p.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0),
        ]),
      );
    const modelsBefore = await snapshot();
    const servingBefore = await servingPods();

    // Watch the Lease through the roll: how long was it without a live holder?
    let watching = true;
    let longestGapMs = 0;
    let gapSince: number | undefined;
    const holders = new Set<string>();
    const watcher = (async () => {
      while (watching) {
        const l = await lease().catch(() => undefined);
        const now = Date.now();
        const renew = l?.spec?.renewTime ? Date.parse(l.spec.renewTime) : 0;
        const live = !!l?.spec?.holderIdentity && renew + (l.spec.leaseDurationSeconds ?? 15) * 1000 > now;
        if (l?.spec?.holderIdentity) holders.add(l.spec.holderIdentity);
        if (!live) gapSince ??= now;
        else if (gapSince !== undefined) {
          longestGapMs = Math.max(longestGapMs, now - gapSince);
          gapSince = undefined;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    const t0 = Date.now();
    await helmCmd([
      'upgrade',
      RELEASE,
      CHART_DIR,
      '--namespace',
      SYSTEM,
      '--reuse-values',
      '--set',
      'operator.concurrency=8',
    ]);
    await eventually(
      async () =>
        (await operatorRolledOut()) && (await operatorPods()).every((p) => !podsBefore.has(p.metadata!.uid)),
      240_000,
      'the operator rolled to new pods',
    );
    const newPods = (await operatorPods()).map((p) => p.metadata!.name!);
    const leaseAfter = await eventually(
      async () => {
        const l = await lease();
        return newPods.includes(l.spec?.holderIdentity ?? '') ? l : undefined;
      },
      60_000,
      'a new operator pod holding the Lease',
    );
    watching = false;
    await watcher;
    const rollMs = Date.now() - t0;

    // The same Lease object, handed over (not deleted and recreated).
    expect(leaseAfter.metadata!.uid).toBe(leaseBefore.metadata!.uid);
    expect(leaseAfter.spec!.leaseTransitions ?? 0).toBeGreaterThan(leaseBefore.spec!.leaseTransitions ?? 0);
    // The new operator reconciled the models again and changed nothing: same revisions, same
    // serving pods, no restarts, still Ready.
    const dep = await get<{ spec: { template: { spec: { containers: Array<{ env: unknown[] }> } } } }>(
      resourcePath(RESOURCES.deployment, SYSTEM, `${RELEASE}-operator`),
    );
    expect(dep.spec.template.spec.containers[0]!.env).toContainEqual({
      name: 'CREMA_CONCURRENCY',
      value: '8',
    });
    await new Promise((r) => setTimeout(r, 10_000));
    expect(await snapshot()).toEqual(modelsBefore);
    // Every serving pod from before is still there, never restarted (the HPA may add pods, but
    // nothing the upgrade did replaced one).
    const servingAfter = await servingPods();
    for (const [uid, restarts] of Object.entries(servingBefore)) expect(servingAfter[uid]).toBe(restarts);
    log({ test: 'helm upgrade', rollMs, longestLeaseGapMs: longestGapMs, holders: [...holders] });
    // A hand-over by release on SIGTERM, not by expiry: never without a holder for a lease duration.
    expect(longestGapMs).toBeLessThan((leaseBefore.spec?.leaseDurationSeconds ?? 15) * 1000);
  });
});
