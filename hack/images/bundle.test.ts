import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMPONENTS, bundleComponent } from './bundle.js';

describe('image bundles', () => {
  it.each(Object.values(COMPONENTS).map((c) => [c.name, c] as const))(
    '%s holds its program and no test code, fixtures or dev tools',
    { timeout: 60_000 },
    async (_name, component) => {
      const out = await mkdtemp(join(tmpdir(), 'crema-bundle-test-'));
      try {
        const { inputs } = await bundleComponent(component, out);
        const ours = inputs.filter((f) => !f.startsWith('node_modules/'));
        expect(ours).toContain(Object.values(component.entries)[0]);
        // Tests, test scaffolding (operator/test, serving/test) and the dev tooling in hack/.
        expect(ours.filter((f) => /\.test\.ts$|(^|\/)test\/|^hack\/|^bench\//.test(f))).toEqual([]);
        const deps = new Set(inputs.filter((f) => f.startsWith('node_modules/')).map((f) => f.split('/')[1]));
        for (const dev of ['vitest', 'typescript', 'eslint', 'prettier', 'tsx', 'autocannon', 'esbuild']) {
          expect(deps.has(dev), dev).toBe(false);
        }
        // Native packages beside the bundle: only onnxruntime, only linux/x64.
        const native = await readdir(join(out, 'node_modules')).catch(() => [] as string[]);
        expect(native.sort()).toEqual(
          component.native.length ? ['onnxruntime-common', 'onnxruntime-node'] : [],
        );
      } finally {
        await rm(out, { recursive: true, force: true });
      }
    },
  );
});
