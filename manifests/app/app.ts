/**
 * The GitOps app: three charts (models, regions, experiments) in one namespace, one YAML file
 * each. Pure apart from `loadInputs`, which reads the committed YAML the app renders from.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { App, Chart, YamlOutputType } from 'cdk8s';
import { parseAllDocuments } from 'yaml';
import type { Experiment, RecommenderModel } from '../../operator/src/api/v1alpha1/index.js';
import { CremaExperiment } from './constructs/experiment.js';
import { CremaRecommenderModel } from './constructs/recommender-model.js';
import { CremaStoreRegion } from './constructs/store-region.js';
import { ManifestPropsError } from './constructs/invariant.js';
import { buildRegionSpecs, generatorStores, type RegionSpec } from './regions.js';
import type { SiteConfig } from './site.js';

/** Everything the charts are built from. */
export interface GitOpsInputs {
  readonly models: readonly RecommenderModel[];
  readonly experiments: readonly Experiment[];
  readonly regions: readonly RegionSpec[];
}

/** Reads every YAML document of `kind` in `dir` (files in name order, documents in file order). */
async function readKind<T>(dir: string, kind: string): Promise<T[]> {
  const files = (await readdir(dir)).filter((f) => /\.ya?ml$/.test(f)).sort();
  const out: T[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(await readFile(join(dir, f), 'utf8'))) {
      const obj = doc.toJS() as { kind?: string } | null;
      if (obj?.kind === kind) out.push(obj as T);
    }
  }
  return out;
}

/** Reads the models, experiments and the generator's stores the site names, under `root`. */
export async function loadInputs(root: string, site: SiteConfig): Promise<GitOpsInputs> {
  const models: RecommenderModel[] = [];
  for (const d of site.modelDirs)
    models.push(...(await readKind<RecommenderModel>(join(root, d), 'RecommenderModel')));
  const experiments = await readKind<Experiment>(join(root, site.experimentDir), 'Experiment');
  return { models, experiments, regions: buildRegionSpecs(site, generatorStores(site)) };
}

/** Builds the app (not yet synthesized); `outdir` defaults to CDK8S_OUTDIR, as the cdk8s CLI sets it. */
export function buildGitOpsApp(site: SiteConfig, inputs: GitOpsInputs, outdir?: string): App {
  const app = new App({
    ...(outdir ? { outdir } : {}),
    yamlOutputType: YamlOutputType.FILE_PER_CHART,
    outputFileExtension: '.yaml',
  });
  const chart = (id: string) =>
    new Chart(app, id, { namespace: site.namespace, disableResourceNameHashes: true });

  const models = chart('models');
  const known = new Set<string>();
  for (const model of inputs.models) {
    const m = new CremaRecommenderModel(models, model.metadata?.name ?? `model-${known.size}`, { model });
    if (known.has(m.modelName))
      throw new ManifestPropsError(
        `models/${m.modelName}`,
        'metadata.name',
        'is rendered twice (two model files use it)',
      );
    known.add(m.modelName);
  }

  const regions = chart('regions');
  for (const r of inputs.regions) {
    if (r.spec.serving && !known.has(r.spec.serving.modelRef))
      throw new ManifestPropsError(
        `regions/${r.name}`,
        'spec.serving.modelRef',
        `names ${JSON.stringify(r.spec.serving.modelRef)}, which this app does not render`,
      );
    new CremaStoreRegion(regions, r.name, r);
  }

  const experiments = chart('experiments');
  for (const experiment of inputs.experiments)
    new CremaExperiment(experiments, experiment.metadata?.name ?? 'experiment', {
      experiment,
      knownModels: known,
    });
  return app;
}
