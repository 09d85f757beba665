/**
 * Pure builders for what a RecommenderModel should run: the model ConfigMap, the stable serving
 * Deployment (no replicas: the HPA owns them; an init container delivers the model), its
 * Services, HorizontalPodAutoscaler and PodDisruptionBudget, and while a canary runs the canary
 * Deployment and the router Deployment in front of both. Built with cdk8s-plus-28 constructs and synthesized in-process; every
 * default the library would add is set deliberately so server-side apply owns exactly these.
 */
import { ApiObject, App, Chart, Duration, Size } from 'cdk8s';
import * as kplus from 'cdk8s-plus-28';
import type { KubeObject } from '../../runtime/kube.js';
import { ConfigMapTrafficRouter, type TrafficRouter } from '../../traffic/router.js';
import { buildDriftRules } from '../../analysis/rules.js';
import {
  FETCH_ENV,
  MODEL_DIR,
  SERVING_ENV,
  fetchedModelUri,
  modelEnvNames,
  nodeOptionsForMemoryLimit,
} from '../../../../contracts/serving-env.js';
import { parseQuantity } from '../../../../contracts/quantity.js';
import {
  REGION_MENU_DIR,
  REGION_MENU_KEY,
  regionMenuConfigMapName,
} from '../../../../contracts/region-menu.js';
import { parseRedisTarget } from '../../../../contracts/redis-target.js';
import {
  MANAGED_BY,
  MODEL_LABEL,
  MODEL_SHA_ANNOTATION,
  RULES_LABEL,
  TRACK_LABEL,
} from '../../../../contracts/kube-keys.js';
import type { RecommenderModel } from './types.js';

export {
  MANAGED_BY,
  MODEL_LABEL,
  MODEL_SHA_ANNOTATION,
  RULES_LABEL,
  TRACK_LABEL,
} from '../../../../contracts/kube-keys.js';
/** The serving pods' init container that delivers the model (serving/src/model/fetch-model.ts). */
export const FETCH_CONTAINER = 'fetch-model';
export const SERVING_CONTAINER = 'serving';
export const ROUTER_CONTAINER = 'router';
/** The admission proxy (spec.serving.admissionProxy): nginx in front of serving (ADR 0019). */
export const PROXY_CONTAINER = 'admission-proxy';
/** Where the proxy writes its refusal count for serving to publish (the pod's shared /tmp). */
export const PROXY_STATS_PATH = '/tmp/crema-proxy/refused';
/** Seconds a terminating serving or router pod keeps answering before it closes. */
export const DRAIN_SECONDS = 5;
/**
 * Client connections to serving and router pods end after this many seconds (after an answer),
 * so moving the model's Service to the router pods, or new pods, reaches clients that keep
 * their connections open.
 */
export const MAX_CONNECTION_AGE_SECONDS = 10;
/** The router container's memory limit (MiB). */
const ROUTER_MEMORY_LIMIT_MIB = 256;
/** The default Secret holding serving's admin token (the CRD defaults spec.serving.adminTokenSecretRef). */
export const ADMIN_SECRET = { name: 'crema-serving-admin', key: 'token' } as const;

/** Pod tracks: the two revisions, and the router in front of them while traffic is split. */
export type Track = 'stable' | 'canary' | 'router';

/** Names of the children of model `name`. */
export function childNames(name: string) {
  return {
    configMap: `${name}-model`,
    deployment: `${name}-stable`,
    canaryDeployment: `${name}-canary`,
    routerDeployment: `${name}-router`,
    /** The entry point clients call: stable pods, or the router pods while traffic is split. */
    service: name,
    stableService: `${name}-stable`,
    canaryService: `${name}-canary`,
    hpa: name,
    pdb: name,
    router: `${name}-router`,
    routerServiceAccount: `${name}-router`,
    driftRules: `${name}-drift-rules`,
  };
}

function ownerReference(rm: RecommenderModel) {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    name: rm.metadata!.name!,
    uid: rm.metadata!.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** A model revision to run: its digest and where to load it from. */
export interface RevisionRef {
  readonly sha256: string;
  readonly uri: string;
}

/**
 * What should run: the stable revision (which keeps serving while a canary rolls out), the
 * canary if one is in progress, and the canary's share of traffic. Without a plan the spec's
 * model is stable and there is no canary.
 */
export interface ServingPlan {
  readonly stable: RevisionRef;
  readonly canary?: RevisionRef;
  readonly canaryWeight: number;
  /**
   * Point the model's Service at the router pods. Only once they are ready (the reconcile
   * observes that): before, and after the split, clients reach stable directly.
   */
  readonly routeThroughRouter?: boolean;
}

/** Cluster-level settings of the serving pods (the operator's configuration). */
export interface ServingDefaults {
  /** Redis for models whose spec.serving.redisUrl is not set. */
  readonly redisUrl?: string;
}

/** The Redis URL the model's pods get, or undefined when neither the spec nor the operator sets one. */
export function redisUrlOf(rm: RecommenderModel, defaults: ServingDefaults): string | undefined {
  return rm.spec.serving?.redisUrl ?? defaults.redisUrl;
}

/**
 * Why the model's pods could not reach Redis with the address they would get, or null. The
 * address is passed to the pods verbatim: one URL, or a Redis Cluster's seeds separated by
 * commas (contracts/redis-target.ts), which serving parses the same way.
 */
export function checkRedisAddress(
  rm: RecommenderModel,
  defaults: ServingDefaults,
): { reason: string; message: string } | null {
  const url = redisUrlOf(rm, defaults);
  if (!url)
    return {
      reason: 'RedisNotConfigured',
      message:
        "no Redis address: set spec.serving.redisUrl or the operator's CREMA_SERVING_REDIS_URL (serving pods cannot become ready without features)",
    };
  try {
    parseRedisTarget(url, {
      name: rm.spec.serving?.redisUrl ? 'spec.serving.redisUrl' : 'CREMA_SERVING_REDIS_URL',
    });
    return null;
  } catch (err) {
    return { reason: 'RedisAddressInvalid', message: (err as Error).message };
  }
}

/** Builds the serving children of `rm` for `plan`, each with an owner reference to it. */
export function buildServingObjects(
  rm: RecommenderModel,
  plan: ServingPlan = { stable: { sha256: rm.spec.model.sha256, uri: rm.spec.model.uri }, canaryWeight: 0 },
  router: TrafficRouter = new ConfigMapTrafficRouter(),
  defaults: ServingDefaults = {},
): KubeObject[] {
  const name = rm.metadata?.name;
  const namespace = rm.metadata?.namespace;
  if (!name || !namespace || !rm.metadata?.uid)
    throw new Error('buildServingObjects: model needs name, namespace and uid');
  const { model } = rm.spec;
  const serving = rm.spec.serving ?? {};
  const port = serving.port ?? 8080;
  const minReplicas = serving.minReplicas ?? 2;
  const maxReplicas = serving.maxReplicas ?? 10;
  const image = serving.image ?? 'crema/serving:0.1.0';
  const names = childNames(name);
  const common = {
    'app.kubernetes.io/name': 'crema-serving',
    'app.kubernetes.io/instance': name,
    ...MANAGED_BY,
  };
  const redisUrl = redisUrlOf(rm, defaults);
  const adminSecret = {
    name: serving.adminTokenSecretRef?.name ?? ADMIN_SECRET.name,
    key: serving.adminTokenSecretRef?.key ?? ADMIN_SECRET.key,
  };

  const app = new App();
  const chart = new Chart(app, 'rm', { namespace, labels: common, disableResourceNameHashes: true });

  const modelConfig = {
    name,
    uri: plan.stable.uri,
    sha256: plan.stable.sha256,
    task: model.task,
    featureSchemaVersion: model.featureSchemaVersion ?? 1,
    ...(model.metadataUri ? { metadataUri: model.metadataUri } : {}),
    ...(plan.canary ? { canary: { uri: plan.canary.uri, sha256: plan.canary.sha256 } } : {}),
    fallback: rm.spec.fallback?.strategy ?? 'popularity',
    drift: rm.spec.drift ?? null,
  };
  new kplus.ConfigMap(chart, 'config', {
    metadata: { name: names.configMap },
    data: { 'model.json': JSON.stringify(modelConfig) },
  });

  // Restricted PodSecurity: non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp.
  const containerSecurity: kplus.ContainerSecurityContextProps = {
    ensureNonRoot: true,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
    capabilities: { drop: [kplus.Capability.ALL] },
    seccompProfile: { type: kplus.SeccompProfileType.RUNTIME_DEFAULT },
  };
  // Quantities go out as the spec spells them (any Kubernetes quantity); cdk8s-plus would only
  // render whole Mi and millicores. They replace the placeholders below after synthesis.
  const quantities = containerResources(rm);
  const placeholder: kplus.ContainerResources = {
    cpu: { request: kplus.Cpu.millis(1) },
    memory: { request: Size.mebibytes(1) },
  };
  const podLabels = (track: Track) => ({ ...common, [MODEL_LABEL]: name, [TRACK_LABEL]: track });
  // With the admission proxy, nginx takes the pod's port (the Service's target) and serving
  // moves to the next one; probes and metrics go to serving directly, never through the proxy
  // (a probe refused during a spike would take the pod out of its Service).
  const proxy = serving.admissionProxy?.enabled === true ? serving.admissionProxy : undefined;
  const servingPort = proxy ? port + 1 : port;
  const scrape = {
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': String(servingPort),
    'prometheus.io/path': '/metrics',
  };
  // Timeouts above kubelet's 1 s default: on a busy node (a rollout starting pods, a load spike)
  // a probe answered late must not take every pod out of the Service at once.
  const probesOn = (port: number) => ({
    readiness: kplus.Probe.fromHttpGet('/readyz', {
      port,
      periodSeconds: Duration.seconds(2),
      timeoutSeconds: Duration.seconds(2),
      failureThreshold: 3,
    }),
    liveness: kplus.Probe.fromHttpGet('/healthz', {
      port,
      periodSeconds: Duration.seconds(10),
      timeoutSeconds: Duration.seconds(3),
    }),
    startup: kplus.Probe.fromHttpGet('/healthz', {
      port,
      failureThreshold: 30,
      periodSeconds: Duration.seconds(2),
    }),
  });
  const probes = probesOn(port);

  const modelEnv = modelEnvNames(model.task);
  const servingDeployment = (track: 'stable' | 'canary', rev: RevisionRef, replicas?: number) => {
    const selector = { [MODEL_LABEL]: name, [TRACK_LABEL]: track };
    const d = new kplus.Deployment(chart, track, {
      metadata: {
        name: track === 'stable' ? names.deployment : names.canaryDeployment,
        labels: { [TRACK_LABEL]: track, [MODEL_LABEL]: name },
      },
      select: false,
      ...(replicas !== undefined ? { replicas } : {}),
      // Pods carry the common labels too, so `kubectl get pods -l app.kubernetes.io/name=crema-serving` finds them.
      podMetadata: {
        labels: podLabels(track),
        annotations: { [MODEL_SHA_ANNOTATION]: rev.sha256, ...scrape },
      },
      strategy: kplus.DeploymentStrategy.rollingUpdate({
        maxSurge: kplus.PercentOrAbsolute.absolute(1),
        maxUnavailable: kplus.PercentOrAbsolute.absolute(0),
      }),
      automountServiceAccountToken: false,
      securityContext: { ensureNonRoot: true, user: 65532, group: 65532 },
      // Drain (DRAIN_SECONDS) plus the longest request, with room to spare.
      terminationGracePeriod: Duration.seconds(30),
    });
    d.select(kplus.LabelSelector.of({ labels: selector }));
    // Sizes the API server stores as written (1024Mi would come back as 1Gi and never compare equal).
    const models = kplus.Volume.fromEmptyDir(chart, `${track}-models`, 'models', {
      sizeLimit: Size.mebibytes(512),
    });
    const state = kplus.Volume.fromEmptyDir(chart, `${track}-state`, 'state', {
      sizeLimit: Size.mebibytes(512),
    });
    const tmp = kplus.Volume.fromEmptyDir(chart, `${track}-tmp`, 'tmp', { sizeLimit: Size.mebibytes(64) });
    // The regional menus (ADR 0014): the kubelet keeps the file current; optional, so a pod
    // starts (with the full menu) before the operator has written the ConfigMap.
    const regions = kplus.Volume.fromConfigMap(
      chart,
      `${track}-regions`,
      kplus.ConfigMap.fromConfigMapName(chart, `${track}-regions-ref`, regionMenuConfigMapName(name)),
      { name: 'regions', optional: true, defaultMode: 0o644 },
    );
    // 1. The model, fetched and digest-checked before serving starts.
    d.addInitContainer({
      name: FETCH_CONTAINER,
      image,
      imagePullPolicy: kplus.ImagePullPolicy.IF_NOT_PRESENT,
      command: ['/usr/local/bin/node', '/app/fetch-model.js'],
      envVariables: {
        [FETCH_ENV.uri]: kplus.EnvValue.fromValue(rev.uri),
        [FETCH_ENV.sha256]: kplus.EnvValue.fromValue(rev.sha256),
        [FETCH_ENV.task]: kplus.EnvValue.fromValue(model.task),
        [FETCH_ENV.dir]: kplus.EnvValue.fromValue(MODEL_DIR),
        // The spec's metadata document belongs to the spec's model; other revisions use the default.
        ...(model.metadataUri && rev.sha256 === model.sha256
          ? { [FETCH_ENV.metadataUri]: kplus.EnvValue.fromValue(model.metadataUri) }
          : {}),
      },
      volumeMounts: [{ path: MODEL_DIR, volume: models }],
      resources: placeholder,
      securityContext: containerSecurity,
    });
    // 2. Serving, reading the verified files from the shared volume.
    d.addContainer({
      name: SERVING_CONTAINER,
      image,
      imagePullPolicy: kplus.ImagePullPolicy.IF_NOT_PRESENT,
      portNumber: servingPort,
      envVariables: {
        [SERVING_ENV.modelName]: kplus.EnvValue.fromValue(name),
        // With the model name, the identity labels of the metrics the analysis selects on.
        [SERVING_ENV.podNamespace]: kplus.EnvValue.fromFieldRef(kplus.EnvFieldPaths.POD_NAMESPACE),
        // serving/src/server.ts reads the model of each task from these (contracts/serving-env.ts).
        [modelEnv.uri]: kplus.EnvValue.fromValue(fetchedModelUri(model.task)),
        [modelEnv.sha256]: kplus.EnvValue.fromValue(rev.sha256),
        [SERVING_ENV.variant]: kplus.EnvValue.fromValue(track),
        [SERVING_ENV.port]: kplus.EnvValue.fromValue(String(servingPort)),
        ...(proxy ? { [SERVING_ENV.proxyStatsPath]: kplus.EnvValue.fromValue(PROXY_STATS_PATH) } : {}),
        ...(redisUrl ? { [SERVING_ENV.redisUrl]: kplus.EnvValue.fromValue(redisUrl) } : {}),
        [SERVING_ENV.adminToken]: kplus.EnvValue.fromSecretValue(
          {
            secret: kplus.Secret.fromSecretName(chart, `${track}-admin-secret`, adminSecret.name),
            key: adminSecret.key,
          },
          { optional: true },
        ),
        [SERVING_ENV.snapshotPath]: kplus.EnvValue.fromValue('/var/lib/crema/state/features.snapshot'),
        [SERVING_ENV.regionMenuPath]: kplus.EnvValue.fromValue(`${REGION_MENU_DIR}/${REGION_MENU_KEY}`),
        [SERVING_ENV.drainSeconds]: kplus.EnvValue.fromValue(String(DRAIN_SECONDS)),
        [SERVING_ENV.maxConnectionAgeSeconds]: kplus.EnvValue.fromValue(String(MAX_CONNECTION_AGE_SECONDS)),
        // V8's heap sized from the container's limit, not the node's memory (ADR 0007).
        NODE_OPTIONS: kplus.EnvValue.fromValue(
          nodeOptionsForMemoryLimit(parseQuantity(quantities[SERVING_CONTAINER]!.limits['memory']!)),
        ),
      },
      volumeMounts: [
        { path: MODEL_DIR, volume: models, readOnly: true },
        { path: '/var/lib/crema/state', volume: state },
        { path: '/tmp', volume: tmp },
        { path: REGION_MENU_DIR, volume: regions, readOnly: true },
      ],
      ...probesOn(servingPort),
      resources: placeholder,
      securityContext: containerSecurity,
    });
    // 3. The admission proxy: nginx on the pod's port, passing at most maxConcurrency requests
    // at once to serving (same image, /app/proxy.js). Its probes are TCP: an HTTP probe would go
    // through to serving, or be refused during a spike.
    if (proxy) {
      d.addContainer({
        name: PROXY_CONTAINER,
        image,
        imagePullPolicy: kplus.ImagePullPolicy.IF_NOT_PRESENT,
        // Its own small bundle: the process that runs nginx does not load serving's code.
        command: ['/usr/local/bin/node', '/app/proxy.js'],
        portNumber: port,
        envVariables: {
          [SERVING_ENV.port]: kplus.EnvValue.fromValue(String(port)),
          [SERVING_ENV.proxyUpstreamPort]: kplus.EnvValue.fromValue(String(servingPort)),
          [SERVING_ENV.proxyMaxConcurrency]: kplus.EnvValue.fromValue(String(proxy.maxConcurrency ?? 16)),
          [SERVING_ENV.proxyStatsPath]: kplus.EnvValue.fromValue(PROXY_STATS_PATH),
          // The proxy passes requests through serving's drain, then lets nginx finish.
          [SERVING_ENV.drainSeconds]: kplus.EnvValue.fromValue(String(DRAIN_SECONDS)),
          NODE_OPTIONS: kplus.EnvValue.fromValue('--max-old-space-size=32'),
        },
        volumeMounts: [{ path: '/tmp', volume: tmp }],
        readiness: kplus.Probe.fromTcpSocket({
          port,
          periodSeconds: Duration.seconds(2),
          timeoutSeconds: Duration.seconds(2),
        }),
        liveness: kplus.Probe.fromTcpSocket({
          port,
          periodSeconds: Duration.seconds(10),
          timeoutSeconds: Duration.seconds(3),
        }),
        resources: placeholder,
        securityContext: containerSecurity,
      });
    }
    new kplus.Service(chart, `${track}-service`, {
      metadata: { name: track === 'stable' ? names.stableService : names.canaryService },
      selector: kplus.Pods.select(chart, `${track}-pods`, { labels: selector }),
      ports: [{ name: 'http', port: 80, targetPort: port }],
    });
    return d;
  };

  const stable = servingDeployment('stable', plan.stable);
  if (plan.canary) {
    // The canary gets a fixed share of pods proportional to its traffic (at least one); the
    // HPA keeps scaling stable.
    servingDeployment('canary', plan.canary, Math.max(1, Math.ceil((minReplicas * plan.canaryWeight) / 100)));
    buildRouterDeployment(chart, {
      name: names.routerDeployment,
      serviceAccount: names.routerServiceAccount,
      configMap: names.router,
      labels: podLabels('router'),
      image,
      port,
      probes,
      securityContext: containerSecurity,
    });
  }

  // The entry point: stable pods, or the router pods while the split runs through them.
  const entryTrack: Track = plan.canary && plan.routeThroughRouter ? 'router' : 'stable';
  new kplus.Service(chart, 'entry-service', {
    metadata: { name: names.service },
    selector: kplus.Pods.select(chart, 'entry-pods', {
      labels: { [MODEL_LABEL]: name, [TRACK_LABEL]: entryTrack },
    }),
    ports: [{ name: 'http', port: 80, targetPort: port }],
  });

  // The router reads its ConfigMap through the API: a service account allowed exactly that.
  new ApiObject(chart, 'router-sa', {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: names.routerServiceAccount },
  });
  new ApiObject(chart, 'router-role', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: names.routerServiceAccount },
    rules: [
      {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: [names.router],
        verbs: ['get', 'list', 'watch'],
      },
    ],
  });
  new ApiObject(chart, 'router-rolebinding', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: names.routerServiceAccount },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: names.routerServiceAccount },
    subjects: [{ kind: 'ServiceAccount', name: names.routerServiceAccount, namespace }],
  });

  new kplus.HorizontalPodAutoscaler(chart, 'hpa', {
    metadata: { name: names.hpa },
    target: stable,
    minReplicas,
    maxReplicas,
    metrics: [
      kplus.Metric.resourceCpu(kplus.MetricTarget.averageUtilization(serving.targetCPUUtilization ?? 70)),
    ],
  });

  new ApiObject(chart, 'pdb', {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: { name: names.pdb },
    spec: { maxUnavailable: 1, selector: { matchLabels: { [MODEL_LABEL]: name, [TRACK_LABEL]: 'stable' } } },
  });

  if (rm.spec.drift) {
    // Prometheus alerting rules for the live revisions; a rules loader (the Prometheus Operator's
    // config reloader, a sidecar, or the e2e tests) picks up ConfigMaps with this label.
    const live = {
      ...rm,
      status: {
        stable: { modelSha: plan.stable.sha256 },
        ...(plan.canary ? { canary: { modelSha: plan.canary.sha256 } } : {}),
      },
    };
    new kplus.ConfigMap(chart, 'drift-rules', {
      metadata: { name: names.driftRules, labels: { [RULES_LABEL]: 'true' } },
      data: { 'rules.yaml': buildDriftRules([live]) },
    });
  }

  const owner = ownerReference(rm);
  const routed = router.build(
    {
      namespace,
      model: name,
      stableUpstream: `http://${names.stableService}.${namespace}.svc:80`,
      ...(plan.canary ? { canaryUpstream: `http://${names.canaryService}.${namespace}.svc:80` } : {}),
    },
    plan.canaryWeight,
  );
  return [...chart.toJson(), ...routed].map((o: KubeObject) =>
    normalize({
      ...withLogFallbackMessages(withResources(o, quantities)),
      metadata: { ...o.metadata, labels: { ...common, ...o.metadata?.labels }, ownerReferences: [owner] },
    }),
  );
}

/**
 * A container that dies before writing its termination message (a crash at start) still tells
 * why: the kubelet then takes the log's last lines, which the operator reads into conditions.
 */
function withLogFallbackMessages(o: KubeObject): KubeObject {
  const pod = (o as { spec?: { template?: { spec?: Record<string, unknown> } } }).spec?.template?.spec;
  if (o.kind !== 'Deployment' || !pod) return o;
  for (const list of ['initContainers', 'containers']) {
    for (const c of (pod[list] as Array<Record<string, unknown>> | undefined) ?? [])
      c['terminationMessagePolicy'] = 'FallbackToLogsOnError';
  }
  return o;
}

/** The router pods: serving's image in router mode, watching the model's router ConfigMap. */
function buildRouterDeployment(
  chart: Chart,
  o: {
    name: string;
    serviceAccount: string;
    configMap: string;
    labels: Record<string, string>;
    image: string;
    port: number;
    probes: Pick<kplus.ContainerProps, 'readiness' | 'liveness' | 'startup'>;
    securityContext: kplus.ContainerSecurityContextProps;
  },
): void {
  const d = new kplus.Deployment(chart, 'router', {
    metadata: { name: o.name, labels: { [TRACK_LABEL]: 'router', [MODEL_LABEL]: o.labels[MODEL_LABEL]! } },
    select: false,
    // Two, so a router pod lost or rolled never leaves the split without a path.
    replicas: 2,
    podMetadata: {
      labels: o.labels,
      annotations: {
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': String(o.port),
        'prometheus.io/path': '/metrics',
      },
    },
    strategy: kplus.DeploymentStrategy.rollingUpdate({
      maxSurge: kplus.PercentOrAbsolute.absolute(1),
      maxUnavailable: kplus.PercentOrAbsolute.absolute(0),
    }),
    serviceAccount: kplus.ServiceAccount.fromServiceAccountName(chart, 'router-sa-ref', o.serviceAccount),
    automountServiceAccountToken: true,
    securityContext: { ensureNonRoot: true, user: 65532, group: 65532 },
    terminationGracePeriod: Duration.seconds(30),
  });
  d.select(
    kplus.LabelSelector.of({ labels: { [MODEL_LABEL]: o.labels[MODEL_LABEL]!, [TRACK_LABEL]: 'router' } }),
  );
  d.addContainer({
    name: ROUTER_CONTAINER,
    image: o.image,
    imagePullPolicy: kplus.ImagePullPolicy.IF_NOT_PRESENT,
    portNumber: o.port,
    envVariables: {
      [SERVING_ENV.mode]: kplus.EnvValue.fromValue('router'),
      [SERVING_ENV.port]: kplus.EnvValue.fromValue(String(o.port)),
      [SERVING_ENV.routerConfigMap]: kplus.EnvValue.fromValue(o.configMap),
      [SERVING_ENV.podNamespace]: kplus.EnvValue.fromFieldRef(kplus.EnvFieldPaths.POD_NAMESPACE),
      [SERVING_ENV.drainSeconds]: kplus.EnvValue.fromValue(String(DRAIN_SECONDS)),
      [SERVING_ENV.maxConnectionAgeSeconds]: kplus.EnvValue.fromValue(String(MAX_CONNECTION_AGE_SECONDS)),
      NODE_OPTIONS: kplus.EnvValue.fromValue(nodeOptionsForMemoryLimit(ROUTER_MEMORY_LIMIT_MIB * 2 ** 20)),
    },
    ...o.probes,
    resources: {
      cpu: { request: kplus.Cpu.millis(100) },
      memory: { request: Size.mebibytes(96), limit: Size.mebibytes(ROUTER_MEMORY_LIMIT_MIB) },
    },
    securityContext: o.securityContext,
  });
}

/**
 * Drops what cdk8s adds that we do not want to own: its `cdk8s.io/metadata.addr` bookkeeping
 * label and empty lists (the API server does not store them, so comparing would never settle).
 */
function normalize<T>(value: T): T {
  if (Array.isArray(value)) return value.map(normalize) as T;
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === 'cdk8s.io/metadata.addr') continue;
    if (Array.isArray(v) && v.length === 0) continue;
    if (v === undefined) continue;
    out[k] = normalize(v);
  }
  return out as T;
}

/** A container's `resources`, quantities as strings. */
export interface QuantityResources {
  readonly requests: Readonly<Record<string, string>>;
  readonly limits: Readonly<Record<string, string>>;
}

/** Defaults of `spec.serving.resources` (the CRD's defaults too). */
const DEFAULT_RESOURCES = { cpu: '250m', memory: '256Mi', memoryLimit: '512Mi' } as const;
/** What the model-fetching init container asks for (at most the pod's memory limit). */
const FETCH_REQUESTS = { cpu: '50m', memory: '64Mi' } as const;
/**
 * The admission proxy's container: nginx (a few MiB) and the Node process that runs it. The
 * CPU request is its share in normal operation (~44 µs per request against serving's ~180,
 * bench:overload with BENCH_FRONT=nginx); under a spike it uses what the node has to spare.
 */
const PROXY_RESOURCES = {
  requests: { cpu: '50m', memory: '64Mi' },
  limits: { memory: '128Mi' },
} as const;

/**
 * The serving and init containers' resources from `spec.serving.resources`. Throws a message
 * naming the field when a value is not a quantity or a request exceeds its limit (the API
 * server would refuse the pods, far from the resource the user wrote).
 */
export function containerResources(rm: RecommenderModel): Record<string, QuantityResources> {
  const r = rm.spec.serving?.resources;
  const field = 'spec.serving.resources';
  const requests = {
    cpu: r?.requests?.cpu ?? DEFAULT_RESOURCES.cpu,
    memory: r?.requests?.memory ?? DEFAULT_RESOURCES.memory,
  };
  const limits: Record<string, string> = { memory: r?.limits?.memory ?? DEFAULT_RESOURCES.memoryLimit };
  if (r?.limits?.cpu) limits['cpu'] = r.limits.cpu;
  const amounts = {
    requests: {
      cpu: parseQuantity(requests.cpu, `${field}.requests.cpu`),
      memory: parseQuantity(requests.memory, `${field}.requests.memory`),
    },
    limits: {
      memory: parseQuantity(limits['memory']!, `${field}.limits.memory`),
      ...(limits['cpu'] ? { cpu: parseQuantity(limits['cpu'], `${field}.limits.cpu`) } : {}),
    },
  };
  for (const k of ['cpu', 'memory'] as const) {
    const limit = amounts.limits[k];
    if (limit !== undefined && amounts.requests[k] > limit) {
      throw new RangeError(
        `${field}.requests.${k} (${requests[k]}) is above ${field}.limits.${k} (${limits[k]})`,
      );
    }
  }
  if (amounts.requests.cpu <= 0) throw new RangeError(`${field}.requests.cpu must be above 0`);
  if (amounts.limits.memory <= 0) throw new RangeError(`${field}.limits.memory must be above 0`);
  const fetchMemory =
    amounts.limits.memory < parseQuantity(FETCH_REQUESTS.memory) ? limits['memory']! : FETCH_REQUESTS.memory;
  return {
    [SERVING_CONTAINER]: { requests, limits },
    [PROXY_CONTAINER]: { requests: { ...PROXY_RESOURCES.requests }, limits: { ...PROXY_RESOURCES.limits } },
    [FETCH_CONTAINER]: {
      requests: { cpu: FETCH_REQUESTS.cpu, memory: fetchMemory },
      limits: { memory: limits['memory']! },
    },
  };
}

/** Sets the resources of the named containers (and init containers) of a Deployment. */
function withResources(o: KubeObject, byContainer: Record<string, QuantityResources>): KubeObject {
  const pod = (o as { spec?: { template?: { spec?: Record<string, unknown> } } }).spec?.template?.spec;
  if (o.kind !== 'Deployment' || !pod) return o;
  for (const list of ['initContainers', 'containers']) {
    for (const c of (pod[list] as Array<Record<string, unknown>> | undefined) ?? []) {
      const r = byContainer[c['name'] as string];
      if (r) c['resources'] = { requests: { ...r.requests }, limits: { ...r.limits } };
    }
  }
  return o;
}
