import { describe, expect, it } from 'vitest';
import { buildServingObjects, cpuMillis, memSize } from './desired.js';
import type { RecommenderModel } from './types.js';

const rm: RecommenderModel = {
  apiVersion: 'crema.dev/v1alpha1',
  kind: 'RecommenderModel',
  metadata: { name: 'drinks', namespace: 'stores', uid: 'uid-1', generation: 1 },
  spec: {
    model: { uri: 'file:///models/drinks.onnx', sha256: 'a'.repeat(64), task: 'drink-ranking' },
    serving: { minReplicas: 3, maxReplicas: 12 },
  },
};

describe('buildServingObjects', () => {
  it('prints', () => {
    console.log(JSON.stringify(buildServingObjects(rm), null, 1));
    expect(cpuMillis('1')).toBe(1000);
    expect(memSize('256Mi').toMebibytes()).toBe(256);
  });
});
