/**
 * `npm start`: Crema's main job on whatever cluster is at hand.
 *
 * 1. Uses the cluster in KUBECONFIG (or ~/.kube/config) if it answers within a few seconds;
 *    otherwise starts the local control plane (hack/testenv) and uses that.
 * 2. Installs the CRDs from crds/.
 * 3. Runs the operator in this process (leader election on, /healthz /readyz /metrics).
 * 4. Applies manifests/examples/ into the `crema-demo` namespace.
 * 5. Prints how to watch it with kubectl; Ctrl-C stops everything this command started.
 *
 * The local control plane has no kubelet, so in local mode a stand-in marks the serving pods
 * Ready (it says so); on a real cluster real pods do that.
 */
import * as k8s from '@kubernetes/client-node';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { installCrds } from '../operator/src/install.js';
import { startOperator } from '../operator/src/operator.js';
import {
  createKubeClient,
  KubeApiError,
  resourcePath,
  RESOURCES,
  type KubeClient,
  type KubeObject,
  type ResourceDef,
} from '../operator/src/runtime/kube.js';
import { markPodsReady } from '../operator/src/testing/helpers.js';
import { startTestEnv, type TestEnv } from './testenv/environment.js';

const DEMO_NAMESPACE = 'crema-demo';
const EXAMPLES_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'manifests', 'examples');

const say = (m: string) => console.log(`[crema] ${m}`);

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

const KIND_TO_RESOURCE: Record<string, ResourceDef> = {
  RecommenderModel: RESOURCES.recommenderModel,
  Experiment: RESOURCES.experiment,
  StoreRegion: RESOURCES.storeRegion,
};

/** Server-side applies every document in manifests/examples/ into the demo namespace. */
async function applyExamples(client: KubeClient): Promise<string[]> {
  try {
    await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: DEMO_NAMESPACE } } });
  } catch (err) {
    if (!(err instanceof KubeApiError && err.conflict)) throw err;
  }
  const applied: string[] = [];
  for (const file of (await readdir(EXAMPLES_DIR)).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(await readFile(join(EXAMPLES_DIR, file), 'utf8'))) {
      const obj = doc.toJSON() as KubeObject | null;
      if (!obj?.kind) continue;
      const r = KIND_TO_RESOURCE[obj.kind];
      if (!r) throw new Error(`${file}: unsupported kind ${obj.kind}`);
      const name = obj.metadata!.name!;
      await client.request('PATCH', resourcePath(r, DEMO_NAMESPACE, name), {
        body: { ...obj, metadata: { ...obj.metadata, namespace: DEMO_NAMESPACE } },
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'crema-examples', force: true },
      });
      applied.push(`${obj.kind}/${name}`);
    }
  }
  return applied;
}

async function main(): Promise<void> {
  let env: TestEnv | undefined;
  let kubeconfigPath = await reachableCluster();
  let kubectl = 'kubectl';
  if (kubeconfigPath) {
    say(`using the cluster in ${kubeconfigPath}`);
  } else {
    say('starting a local control plane (etcd + kube-apiserver + kube-controller-manager)…');
    env = await startTestEnv({ redis: false });
    kubeconfigPath = env.kube!.kubeconfigPath;
    kubectl = env.kube!.kubectl;
    say(`local control plane ready in ${((env.timings['total'] ?? 0) / 1000).toFixed(1)} s`);
  }

  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const client = await createKubeClient(kc, { userAgent: 'crema-start' });
  const crds = await installCrds(client);
  say(`installed CRDs: ${crds.join(', ')}`);

  const op = await startOperator({
    kubeconfigPath,
    healthPort: Number(process.env['CREMA_HEALTH_PORT'] ?? 0),
    healthHost: '127.0.0.1',
    leaseNamespace: 'default',
    log: (m) => console.log(`[operator] ${m}`),
  });
  const applied = await applyExamples(client);
  say(`applied ${applied.length} example resources into namespace ${DEMO_NAMESPACE}: ${applied.join(', ')}`);

  let kubeletTimer: NodeJS.Timeout | undefined;
  if (env) {
    say(
      'no kubelet in the local control plane: a stand-in marks serving pods Ready so models can become Ready',
    );
    kubeletTimer = setInterval(() => {
      void markPodsReady(client, DEMO_NAMESPACE, 'app.kubernetes.io/name=crema-serving').catch(() => {});
    }, 2000);
  }

  console.log(`
Crema is running.
  operator health and metrics: http://127.0.0.1:${op.healthPort}/readyz  /metrics

Watch it (in another terminal):
  export KUBECONFIG=${kubeconfigPath}
  ${kubectl} get crema -n ${DEMO_NAMESPACE}
  ${kubectl} get rm -n ${DEMO_NAMESPACE} -w
  ${kubectl} describe rm drinks -n ${DEMO_NAMESPACE}
  ${kubectl} get deploy,svc,hpa,pdb,cm -n ${DEMO_NAMESPACE} -l app.kubernetes.io/managed-by=crema-operator
  ${kubectl} wait rm --all -n ${DEMO_NAMESPACE} --for=condition=Ready --timeout=120s

Press Ctrl-C to stop${env ? ' (this also stops the local control plane and removes its files)' : ''}.`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: stopping the operator${env ? ' and the local control plane' : ''}…`);
    clearInterval(kubeletTimer);
    await op.stop();
    client.close();
    await env?.stop();
    process.exit(0);
  };
  // Registered after startTestEnv's own handlers; ours stop the operator first.
  process.removeAllListeners('SIGINT');
  process.removeAllListeners('SIGTERM');
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((err: unknown) => {
  console.error(`[crema] ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
