/**
 * The experiment's traffic objects (pure): the router the operator renders for canaries, run
 * for the experiment — its config (router.json: the spec's salt, the control as `stable`, each
 * variant's weight with its model's stable Service as upstream, and the experiment id serving
 * counts under), the router Deployment, the Service clients call (`<experiment>-exp`), and the
 * router's read-only access to its ConfigMap. Design: docs/adr/0012-experiment-controller.md.
 */
import { experimentRunOf } from '../../../../contracts/experiments.js';
import { EXPERIMENT_LABEL, MANAGED_BY } from '../../../../contracts/kube-keys.js';
import type { RouterConfig } from '../../../../contracts/router-config.js';
import {
  ROUTER_CONFIG_KEY,
  SERVING_ENV,
  nodeOptionsForMemoryLimit,
} from '../../../../contracts/serving-env.js';
import type { KubeObject } from '../../runtime/kube.js';
import {
  DRAIN_SECONDS,
  MAX_CONNECTION_AGE_SECONDS,
  ROUTER_CONTAINER,
  childNames,
} from '../recommendermodel/desired.js';
import { parseMaxDuration } from './decide.js';
import type { Experiment, RecommenderModel } from './types.js';

/** Names of an experiment's children. */
export function experimentChildNames(name: string) {
  return {
    /** The entry point clients of the experiment call. */
    service: `${name}-exp`,
    router: `${name}-exp-router`,
  };
}

const PORT = 8080;
const ROUTER_MEMORY_LIMIT_MIB = 256;

/**
 * The router config: the spec's weights while the experiment splits traffic, or everything to
 * the control (`split` false: not started, invalid, or ended).
 */
export function buildExperimentRouterConfig(exp: Experiment, split: boolean): RouterConfig {
  const ns = exp.metadata!.namespace!;
  const [control] = exp.spec.variants;
  return {
    salt: exp.spec.assignment.salt,
    stable: control!.name,
    variants: exp.spec.variants.map((v, i) => ({
      name: v.name,
      weight: split ? v.weight : i === 0 ? 100 : 0,
      upstream: `http://${childNames(v.modelRef).stableService}.${ns}.svc:80`,
    })),
    experiment: {
      id: `${ns}/${exp.metadata!.name!}`,
      // This object's run: one re-created under the same name counts from zero.
      run: experimentRunOf(exp.metadata!.uid!),
      ttlSeconds: Math.ceil(parseMaxDuration(exp.spec.maxDuration ?? '14d') / 1000),
    },
  };
}

/** The router's objects for `config`; the image is the control model's serving image. */
export function buildExperimentObjects(
  exp: Experiment,
  control: RecommenderModel,
  config: RouterConfig,
): KubeObject[] {
  const name = exp.metadata!.name!;
  const namespace = exp.metadata!.namespace!;
  const names = experimentChildNames(name);
  const labels = { ...MANAGED_BY, [EXPERIMENT_LABEL]: name };
  const podLabels = { ...labels, 'app.kubernetes.io/name': 'crema-router', 'crema.dev/track': 'router' };
  const image = control.spec.serving?.image ?? 'crema/serving:0.1.0';
  const owner = {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'Experiment',
    name,
    uid: exp.metadata!.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
  const meta = (n: string) => ({ name: n, namespace, labels, ownerReferences: [owner] });
  const probe = (path: string, periodSeconds: number) => ({
    httpGet: { path, port: PORT },
    periodSeconds,
    timeoutSeconds: 2,
    failureThreshold: 3,
  });
  return [
    {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: meta(names.router),
      data: { [ROUTER_CONFIG_KEY]: JSON.stringify(config) },
    },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(names.router) },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: meta(names.router),
      rules: [
        {
          apiGroups: [''],
          resources: ['configmaps'],
          resourceNames: [names.router],
          verbs: ['get', 'list', 'watch'],
        },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: meta(names.router),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: names.router },
      subjects: [{ kind: 'ServiceAccount', name: names.router, namespace }],
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta(names.router),
      spec: {
        // Two, so a router pod lost or rolled never leaves the experiment without a path.
        replicas: 2,
        selector: { matchLabels: { [EXPERIMENT_LABEL]: name, 'crema.dev/track': 'router' } },
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
        template: {
          metadata: {
            labels: podLabels,
            annotations: {
              'prometheus.io/scrape': 'true',
              'prometheus.io/port': String(PORT),
              'prometheus.io/path': '/metrics',
            },
          },
          spec: {
            serviceAccountName: names.router,
            automountServiceAccountToken: true,
            securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 },
            terminationGracePeriodSeconds: 30,
            containers: [
              {
                name: ROUTER_CONTAINER,
                image,
                imagePullPolicy: 'IfNotPresent',
                ports: [{ containerPort: PORT }],
                env: [
                  { name: SERVING_ENV.mode, value: 'router' },
                  { name: SERVING_ENV.port, value: String(PORT) },
                  { name: SERVING_ENV.routerConfigMap, value: names.router },
                  {
                    name: SERVING_ENV.podNamespace,
                    valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } },
                  },
                  { name: SERVING_ENV.drainSeconds, value: String(DRAIN_SECONDS) },
                  { name: SERVING_ENV.maxConnectionAgeSeconds, value: String(MAX_CONNECTION_AGE_SECONDS) },
                  {
                    name: 'NODE_OPTIONS',
                    value: nodeOptionsForMemoryLimit(ROUTER_MEMORY_LIMIT_MIB * 2 ** 20),
                  },
                ],
                readinessProbe: probe('/readyz', 2),
                livenessProbe: probe('/healthz', 10),
                resources: {
                  requests: { cpu: '100m', memory: '96Mi' },
                  limits: { memory: `${ROUTER_MEMORY_LIMIT_MIB}Mi` },
                },
                securityContext: {
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ['ALL'] },
                },
                terminationMessagePolicy: 'FallbackToLogsOnError',
              },
            ],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(names.service),
      spec: {
        selector: { [EXPERIMENT_LABEL]: name, 'crema.dev/track': 'router' },
        ports: [{ name: 'http', port: 80, targetPort: PORT }],
      },
    },
  ] as KubeObject[];
}
