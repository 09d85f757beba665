/**
 * One real cluster per end-to-end test file (`*.node.test.ts`, root): the control plane and a
 * real node running Crema's images (hack/testenv/cluster.ts), users seeded into the host's Redis
 * (which pods reach as crema-redis.crema-system.svc), the model files the test writes served to
 * pods as crema-models.crema-system.svc, and the operator in this process watching one namespace.
 * Optionally a real Prometheus that discovers and scrapes the namespace's pods through the API
 * server and a real Alertmanager that posts to the operator's webhook, with the operator's drift
 * rule ConfigMaps loaded into Prometheus (what the Prometheus Operator or a rules sidecar does in
 * a cluster).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { CLUSTER_SERVICES, startLocalCluster, type LocalCluster } from '../../../hack/testenv/cluster.js';
import { ensureNamespace } from '../../../hack/testenv/host-services.js';
import {
  startAlertmanager,
  startPrometheus,
  type AlertmanagerServer,
  type PrometheusServer,
} from '../../../hack/testenv/observability.js';
import { freePort } from '../../../hack/testenv/process.js';
import { RULES_LABEL } from '../../src/controllers/recommendermodel/desired.js';
import type { RecommenderModel } from '../../src/controllers/recommendermodel/types.js';
import { startOperator, type OperatorConfig, type RunningOperator } from '../../src/operator.js';
import {
  RESOURCES,
  resourcePath,
  type KubeClient,
  type KubeList,
  type KubeObject,
} from '../../src/runtime/kube.js';
import { eventually } from '../helpers.js';
import { seedUsers, writeRevision, type Revision } from './models.js';

export interface NodeE2e {
  readonly cluster: LocalCluster;
  readonly client: KubeClient;
  readonly ns: string;
  readonly op: RunningOperator;
  readonly prom?: PrometheusServer;
  readonly am?: AlertmanagerServer;
  /** Users with features in Redis (following the trained model's baseline). */
  readonly users: readonly string[];
  /** Drift alerts the webhook received (the operator's log lines), with when. */
  readonly webhookAlerts: { at: number; line: string }[];
  /** When each rules ConfigMap version reached Prometheus. */
  readonly rulesLoaded: { name: string; text: string; at: number }[];
  /** Where pods fetch model files from (the test's artifact store), and its in-cluster URL. */
  readonly artifacts: { readonly dir: string; readonly url: string };
  /** Writes a model revision where pods fetch it (see models.ts). */
  revision(o: Omit<Parameters<typeof writeRevision>[1], 'baseUri'>): Promise<Revision>;
  stop(): Promise<void>;
}

const WEBHOOK_TOKEN = 'e2e-webhook-token';

export async function startNodeE2e(opts: {
  readonly name: string;
  readonly users?: number;
  /** Prometheus + Alertmanager + the drift webhook. */
  readonly observability?: boolean;
  readonly operator?: Partial<OperatorConfig>;
}): Promise<NodeE2e> {
  const artifacts = await mkdtemp(join(tmpdir(), `crema-${opts.name}-`));
  const cluster = await startLocalCluster({ artifactsDir: artifacts, log: () => {} });
  const ns = opts.name;
  const webhookAlerts: { at: number; line: string }[] = [];
  const rulesLoaded: { name: string; text: string; at: number }[] = [];
  let prom: PrometheusServer | undefined;
  let am: AlertmanagerServer | undefined;
  let op: RunningOperator | undefined;
  let stopRules = false;
  let rulesLoop: Promise<void> = Promise.resolve();
  const stop = async () => {
    stopRules = true;
    await rulesLoop;
    await op?.stop();
    await prom?.stop();
    await am?.stop();
    await cluster.stop();
    await rm(artifacts, { recursive: true, force: true });
  };
  try {
    const { client } = cluster;
    await ensureNamespace(client, ns);
    const redis = new Redis(cluster.redis.url);
    let users: string[];
    try {
      users = await seedUsers(redis, `e2e-${ns}`, opts.users ?? 20_000);
    } finally {
      redis.disconnect();
    }
    let webhookPort: number | undefined;
    if (opts.observability) {
      webhookPort = await freePort();
      am = await startAlertmanager({
        webhookUrl: `http://127.0.0.1:${webhookPort}/alerts`,
        bearerToken: WEBHOOK_TOKEN,
        log: () => {},
      });
      prom = await startPrometheus({
        scrapeTargets: [],
        kubernetesPods: { kubeconfigPath: cluster.kubeconfigPath, namespaces: [ns] },
        alertmanagerUrl: am.url,
        log: () => {},
      });
    }
    op = await startOperator({
      kubeconfigPath: cluster.kubeconfigPath,
      namespace: ns,
      healthPort: 0,
      healthHost: '127.0.0.1',
      leaderElection: false,
      servingRedisUrl: CLUSTER_SERVICES.redisUrl,
      ...(prom ? { prometheusUrl: prom.url } : {}),
      ...(webhookPort
        ? { alertWebhook: { port: webhookPort, host: '127.0.0.1', bearerToken: WEBHOOK_TOKEN } }
        : {}),
      log: (line) => {
        if (line.startsWith('drift alert')) webhookAlerts.push({ at: Date.now(), line });
        if (process.env['CREMA_E2E_VERBOSE']) console.log(`[operator] ${line}`);
      },
      ...opts.operator,
    });
    if (prom) {
      // The rules loader: ConfigMaps labelled crema.dev/prometheus-rules → Prometheus rule files.
      const loaded = new Map<string, string>();
      const p = prom;
      rulesLoop = (async () => {
        while (!stopRules) {
          try {
            const cms = await client.request<KubeList<KubeObject & { data?: Record<string, string> }>>(
              'GET',
              resourcePath(RESOURCES.configMap, ns),
              { query: { labelSelector: `${RULES_LABEL}=true` } },
            );
            for (const cm of cms.items) {
              const name = `${ns}.${cm.metadata!.name!}`;
              const text = cm.data?.['rules.yaml'] ?? '';
              if (loaded.get(name) === text) continue;
              await p.writeRules(name, text);
              loaded.set(name, text);
              rulesLoaded.push({ name, text, at: Date.now() });
            }
          } catch {
            /* retried */
          }
          await new Promise((r) => setTimeout(r, 300));
        }
      })();
    }
    return {
      cluster,
      client,
      ns,
      op,
      ...(prom ? { prom } : {}),
      ...(am ? { am } : {}),
      users,
      webhookAlerts,
      rulesLoaded,
      artifacts: { dir: artifacts, url: CLUSTER_SERVICES.artifactsUrl },
      revision: (o) => writeRevision(artifacts, { ...o, baseUri: CLUSTER_SERVICES.artifactsUrl }),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** `kubectl get <what> -n <ns>` as the SRE sees it: the header and each row's cells (whitespace-split). */
export async function kubectlGet(e: NodeE2e, what: string): Promise<string[][]> {
  const { stdout } = await promisify(execFile)(e.cluster.kubectl, [
    '--kubeconfig',
    e.cluster.kubeconfigPath,
    'get',
    what,
    '-n',
    e.ns,
  ]);
  return stdout
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s{2,}/));
}

/** Reads a RecommenderModel. */
export const getModel = (e: NodeE2e, name: string) =>
  e.client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, e.ns, name));

export const cond = (m: RecommenderModel, t: string) => m.status?.conditions?.find((c) => c.type === t);

/** Creates a drink-ranking RecommenderModel for `rev` (small pods: two cores run the whole cluster). */
export async function postModel(
  e: NodeE2e,
  name: string,
  rev: Revision,
  spec: Record<string, unknown> = {},
): Promise<void> {
  const { serving, ...rest } = spec as { serving?: Record<string, unknown> };
  await e.client.request('POST', resourcePath(RESOURCES.recommenderModel, e.ns), {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name, namespace: e.ns },
      spec: {
        model: { uri: rev.uri, sha256: rev.sha256, task: 'drink-ranking' },
        serving: {
          minReplicas: 1,
          maxReplicas: 2,
          resources: { requests: { cpu: '100m', memory: '128Mi' } },
          ...serving,
        },
        ...rest,
      },
    },
  });
}

/** postModel, then resolves once the model is Ready (real pods) and its Service answers. */
export async function createModel(
  e: NodeE2e,
  name: string,
  rev: Revision,
  spec: Record<string, unknown> = {},
  timeoutMs = 120_000,
): Promise<RecommenderModel> {
  await postModel(e, name, rev, spec);
  const ready = await eventually(
    async () => {
      const m = await getModel(e, name);
      return cond(m, 'Ready')?.status === 'True' ? m : undefined;
    },
    timeoutMs,
    `${name} Ready (its serving pods running and ready)`,
  );
  await serviceAnswers(e, name);
  return ready;
}

/**
 * Resolves once Service `name` has answered 10 requests in a row from the host. kube-proxy
 * programs a new Service's endpoints up to a second (its nftables minSyncPeriod) after they are
 * ready; until then connections are refused. Tests measure what follows, not that propagation.
 */
export async function serviceAnswers(e: NodeE2e, name: string): Promise<void> {
  const url = `${await serviceUrl(e, name)}/healthz`;
  let streak = 0;
  await eventually(
    async () => {
      const ok = await fetch(url, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      streak = ok ? streak + 1 : 0;
      return streak >= 10;
    },
    30_000,
    `Service ${name} answering`,
  );
}

/** Changes spec.model to `rev` (a rollout). */
export const setModel = (e: NodeE2e, name: string, rev: Revision) =>
  e.client.request('PATCH', resourcePath(RESOURCES.recommenderModel, e.ns, name), {
    contentType: 'application/merge-patch+json',
    body: { spec: { model: { sha256: rev.sha256, uri: rev.uri } } },
  });

/** http://CLUSTER-IP of Service `name` (reachable from the host through kube-proxy). */
export async function serviceUrl(e: NodeE2e, name: string): Promise<string> {
  const svc = await e.client.request<{ spec: { clusterIP: string } }>(
    'GET',
    resourcePath(RESOURCES.service, e.ns, name),
  );
  return `http://${svc.spec.clusterIP}`;
}

/** Deletes a model and waits until its pods are gone (so the next scenario has the node's CPU). */
export async function deleteModel(e: NodeE2e, name: string): Promise<void> {
  await e.client
    .request('DELETE', resourcePath(RESOURCES.recommenderModel, e.ns, name), {
      query: { propagationPolicy: 'Foreground' },
    })
    .catch(() => {});
  await eventually(
    async () => {
      const pods = await e.client.request<KubeList<KubeObject>>('GET', resourcePath(RESOURCES.pod, e.ns), {
        query: { labelSelector: `crema.dev/model=${name}` },
      });
      return pods.items.length === 0;
    },
    90_000,
    `${name}'s pods gone`,
  );
}
