/**
 * `npm start`: Crema's main job, with real pods.
 *
 * Without a reachable cluster in KUBECONFIG (the default on a fresh machine) it starts a local
 * one-node cluster (hack/testenv: control plane + a real node; needs root) and then:
 *   1. builds Crema's images here (hack/images) and imports them into the node's runtime;
 *   2. exposes the host's redis-server and an artifact store for manifests/models/artifacts
 *      to pods as Services crema-system/crema-redis and crema-system/crema-models;
 *   3. installs the CRDs, the operator's RBAC and its two-replica Deployment (image
 *      crema/operator), and runs the demo feature job (image crema/feature-jobs) into Redis;
 *   4. applies manifests/examples/ into the `crema-demo` namespace: the operator rolls out
 *      serving pods (image crema/serving) that fetch and verify the trained models;
 *   5. waits until the models are Ready, asks the drinks Service for a recommendation, and
 *      prints that `curl` with the `kubectl` commands to watch everything.
 * Ctrl-C stops everything it started and removes its files.
 *
 * With a reachable cluster it installs the CRDs, runs the operator in this process and applies
 * the examples; that cluster must be able to pull the crema images and reach Redis and the
 * model URIs (see docs/operator.md).
 */
import * as k8s from '@kubernetes/client-node';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { KEYS } from '../contracts/features.js';
import { installCrds } from '../operator/src/install.js';
import { startOperator } from '../operator/src/operator.js';
import {
  apiVersionOf,
  createKubeClient,
  KubeApiError,
  resourcePath,
  RESOURCES,
  type KubeClient,
  type KubeObject,
  type ResourceDef,
} from '../operator/src/runtime/kube.js';
import { CLUSTER_SERVICES, startLocalCluster } from './testenv/cluster.js';
import { ensureNamespace } from './testenv/host-services.js';

const DEMO_NAMESPACE = 'crema-demo';
const SYSTEM_NAMESPACE = 'crema-system';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const EXAMPLES_DIR = join(ROOT, 'manifests', 'examples');
const ARTIFACTS_DIR = join(ROOT, 'manifests', 'models', 'artifacts');

const t0 = Date.now();
const say = (m: string) => console.log(`[crema] ${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s ${m}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The kubeconfig of a reachable existing cluster, or undefined. */
async function reachableCluster(): Promise<string | undefined> {
  const path = process.env['KUBECONFIG'] || join(homedir(), '.kube', 'config');
  if (!existsSync(path)) return undefined;
  try {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(path);
    const client = await createKubeClient(kc, { userAgent: 'crema-start' });
    try {
      await Promise.race([
        client.request('GET', '/version'),
        new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 4000)),
      ]);
      return path;
    } finally {
      client.close();
    }
  } catch (err) {
    say(
      `the cluster in ${path} is not reachable (${err instanceof Error ? err.message : String(err)}); starting a local one`,
    );
    return undefined;
  }
}

const RESOURCE_BY_KIND = new Map<string, ResourceDef>(
  [
    ...Object.values(RESOURCES),
    { group: 'batch', version: 'v1', kind: 'Job', plural: 'jobs', namespaced: true },
    {
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'ClusterRole',
      plural: 'clusterroles',
      namespaced: false,
    },
    {
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      kind: 'ClusterRoleBinding',
      plural: 'clusterrolebindings',
      namespaced: false,
    },
    { group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true },
  ].map((r) => [`${apiVersionOf(r)}/${r.kind}`, r]),
);

/** Server-side applies every document of `file` (into `namespace` when given). */
async function applyFile(client: KubeClient, file: string, namespace?: string): Promise<string[]> {
  const applied: string[] = [];
  for (const doc of parseAllDocuments(await readFile(file, 'utf8'))) {
    const obj = doc.toJSON() as KubeObject | null;
    if (!obj?.kind) continue;
    const r = RESOURCE_BY_KIND.get(`${obj.apiVersion}/${obj.kind}`);
    if (!r) throw new Error(`${file}: no resource known for ${obj.apiVersion} ${obj.kind}`);
    const ns = r.namespaced ? (namespace ?? obj.metadata?.namespace ?? 'default') : undefined;
    const name = obj.metadata!.name!;
    await client.request('PATCH', resourcePath(r, ns, name), {
      body: { ...obj, metadata: { ...obj.metadata, ...(ns ? { namespace: ns } : {}) } },
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager: 'crema-start', force: true },
    });
    applied.push(`${obj.kind}/${name}`);
  }
  return applied;
}

async function applyExamples(client: KubeClient): Promise<string[]> {
  await ensureNamespace(client, DEMO_NAMESPACE);
  const applied: string[] = [];
  for (const file of (await readdir(EXAMPLES_DIR)).filter((f) => f.endsWith('.yaml')).sort())
    applied.push(...(await applyFile(client, join(EXAMPLES_DIR, file), DEMO_NAMESPACE)));
  return applied;
}

/** Creates Secret `namespace/name` with a random `token` unless it exists; returns the token. */
async function ensureTokenSecret(client: KubeClient, namespace: string, name: string): Promise<string> {
  const path = resourcePath(RESOURCE_BY_KIND.get('v1/Secret')!, namespace, name);
  try {
    const s = await client.request<{ data?: Record<string, string> }>('GET', path);
    return Buffer.from(s.data?.['token'] ?? '', 'base64').toString();
  } catch (err) {
    if (!(err instanceof KubeApiError && err.notFound)) throw err;
  }
  const token = randomBytes(24).toString('hex');
  await client.request('POST', `/api/v1/namespaces/${namespace}/secrets`, {
    body: { metadata: { name }, stringData: { token } },
  });
  return token;
}

/** Polls `check` every second until it returns a value, failing after `timeoutMs` with `what`. */
async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    await sleep(1000);
  }
}

interface ModelStatus {
  metadata?: { name?: string };
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
  };
}

/** Resolves when every RecommenderModel in the demo namespace is Ready; prints each change. */
async function waitModelsReady(client: KubeClient, timeoutMs: number): Promise<void> {
  const seen = new Map<string, string>();
  await waitFor('the example RecommenderModels to become Ready', timeoutMs, async () => {
    const list = await client.request<{ items: ModelStatus[] }>(
      'GET',
      resourcePath(RESOURCES.recommenderModel, DEMO_NAMESPACE),
    );
    for (const m of list.items) {
      const ready = m.status?.conditions?.find((c) => c.type === 'Ready');
      const line = `${m.status?.phase ?? 'Pending'}${ready?.status === 'True' ? '' : ready?.message ? ` (${ready.message})` : ''}`;
      if (seen.get(m.metadata!.name!) !== line) say(`  RecommenderModel ${m.metadata!.name}: ${line}`);
      seen.set(m.metadata!.name!, line);
    }
    const allReady =
      list.items.length > 0 &&
      list.items.every((m) => m.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    return allReady ? true : undefined;
  });
}

/** A user with stored batch features and a store, from Redis (written by the feature job). */
async function pickDemoUser(redisUrl: string): Promise<{ userId: string; storeId: string }> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  try {
    const version = await redis.get(KEYS.current);
    if (!version) throw new Error('no feature version in Redis: the feature job did not switch');
    const [, keys] = await redis.scan('0', 'MATCH', KEYS.user(version, '*'), 'COUNT', 500);
    const userId = keys[0]?.slice(KEYS.user(version, '').length);
    const storeId = (await redis.hkeys(KEYS.stores(version))).sort()[0];
    if (!userId || !storeId) throw new Error(`feature version ${version} has no users or stores`);
    return { userId, storeId };
  } finally {
    redis.disconnect();
  }
}

async function runLocal(): Promise<void> {
  say(
    'starting a local cluster: control plane + a real node (containerd, kubelet, kube-proxy, CoreDNS, metrics-server)…',
  );
  const cluster = await startLocalCluster({ artifactsDir: ARTIFACTS_DIR });
  const { client, kubeconfigPath, kubectl, node, images } = cluster;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: stopping the cluster and removing its files…`);
    await cluster.stop();
    process.exit(0);
  };
  process.removeAllListeners('SIGINT');
  process.removeAllListeners('SIGTERM');
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  say(
    `cluster ready (${((cluster.timings['cluster'] ?? 0) / 1000).toFixed(1)} s): node ${node.name} at ${node.ip}; ` +
      `images ${images.built ? 'built' : 'up to date'} and imported: ${images.images
        .map((i) => `${i.ref} (${(i.bytes / 1e6).toFixed(0)} MB)`)
        .join(', ')}`,
  );
  say(
    `the host's redis-server is ${CLUSTER_SERVICES.redisUrl}; manifests/models/artifacts is served at ${CLUSTER_SERVICES.artifactsUrl}`,
  );

  await ensureTokenSecret(client, SYSTEM_NAMESPACE, 'crema-operator-webhook');
  await ensureNamespace(client, DEMO_NAMESPACE);
  const adminToken = await ensureTokenSecret(client, DEMO_NAMESPACE, 'crema-serving-admin');
  for (const f of ['rbac.yaml', 'deployment.yaml'])
    await applyFile(client, join(ROOT, 'manifests', 'operator', f));
  say('applied the operator (manifests/operator): RBAC and a two-replica Deployment of crema/operator');
  await applyFile(client, join(ROOT, 'manifests', 'jobs', 'demo-features-job.yaml'));
  say('running the demo feature job (crema/feature-jobs): 20,000 synthetic users into Redis…');

  await waitFor('the operator Deployment to be available', 180_000, async () => {
    const d = await client.request<{ status?: { availableReplicas?: number } }>(
      'GET',
      resourcePath(RESOURCES.deployment, SYSTEM_NAMESPACE, 'crema-operator'),
    );
    return (d.status?.availableReplicas ?? 0) >= 1 ? true : undefined;
  });
  say('operator running (one leader, one standby)');
  await waitFor('the demo feature job to complete', 300_000, async () => {
    const j = await client.request<{ status?: { succeeded?: number; failed?: number } }>(
      'GET',
      resourcePath(RESOURCE_BY_KIND.get('batch/v1/Job')!, SYSTEM_NAMESPACE, 'crema-demo-features'),
    );
    if ((j.status?.failed ?? 0) > 0)
      say(
        `feature job: ${j.status?.failed} failed attempt(s); kubectl logs -n ${SYSTEM_NAMESPACE} job/crema-demo-features`,
      );
    return (j.status?.succeeded ?? 0) >= 1 ? true : undefined;
  });
  say('features written to Redis');

  const applied = await applyExamples(client);
  say(`applied ${applied.length} example resources into namespace ${DEMO_NAMESPACE}: ${applied.join(', ')}`);
  await waitModelsReady(client, 300_000);

  // A real, personalized recommendation through the model's Service (ClusterIP, kube-proxy).
  const svc = await client.request<{ spec: { clusterIP: string } }>(
    'GET',
    resourcePath(RESOURCES.service, DEMO_NAMESPACE, 'drinks'),
  );
  const { userId, storeId } = await pickDemoUser(cluster.redis.url);
  const body = JSON.stringify({ userId, storeId, context: { time: new Date().toISOString() }, limit: 3 });
  const url = `http://${svc.spec.clusterIP}/v1/recommendations`;
  const answer = await waitFor('a recommendation from the drinks Service', 60_000, async () => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const json = (await res.json()) as {
      fallback?: boolean;
      personalization?: string;
      modelRevision?: string;
      items?: Array<{ itemId: string }>;
    };
    return res.ok && json.fallback === false ? json : undefined;
  });
  say(
    `first real recommendation: personalization=${answer.personalization}, fallback=${answer.fallback}, model ${answer.modelRevision?.slice(0, 12)}, ` +
      `served by pods that fetched ${[...cluster.artifacts.served.keys()].join(', ')}`,
  );

  // `kubectl top` and the HPA read metrics-server; discovery (even `kubectl get crema`) waits for it.
  await waitFor('the metrics API (metrics-server)', 120_000, async () => {
    const a = await client.request<{ status?: { conditions?: Array<{ type: string; status: string }> } }>(
      'GET',
      '/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io',
    );
    return a.status?.conditions?.some((c) => c.type === 'Available' && c.status === 'True')
      ? true
      : undefined;
  });
  console.log(`
Crema is running on a local one-node cluster (everything above ran as real pods).

Get a personalized recommendation through the drinks Service:
  curl -s -X POST ${url} -H 'content-type: application/json' \\
    -d '${body}'

Watch it:
  export KUBECONFIG=${kubeconfigPath}
  ${kubectl} get crema -n ${DEMO_NAMESPACE}
  ${kubectl} get pods -n ${DEMO_NAMESPACE} -o wide
  ${kubectl} describe rm drinks -n ${DEMO_NAMESPACE}
  ${kubectl} logs -n ${SYSTEM_NAMESPACE} deploy/crema-operator -f
  ${kubectl} top pods -n ${DEMO_NAMESPACE}

Erase a user (admin token from Secret ${DEMO_NAMESPACE}/crema-serving-admin):
  curl -s -X DELETE http://${svc.spec.clusterIP}/v1/users/${userId} -H 'authorization: Bearer ${adminToken}'

Press Ctrl-C to stop everything (this also removes the cluster and its files).`);
  setInterval(() => {}, 1 << 30);
}

async function runOnCluster(kubeconfigPath: string): Promise<void> {
  say(`using the cluster in ${kubeconfigPath}`);
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const client = await createKubeClient(kc, { userAgent: 'crema-start' });
  say(`installed CRDs: ${(await installCrds(client)).join(', ')}`);
  const redisUrl = process.env['CREMA_SERVING_REDIS_URL'];
  if (!redisUrl)
    say('CREMA_SERVING_REDIS_URL is not set: models without spec.serving.redisUrl will be Degraded');
  const op = await startOperator({
    kubeconfigPath,
    healthPort: Number(process.env['CREMA_HEALTH_PORT'] ?? 0),
    healthHost: '127.0.0.1',
    leaseNamespace: 'default',
    ...(redisUrl ? { servingRedisUrl: redisUrl } : {}),
    log: (m) => console.log(`[operator] ${m}`),
  });
  const applied = await applyExamples(client);
  say(`applied ${applied.length} example resources into namespace ${DEMO_NAMESPACE}: ${applied.join(', ')}`);
  console.log(`
Crema's operator is running in this process against ${kubeconfigPath}. The serving pods need the
crema/serving image in a registry the cluster pulls from (npm run images builds it), Redis, and
the model URIs in manifests/examples reachable from the pods.
  operator health and metrics: http://127.0.0.1:${op.healthPort}/readyz  /metrics
  kubectl get crema -n ${DEMO_NAMESPACE}
  kubectl describe rm drinks -n ${DEMO_NAMESPACE}

Press Ctrl-C to stop the operator.`);
  const stop = async () => {
    await op.stop();
    client.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

const existing = await reachableCluster();
(existing ? runOnCluster(existing) : runLocal()).catch((err: unknown) => {
  console.error(`[crema] ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
