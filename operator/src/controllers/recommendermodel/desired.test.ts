import { describe, expect, it } from 'vitest';
import type { KubeObject } from '../../runtime/kube.js';
import { buildServingObjects, cpuMillis, memSize } from './desired.js';
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
    spec: { containers: Array<{ image: string; ports: unknown; resources: { requests: unknown } }> };
  };
}
const byKind = (objs: KubeObject[], kind: string) =>
  objs.find((o) => o.kind === kind) as KubeObject & { spec: DeploymentLike };

describe('buildServingObjects', () => {
  it('builds the six children, all owned by the model and labelled as managed by crema', () => {
    const objs = buildServingObjects(rm());
    expect(objs.map((o) => `${o.kind}/${o.metadata?.name}`).sort()).toEqual([
      'ConfigMap/drinks-model',
      'ConfigMap/drinks-router',
      'Deployment/drinks-stable',
      'HorizontalPodAutoscaler/drinks',
      'PodDisruptionBudget/drinks',
      'Service/drinks',
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
        rm({ port: 9000, image: 'crema/serving:9', resources: { requests: { cpu: '1', memory: '1Gi' } } }),
      ),
      'Deployment',
    );
    const c = d.spec.template.spec.containers[0]!;
    expect(c.image).toBe('crema/serving:9');
    expect(c.ports).toEqual([{ containerPort: 9000 }]);
    expect(c.resources.requests).toEqual({ cpu: '1000m', memory: '1024Mi' });
  });
});

describe('quantities', () => {
  it.each([
    ['250m', 250],
    ['1', 1000],
    ['0.5', 500],
  ])('cpu %s = %i millicores', (q, m) => expect(cpuMillis(q)).toBe(m));
  it('rejects malformed quantities naming them', () => {
    expect(() => cpuMillis('lots')).toThrow(/"lots"/);
    expect(() => memSize('1GB')).toThrow(/"1GB"/);
    expect(memSize('2Gi').toMebibytes()).toBe(2048);
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
    const router = objs.find((o) => o.metadata?.name === 'drinks-router') as KubeObject & {
      data: Record<string, string>;
    };
    expect(JSON.parse(router.data['router.json']!)).toEqual({
      salt: 'stores/drinks',
      stable: 'stable',
      variants: [
        { name: 'stable', weight: 75, upstream: 'http://drinks.stores.svc:80' },
        { name: 'canary', weight: 25, upstream: 'http://drinks-canary.stores.svc:80' },
      ],
    });
  });

  it('sends everything to stable without a canary', () => {
    const router = buildServingObjects(rm()).find(
      (o) => o.metadata?.name === 'drinks-router',
    ) as KubeObject & {
      data: Record<string, string>;
    };
    expect(JSON.parse(router.data['router.json']!).variants).toEqual([
      { name: 'stable', weight: 100, upstream: 'http://drinks.stores.svc:80' },
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
