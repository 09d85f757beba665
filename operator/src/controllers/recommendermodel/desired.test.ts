import { describe, expect, it } from 'vitest';
import type { KubeObject } from '../../runtime/kube.js';
import { parseRedisTarget } from '../../../../contracts/redis-target.js';
import { buildServingObjects, checkRedisAddress } from './desired.js';
import type { RecommenderModel } from './types.js';

const rm = (serving: Record<string, unknown> = {}): RecommenderModel =>
  ({
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    metadata: { name: 'drinks', namespace: 'stores', uid: 'uid-1', generation: 1 },
    spec: {
      model: { uri: 'file:///models/drinks.onnx', sha256: 'a'.repeat(64), task: 'drink-ranking' },
      serving: { minReplicas: 3, maxReplicas: 12, ...serving },
    },
  }) as RecommenderModel;

interface DeploymentLike {
  replicas?: number;
  template: {
    metadata: { annotations: Record<string, string> };
    spec: {
      containers: Array<{ image: string; ports: unknown; resources: unknown }>;
      initContainers?: Array<{ resources: unknown }>;
    };
  };
}
const byKind = (objs: KubeObject[], kind: string) =>
  objs.find((o) => o.kind === kind) as KubeObject & { spec: DeploymentLike };

describe('buildServingObjects', () => {
  it('builds its children, all owned by the model and labelled as managed by crema', () => {
    const objs = buildServingObjects(rm());
    expect(objs.map((o) => `${o.kind}/${o.metadata?.name}`).sort()).toEqual([
      'ConfigMap/drinks-model',
      'ConfigMap/drinks-router',
      'Deployment/drinks-stable',
      'HorizontalPodAutoscaler/drinks',
      'PodDisruptionBudget/drinks',
      'Role/drinks-router',
      'RoleBinding/drinks-router',
      'Service/drinks',
      'Service/drinks-stable',
      'ServiceAccount/drinks-router',
    ]);
    for (const o of objs) {
      expect(o.metadata?.namespace).toBe('stores');
      expect(o.metadata?.labels?.['app.kubernetes.io/managed-by']).toBe('crema-operator');
      expect(o.metadata?.ownerReferences).toEqual([
        expect.objectContaining({ uid: 'uid-1', controller: true }),
      ]);
    }
  });

  it('leaves replicas to the HPA and carries none of cdk8s bookkeeping labels', () => {
    const objs = buildServingObjects(rm());
    const d = byKind(objs, 'Deployment');
    expect(d.spec.replicas).toBeUndefined();
    expect(JSON.stringify(objs)).not.toContain('cdk8s.io');
    expect(byKind(objs, 'HorizontalPodAutoscaler').spec).toMatchObject({ minReplicas: 3, maxReplicas: 12 });
  });

  it('is deterministic (same input, same output: no timestamps in the pod template)', () => {
    expect(buildServingObjects(rm())).toEqual(buildServingObjects(rm()));
  });

  it('rolls the Deployment when the model digest changes, through a pod template annotation', () => {
    const a = byKind(buildServingObjects(rm()), 'Deployment');
    const other = rm();
    other.spec.model.sha256 = 'b'.repeat(64);
    const b = byKind(buildServingObjects(other), 'Deployment');
    expect(a.spec.template.metadata.annotations['crema.dev/model-sha256']).not.toBe(
      b.spec.template.metadata.annotations['crema.dev/model-sha256'],
    );
  });

  it('uses the requested port, image and resources', () => {
    const d = byKind(
      buildServingObjects(
        rm({
          port: 9000,
          image: 'crema/serving:9',
          resources: { requests: { cpu: '1', memory: '1Gi' }, limits: { memory: '2Gi' } },
        }),
      ),
      'Deployment',
    );
    const c = d.spec.template.spec.containers[0]!;
    expect(c.image).toBe('crema/serving:9');
    expect(c.ports).toEqual([{ containerPort: 9000 }]);
    expect(c.resources).toEqual({ requests: { cpu: '1', memory: '1Gi' }, limits: { memory: '2Gi' } });
  });
});

describe('quantities', () => {
  const resources = (r: unknown) =>
    byKind(buildServingObjects(rm(r === undefined ? {} : { resources: r })), 'Deployment').spec.template.spec;

  it('renders any Kubernetes quantity as written, for the serving and the init container', () => {
    const pod = resources({
      requests: { cpu: '0.5', memory: '1.5Gi' },
      limits: { memory: '2G', cpu: '1500m' },
    });
    expect(pod.containers[0]!.resources).toEqual({
      requests: { cpu: '0.5', memory: '1.5Gi' },
      limits: { memory: '2G', cpu: '1500m' },
    });
    expect(pod.initContainers![0]!.resources).toEqual({
      requests: { cpu: '50m', memory: '64Mi' },
      limits: { memory: '2G' },
    });
  });

  it('defaults to 250m / 256Mi requests and a 512Mi limit', () => {
    expect(resources(undefined).containers[0]!.resources).toEqual({
      requests: { cpu: '250m', memory: '256Mi' },
      limits: { memory: '512Mi' },
    });
  });

  it('the init container never asks for more than the pod may use', () => {
    expect(
      resources({ requests: { memory: '32Mi' }, limits: { memory: '48Mi' } }).initContainers![0]!.resources,
    ).toEqual({
      requests: { cpu: '50m', memory: '48Mi' },
      limits: { memory: '48Mi' },
    });
  });

  it.each([
    [
      { requests: { memory: '1Gi' } },
      /spec.serving.resources.requests.memory \(1Gi\) is above spec.serving.resources.limits.memory \(512Mi\)/,
    ],
    [{ requests: { cpu: '2' }, limits: { cpu: '1' } }, /requests.cpu \(2\) is above .*limits.cpu \(1\)/],
    [
      { requests: { memory: '1GB' } },
      /spec.serving.resources.requests.memory: "1GB" is not a Kubernetes quantity/,
    ],
  ])('refuses %j naming the field', (r, message) => {
    expect(() => resources(r)).toThrow(message);
  });
});

describe('canary plan', () => {
  const plan = {
    stable: { sha256: 'a'.repeat(64), uri: 'file:///models/drinks-v1.onnx' },
    canary: { sha256: 'b'.repeat(64), uri: 'file:///models/drinks-v2.onnx' },
    canaryWeight: 25,
  };

  it('runs the canary next to stable, with its own Service, and routes its weight through the router config', () => {
    const objs = buildServingObjects(rm(), plan);
    const names = objs.map((o) => `${o.kind}/${o.metadata?.name}`);
    expect(names).toEqual(expect.arrayContaining(['Deployment/drinks-canary', 'Service/drinks-canary']));
    const deployments = objs.filter((o) => o.kind === 'Deployment') as Array<
      KubeObject & { spec: DeploymentLike }
    >;
    const sha = (name: string) =>
      deployments.find((d) => d.metadata?.name === name)!.spec.template.metadata.annotations[
        'crema.dev/model-sha256'
      ];
    expect(sha('drinks-stable')).toBe('a'.repeat(64));
    expect(sha('drinks-canary')).toBe('b'.repeat(64));
    // 25% of minReplicas 3, rounded up; the HPA keeps scaling stable only.
    expect(deployments.find((d) => d.metadata?.name === 'drinks-canary')!.spec.replicas).toBe(1);
    const router = objs.find(
      (o) => o.kind === 'ConfigMap' && o.metadata?.name === 'drinks-router',
    ) as KubeObject & {
      data: Record<string, string>;
    };
    expect(JSON.parse(router.data['router.json']!)).toEqual({
      salt: 'stores/drinks',
      stable: 'stable',
      variants: [
        { name: 'stable', weight: 75, upstream: 'http://drinks-stable.stores.svc:80' },
        { name: 'canary', weight: 25, upstream: 'http://drinks-canary.stores.svc:80' },
      ],
    });
  });

  it('sends everything to stable without a canary', () => {
    const router = buildServingObjects(rm()).find(
      (o) => o.kind === 'ConfigMap' && o.metadata?.name === 'drinks-router',
    ) as KubeObject & {
      data: Record<string, string>;
    };
    expect(JSON.parse(router.data['router.json']!).variants).toEqual([
      { name: 'stable', weight: 100, upstream: 'http://drinks-stable.stores.svc:80' },
    ]);
  });
});

describe('drift rules', () => {
  it('renders Prometheus rules for the live revisions when spec.drift is set', () => {
    const m = rm();
    m.spec.drift = { psiThreshold: 0.25, window: '10m', action: 'Rollback' };
    const objs = buildServingObjects(m, {
      stable: { sha256: 'a'.repeat(64), uri: 'file:///a.onnx' },
      canary: { sha256: 'b'.repeat(64), uri: 'file:///b.onnx' },
      canaryWeight: 10,
    });
    const cm = objs.find((o) => o.metadata?.name === 'drinks-drift-rules') as KubeObject & {
      data: Record<string, string>;
    };
    expect(cm.metadata?.labels?.['crema.dev/prometheus-rules']).toBe('true');
    const rules = cm.data['rules.yaml']!;
    expect(rules).toContain(`revision="${'a'.repeat(64)}"`);
    expect(rules).toContain(`revision="${'b'.repeat(64)}"`);
    expect(rules).toContain('> 0.25');
  });

  it('renders none without spec.drift', () => {
    expect(buildServingObjects(rm()).some((o) => o.metadata?.name === 'drinks-drift-rules')).toBe(false);
  });
});

type PodSpec = {
  initContainers: Array<{ name: string; command: string[]; env: Array<{ name: string; value?: string }> }>;
  containers: Array<{
    name: string;
    env: Array<{ name: string; value?: string; valueFrom?: unknown }>;
    volumeMounts: Array<{ mountPath: string; readOnly?: boolean }>;
    terminationMessagePolicy: string;
  }>;
  serviceAccountName?: string;
};
const podOf = (objs: KubeObject[], name: string) =>
  (
    objs.find((o) => o.kind === 'Deployment' && o.metadata?.name === name) as KubeObject & {
      spec: { template: { spec: PodSpec } };
    }
  ).spec.template.spec;
const envOf = (c: { env: Array<{ name: string; value?: string; valueFrom?: unknown }> }) =>
  Object.fromEntries(c.env.map((e) => [e.name, e.value ?? e.valueFrom]));

describe('what a serving pod needs, rendered', () => {
  it('delivers the model with an init container that checks the pinned digest, into a read-only volume', () => {
    const m = rm();
    m.spec.model = {
      ...m.spec.model,
      uri: 'https://models.example/drinks.onnx',
      metadataUri: 'https://models.example/drinks.meta',
    };
    const pod = podOf(buildServingObjects(m), 'drinks-stable');
    const fetch = pod.initContainers[0]!;
    expect(fetch.name).toBe('fetch-model');
    expect(fetch.command).toEqual(['/usr/local/bin/node', '/app/fetch-model.js']);
    expect(envOf(fetch)).toEqual({
      CREMA_FETCH_URI: 'https://models.example/drinks.onnx',
      CREMA_FETCH_SHA256: 'a'.repeat(64),
      CREMA_FETCH_TASK: 'drink-ranking',
      CREMA_FETCH_DIR: '/var/lib/crema/models',
      CREMA_FETCH_METADATA_URI: 'https://models.example/drinks.meta',
    });
    const serving = pod.containers[0]!;
    expect(envOf(serving)).toMatchObject({
      CREMA_RANKING_MODEL_URI: 'file:///var/lib/crema/models/drink-ranking.onnx',
      CREMA_RANKING_MODEL_SHA256: 'a'.repeat(64),
      CREMA_MODEL_NAME: 'drinks',
      // The metrics' `namespace` label, from the downward API.
      POD_NAMESPACE: { fieldRef: { fieldPath: 'metadata.namespace' } },
    });
    expect(serving.volumeMounts).toContainEqual({
      mountPath: '/var/lib/crema/models',
      name: 'models',
      readOnly: true,
    });
    // A crash before the termination message is written still tells why (log tail).
    expect(serving.terminationMessagePolicy).toBe('FallbackToLogsOnError');
  });

  it("sizes V8's heap from the container's memory limit (Node 20 would size it from the node's memory)", () => {
    const nodeOptions = (r?: unknown) =>
      envOf(
        podOf(buildServingObjects(rm(r === undefined ? {} : { resources: r })), 'drinks-stable')
          .containers[0]!,
      )['NODE_OPTIONS'];
    expect(nodeOptions()).toBe('--max-old-space-size=256');
    expect(nodeOptions({ requests: { memory: '512Mi' }, limits: { memory: '1Gi' } })).toBe(
      '--max-old-space-size=512',
    );
  });

  it('renders the Redis address from the spec, else from the operator default, else none', () => {
    const redisOf = (m: RecommenderModel, redisUrl?: string) =>
      envOf(
        podOf(buildServingObjects(m, undefined, undefined, redisUrl ? { redisUrl } : {}), 'drinks-stable')
          .containers[0]!,
      )['REDIS_URL'];
    expect(redisOf(rm(), 'redis://default:6379')).toBe('redis://default:6379');
    expect(redisOf(rm({ redisUrl: 'redis://mine:6379' }), 'redis://default:6379')).toBe('redis://mine:6379');
    expect(redisOf(rm())).toBeUndefined();
    // A Redis Cluster's seed list reaches the pods verbatim; serving reads it as a cluster.
    const seeds = 'redis://redis-0.redis:6379,redis://redis-1.redis:6379';
    expect(redisOf(rm({ redisUrl: seeds }))).toBe(seeds);
    expect(parseRedisTarget(seeds)).toMatchObject({
      kind: 'cluster',
      seeds: [{ host: 'redis-0.redis' }, {}],
    });
  });

  it('reports a missing or unparsable Redis address as the problem, naming where it came from', () => {
    expect(checkRedisAddress(rm(), {})).toMatchObject({ reason: 'RedisNotConfigured' });
    expect(checkRedisAddress(rm(), { redisUrl: 'redis://r:6379' })).toBeNull();
    expect(checkRedisAddress(rm({ redisUrl: 'redis://a:6379,redis://b:6379' }), {})).toBeNull();
    expect(checkRedisAddress(rm({ redisUrl: 'redis://a:6379,http://b:6379' }), {})).toEqual({
      reason: 'RedisAddressInvalid',
      message: 'spec.serving.redisUrl: "http://b:6379" must start with redis:// or rediss://',
    });
    expect(checkRedisAddress(rm(), { redisUrl: 'redis://a:6379/2,redis://b:6379' })).toMatchObject({
      reason: 'RedisAddressInvalid',
      message: expect.stringMatching(/^CREMA_SERVING_REDIS_URL: a Redis Cluster has only database 0/),
    });
  });

  it('reads the admin token from a Secret (default crema-serving-admin/token), optional so pods start without it', () => {
    const token = (m: RecommenderModel) =>
      envOf(podOf(buildServingObjects(m), 'drinks-stable').containers[0]!)['CREMA_ADMIN_TOKEN'];
    expect(token(rm())).toEqual({
      secretKeyRef: { name: 'crema-serving-admin', key: 'token', optional: true },
    });
    expect(token(rm({ adminTokenSecretRef: { name: 'ops', key: 'bearer' } }))).toEqual({
      secretKeyRef: { name: 'ops', key: 'bearer', optional: true },
    });
  });

  it('marks pods for Prometheus scraping', () => {
    const d = byKind(buildServingObjects(rm()), 'Deployment');
    expect(d.spec.template.metadata.annotations).toMatchObject({
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': '8080',
      'prometheus.io/path': '/metrics',
    });
  });
});

describe('the router while traffic is split', () => {
  const plan = {
    stable: { sha256: 'a'.repeat(64), uri: 'http://m/a.onnx' },
    canary: { sha256: 'b'.repeat(64), uri: 'http://m/b.onnx' },
    canaryWeight: 10,
  };
  const entrySelector = (objs: KubeObject[]) =>
    (
      objs.find((o) => o.kind === 'Service' && o.metadata?.name === 'drinks') as KubeObject & {
        spec: { selector: Record<string, string> };
      }
    ).spec.selector;

  it('runs router pods that watch the router ConfigMap with a service account allowed only that', () => {
    const objs = buildServingObjects(rm(), plan);
    const pod = podOf(objs, 'drinks-router');
    expect(pod.serviceAccountName).toBe('drinks-router');
    expect(envOf(pod.containers[0]!)).toMatchObject({
      CREMA_MODE: 'router',
      CREMA_ROUTER_CONFIGMAP: 'drinks-router',
    });
    const role = objs.find((o) => o.kind === 'Role') as KubeObject & { rules: unknown[] };
    expect(role.rules).toEqual([
      {
        apiGroups: [''],
        resources: ['configmaps'],
        resourceNames: ['drinks-router'],
        verbs: ['get', 'list', 'watch'],
      },
    ]);
  });

  it('points the entry Service at the router only once the router is ready, and at stable otherwise', () => {
    expect(entrySelector(buildServingObjects(rm(), plan))).toEqual({
      'crema.dev/model': 'drinks',
      'crema.dev/track': 'stable',
    });
    expect(entrySelector(buildServingObjects(rm(), { ...plan, routeThroughRouter: true }))).toEqual({
      'crema.dev/model': 'drinks',
      'crema.dev/track': 'router',
    });
    // No split, no router: a stale flag cannot send clients to router pods that do not exist.
    const noCanary = buildServingObjects(rm(), {
      stable: plan.stable,
      canaryWeight: 0,
      routeThroughRouter: true,
    });
    expect(entrySelector(noCanary)).toEqual({ 'crema.dev/model': 'drinks', 'crema.dev/track': 'stable' });
    expect(noCanary.some((o) => o.kind === 'Deployment' && o.metadata?.name === 'drinks-router')).toBe(false);
  });
});

describe('the admission proxy (spec.serving.admissionProxy)', () => {
  interface Container {
    name: string;
    command?: string[];
    ports?: { containerPort: number }[];
    env?: { name: string; value?: string }[];
    readinessProbe?: { httpGet?: { port: number }; tcpSocket?: { port: number } };
    livenessProbe?: { httpGet?: { port: number }; tcpSocket?: { port: number } };
    startupProbe?: { httpGet?: { port: number } };
    resources?: { requests: Record<string, string>; limits: Record<string, string> };
    volumeMounts?: { mountPath: string; name: string }[];
  }
  const pod = (objs: KubeObject[], name = 'drinks-stable') => {
    const d = objs.find((o) => o.kind === 'Deployment' && o.metadata?.name === name) as unknown as {
      spec: {
        template: { metadata: { annotations: Record<string, string> }; spec: { containers: Container[] } };
      };
    };
    return d.spec.template;
  };
  const env = (c: Container) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
  const service = (objs: KubeObject[], name: string) =>
    (
      objs.find((o) => o.kind === 'Service' && o.metadata?.name === name) as unknown as {
        spec: { ports: { port: number; targetPort: number }[] };
      }
    ).spec.ports;

  it('is off by default: one serving container on the pod port, the Service straight to it', () => {
    const objs = buildServingObjects(rm());
    const t = pod(objs);
    expect(t.spec.containers.map((c) => c.name)).toEqual(['serving']);
    expect(t.spec.containers[0]!.ports).toEqual([expect.objectContaining({ containerPort: 8080 })]);
    expect(env(t.spec.containers[0]!)['CREMA_PROXY_STATS_PATH']).toBeUndefined();
    expect(service(objs, 'drinks-stable')[0]!.targetPort).toBe(8080);
  });

  it('puts nginx on the pod port in front of serving, which moves to the next port with its probes and metrics', () => {
    const objs = buildServingObjects(rm({ admissionProxy: { enabled: true, maxConcurrency: 24 } }));
    const t = pod(objs);
    const [serving, proxy] = t.spec.containers;
    expect(t.spec.containers.map((c) => c.name)).toEqual(['serving', 'admission-proxy']);
    // The Service still targets the pod port: now the proxy's.
    expect(service(objs, 'drinks-stable')[0]!.targetPort).toBe(8080);
    expect(proxy!.ports).toEqual([expect.objectContaining({ containerPort: 8080 })]);
    expect(proxy!.command).toEqual(['/usr/local/bin/node', '/app/proxy.js']);
    expect(env(proxy!)).toMatchObject({
      PORT: '8080',
      CREMA_PROXY_UPSTREAM_PORT: '8081',
      CREMA_PROXY_MAX_CONCURRENCY: '24',
      CREMA_PROXY_STATS_PATH: '/tmp/crema-proxy/refused',
    });
    // Probes never go through the proxy: a spike's refusals must not take the pod out.
    expect(proxy!.readinessProbe?.tcpSocket?.port).toBe(8080);
    expect(proxy!.livenessProbe?.tcpSocket?.port).toBe(8080);
    expect(serving!.ports).toEqual([expect.objectContaining({ containerPort: 8081 })]);
    expect(env(serving!)).toMatchObject({ PORT: '8081', CREMA_PROXY_STATS_PATH: '/tmp/crema-proxy/refused' });
    expect(serving!.readinessProbe?.httpGet?.port).toBe(8081);
    expect(serving!.livenessProbe?.httpGet?.port).toBe(8081);
    expect(serving!.startupProbe?.httpGet?.port).toBe(8081);
    expect(t.metadata.annotations['prometheus.io/port']).toBe('8081');
    // Both share the pod's /tmp: the proxy writes its refusal count there, serving reads it.
    const tmpOf = (c: Container) => c.volumeMounts?.find((m) => m.mountPath === '/tmp')?.name;
    expect(tmpOf(proxy!)).toBeDefined();
    expect(tmpOf(proxy!)).toBe(tmpOf(serving!));
    expect(proxy!.resources).toEqual({
      requests: { cpu: '50m', memory: '64Mi' },
      limits: { memory: '128Mi' },
    });
  });

  it('defaults maxConcurrency to 16 and runs in canary pods too', () => {
    const objs = buildServingObjects(rm({ admissionProxy: { enabled: true } }), {
      stable: { sha256: 'a'.repeat(64), uri: 'file:///models/drinks-v1.onnx' },
      canary: { sha256: 'b'.repeat(64), uri: 'file:///models/drinks-v2.onnx' },
      canaryWeight: 25,
    });
    for (const name of ['drinks-stable', 'drinks-canary']) {
      const proxy = pod(objs, name).spec.containers.find((c) => c.name === 'admission-proxy');
      expect(proxy, name).toBeDefined();
      expect(env(proxy!)['CREMA_PROXY_MAX_CONCURRENCY']).toBe('16');
    }
  });
});
