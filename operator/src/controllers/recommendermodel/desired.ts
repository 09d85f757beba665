/**
 * Pure builders for what a RecommenderModel should run: the model ConfigMap, the stable serving
 * Deployment (no replicas: the HPA owns them), its Service, HorizontalPodAutoscaler and
 * PodDisruptionBudget. Built with cdk8s-plus-28 constructs and synthesized in-process; every
 * default the library would add is set deliberately so server-side apply owns exactly these.
 */
import { ApiObject, App, Chart, Duration, Size } from 'cdk8s';
import * as kplus from 'cdk8s-plus-28';
import type { KubeObject } from '../../runtime/kube.js';
import { ConfigMapTrafficRouter, type TrafficRouter } from '../../traffic/router.js';
import { buildDriftRules } from '../../analysis/rules.js';
import { modelEnvNames } from '../../../../contracts/serving-env.js';
import type { RecommenderModel } from './types.js';

/** Labels on every child; the operator's informers select on `managed-by`. */
export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'crema-operator' } as const;
export const MODEL_LABEL = 'crema.dev/model';
export const TRACK_LABEL = 'crema.dev/track';
/** Label on ConfigMaps that hold Prometheus rule files (`rules.yaml`). */
export const RULES_LABEL = 'crema.dev/prometheus-rules';
/** Pod template annotation: a new model digest rolls the Deployment. */
export const MODEL_SHA_ANNOTATION = 'crema.dev/model-sha256';

/** Names of the children of model `name`. */
export function childNames(name: string) {
  return {
    configMap: `${name}-model`,
    deployment: `${name}-stable`,
    canaryDeployment: `${name}-canary`,
    service: name,
    canaryService: `${name}-canary`,
    hpa: name,
    pdb: name,
    router: `${name}-router`,
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
}

/** Builds the serving children of `rm` for `plan`, each with an owner reference to it. */
export function buildServingObjects(
  rm: RecommenderModel,
  plan: ServingPlan = { stable: { sha256: rm.spec.model.sha256, uri: rm.spec.model.uri }, canaryWeight: 0 },
  router: TrafficRouter = new ConfigMapTrafficRouter(),
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
  const names = childNames(name);
  const common = {
    'app.kubernetes.io/name': 'crema-serving',
    'app.kubernetes.io/instance': name,
    ...MANAGED_BY,
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
        labels: { ...common, ...selector },
        annotations: { [MODEL_SHA_ANNOTATION]: rev.sha256 },
      },
      strategy: kplus.DeploymentStrategy.rollingUpdate({
        maxSurge: kplus.PercentOrAbsolute.absolute(1),
        maxUnavailable: kplus.PercentOrAbsolute.absolute(0),
      }),
      automountServiceAccountToken: false,
      securityContext: { ensureNonRoot: true, user: 1000, group: 1000 },
      containers: [
        {
          name: 'serving',
          image: serving.image ?? 'crema/serving:0.1.0',
          imagePullPolicy: kplus.ImagePullPolicy.IF_NOT_PRESENT,
          portNumber: port,
          envVariables: {
            CREMA_MODEL_NAME: kplus.EnvValue.fromValue(name),
            // serving/src/server.ts reads the model of each task from these (contracts/serving-env.ts).
            [modelEnv.uri]: kplus.EnvValue.fromValue(rev.uri),
            [modelEnv.sha256]: kplus.EnvValue.fromValue(rev.sha256),
            CREMA_VARIANT: kplus.EnvValue.fromValue(track),
            PORT: kplus.EnvValue.fromValue(String(port)),
          },
          readiness: kplus.Probe.fromHttpGet('/readyz', { port, periodSeconds: Duration.seconds(5) }),
          liveness: kplus.Probe.fromHttpGet('/healthz', { port, periodSeconds: Duration.seconds(10) }),
          startup: kplus.Probe.fromHttpGet('/healthz', {
            port,
            failureThreshold: 30,
            periodSeconds: Duration.seconds(2),
          }),
          resources: {
            cpu: {
              request: kplus.Cpu.millis(cpuMillis(serving.resources?.requests?.cpu ?? '250m')),
              ...(serving.resources?.limits?.cpu
                ? { limit: kplus.Cpu.millis(cpuMillis(serving.resources.limits.cpu)) }
                : {}),
            },
            memory: {
              request: memSize(serving.resources?.requests?.memory ?? '256Mi'),
              limit: memSize(serving.resources?.limits?.memory ?? '512Mi'),
            },
          },
          securityContext: {
            ensureNonRoot: true,
            readOnlyRootFilesystem: true,
            allowPrivilegeEscalation: false,
          },
        },
      ],
    });
    d.select(kplus.LabelSelector.of({ labels: selector }));
    new kplus.Service(chart, `${track}-service`, {
      metadata: { name: track === 'stable' ? names.service : names.canaryService },
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
  }

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
      stableUpstream: `http://${names.service}.${namespace}.svc:80`,
      ...(plan.canary ? { canaryUpstream: `http://${names.canaryService}.${namespace}.svc:80` } : {}),
    },
    plan.canaryWeight,
  );
  return [...chart.toJson(), ...routed].map((o: KubeObject) =>
    normalize({
      ...o,
      metadata: { ...o.metadata, labels: { ...common, ...o.metadata?.labels }, ownerReferences: [owner] },
    }),
  );
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

/** Parses a CPU quantity ("250m", "1", "0.5") into millicores. */
export function cpuMillis(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(m?)$/.exec(q);
  if (!m) throw new Error(`invalid CPU quantity ${JSON.stringify(q)}`);
  return m[2] ? Math.round(Number(m[1])) : Math.round(Number(m[1]) * 1000);
}

/** Parses a binary memory quantity ("256Mi", "1Gi") into a cdk8s Size. */
export function memSize(q: string): Size {
  const m = /^(\d+)(Ki|Mi|Gi|Ti)$/.exec(q);
  if (!m) throw new Error(`invalid memory quantity ${JSON.stringify(q)} (use Ki, Mi, Gi or Ti)`);
  const n = Number(m[1]);
  const unit = { Ki: Size.kibibytes, Mi: Size.mebibytes, Gi: Size.gibibytes, Ti: Size.tebibytes }[
    m[2] as 'Ki'
  ];
  return unit(n);
}
