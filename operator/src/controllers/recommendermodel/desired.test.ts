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
  it('builds the five children, all owned by the model and labelled as managed by crema', () => {
    const objs = buildServingObjects(rm());
    expect(objs.map((o) => `${o.kind}/${o.metadata?.name}`).sort()).toEqual([
      'ConfigMap/drinks-model',
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
