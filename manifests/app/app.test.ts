/**
 * The GitOps app in-process: what it renders from the committed inputs, and the synth-time
 * errors a platform team sees for inputs the API server would accept but Crema cannot use.
 */
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { Experiment, RecommenderModel, StoreRegion } from '../../operator/src/api/v1alpha1/index.js';
import { buildGitOpsApp, loadInputs, type GitOpsInputs } from './app.js';
import { ManifestPropsError } from './constructs/invariant.js';
import { REGIONS } from '../../feature-jobs/src/generate/stores.js';
import { generatorStores } from './regions.js';
import { SITE } from './site.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** Synthesizes in memory: file name → objects. */
function render(inputs: GitOpsInputs): Map<string, Record<string, unknown>[]> {
  const app = buildGitOpsApp(SITE, inputs, '/nonexistent');
  return new Map(app.charts.map((c) => [c.node.id, c.toJson() as Record<string, unknown>[]]));
}

describe('the GitOps app', () => {
  it('renders one StoreRegion per generator region, every generator store in exactly one', async () => {
    const inputs = await loadInputs(root, SITE);
    const regions = render(inputs).get('regions') as unknown as StoreRegion[];
    const stores = generatorStores(SITE);
    expect(regions.map((r) => r.metadata?.name)).toEqual(REGIONS.map((r) => r.name));
    expect(regions).toHaveLength(8);
    const listed = regions.flatMap((r) => r.spec.stores);
    expect(listed).toHaveLength(SITE.generator.stores);
    expect(new Set(listed).size).toBe(SITE.generator.stores);
    for (const r of regions) {
      const tz = new Set(stores.filter((s) => r.spec.stores.includes(s.id)).map((s) => s.timezone));
      expect([...tz]).toEqual([r.spec.timezone]);
      expect(r.metadata?.namespace).toBe('crema');
      expect(r.spec.serving).toMatchObject({ modelRef: 'drink-ranking' });
      expect(r.spec.serving!.minReplicas!).toBeLessThanOrEqual(r.spec.serving!.maxReplicas!);
    }
  });

  it('renders every trained model and example model, and the example experiment', async () => {
    const out = render(await loadInputs(root, SITE));
    const models = out.get('models') as unknown as RecommenderModel[];
    expect(models.map((m) => m.metadata?.name)).toEqual(
      expect.arrayContaining([
        'drink-ranking',
        'addon-attach',
        'pickup-time',
        'churn',
        'drinks',
        'drinks-v2',
      ]),
    );
    // Lineage annotations from training reach Git unchanged.
    const ranking = models.find((m) => m.metadata?.name === 'drink-ranking')!;
    expect(ranking.metadata?.annotations?.['crema.dev/dataset-hash']).toMatch(/^[0-9a-f]{64}$/);
    const experiments = out.get('experiments') as unknown as Experiment[];
    expect(experiments.map((e) => e.metadata?.name)).toEqual(['drinks-v2']);
  });

  it('refuses inputs Crema cannot use, naming the construct and the field', async () => {
    const inputs = await loadInputs(root, SITE);
    const region = inputs.regions[0]!;
    const withRegion = (spec: Partial<StoreRegion['spec']>): GitOpsInputs => ({
      ...inputs,
      regions: [{ name: region.name, spec: { ...region.spec, ...spec } }],
    });
    const refused = (i: GitOpsInputs) => {
      try {
        render(i);
      } catch (err) {
        expect(err).toBeInstanceOf(ManifestPropsError);
        return (err as Error).message;
      }
      throw new Error('rendered');
    };
    expect(refused(withRegion({ timezone: 'Mars/Olympus' }))).toBe(
      'regions/northeast: spec.timezone "Mars/Olympus" is not an IANA timezone',
    );
    expect(refused(withRegion({ stores: ['s0001', 's0002', 's0001'] }))).toMatch(
      /regions\/northeast: spec.stores lists "s0001" twice/,
    );
    expect(
      refused(withRegion({ serving: { modelRef: 'drink-ranking', minReplicas: 9, maxReplicas: 3 } })),
    ).toMatch(/spec.serving.minReplicas \(9\) is above spec.serving.maxReplicas \(3\)/);
    expect(refused(withRegion({ serving: { modelRef: 'espresso' } }))).toMatch(
      /regions\/northeast: spec.serving.modelRef names "espresso"/,
    );
    expect(refused(withRegion({ freezeWindows: [{ days: ['Mon'], start: '10:00', end: '09:00' }] }))).toMatch(
      /spec.freezeWindows\[0\] ends \(09:00\) before it starts \(10:00\)/,
    );

    const exp = inputs.experiments[0]!;
    const withVariants = (variants: Experiment['spec']['variants']): GitOpsInputs => ({
      ...inputs,
      experiments: [{ ...exp, spec: { ...exp.spec, variants } }],
    });
    expect(
      refused(
        withVariants([
          { name: 'control', modelRef: 'drinks', weight: 50 },
          { name: 'v3', modelRef: 'drinks-v3', weight: 50 },
        ]),
      ),
    ).toMatch(/experiments\/drinks-v2: spec.variants\[1\].modelRef names "drinks-v3"/);
    expect(
      refused(
        withVariants([
          { name: 'control', modelRef: 'drinks', weight: 50 },
          { name: 'v2', modelRef: 'drinks-v2', weight: 40 },
        ]),
      ),
    ).toMatch(/spec.variants\[\*\].weight sum to 90, not 100/);
  });
});

describe('committed output', () => {
  it('manifests/gitops is what the app renders now (run `npx cdk8s synth` after changing an input)', async () => {
    const { readFile } = await import('node:fs/promises');
    const out = render(await loadInputs(root, SITE));
    for (const [chart, objects] of out) {
      const committed = parseAllDocuments(
        await readFile(`${root}/manifests/gitops/${chart}.yaml`, 'utf8'),
      ).map((d) => d.toJS() as unknown);
      expect(committed, `manifests/gitops/${chart}.yaml`).toEqual(objects);
    }
  });
});
