/**
 * Training end to end on a tiny dataset: four ONNX models whose onnxruntime outputs equal the
 * TypeScript models' predictions, valid metadata, GitOps YAML, and an evaluation report.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DRIFT_CONTEXT_SCHEME } from '../../../contracts/drift-binning.js';
import { validateModelMetadata, type ModelMetadata } from '../../../contracts/model-metadata.js';
import { ITEM_CATALOG_ANNOTATION, parseItemCatalog } from '../../../contracts/region-menu.js';
import type { StoreRegion } from '../../../operator/src/api/v1alpha1/index.js';
import {
  checkRegionMenu,
  itemCatalogOf,
} from '../../../operator/src/controllers/recommendermodel/regions.js';
import type { RecommenderModel } from '../../../operator/src/controllers/recommendermodel/types.js';
import { buildCatalog } from '../generate/catalog.js';
import { runEvaluation } from '../evaluate/evaluate.js';
import { Dataset, generateDataset } from '../generate/dataset.js';
import { sha256Hex } from './artifacts.js';
import { REQUEST_FEATURES } from './drift-baseline.js';
import { predictMlp } from './mlp.js';
import { runTraining, type TrainResult } from './train.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-train-'));
let result: TrainResult;
let ds: Dataset;

beforeAll(async () => {
  generateDataset({ seed: 11, users: 3000, stores: 20, start: '2026-10-01', days: 9 }, join(dir, 'ds'));
  ds = Dataset.open(join(dir, 'ds'));
  result = await runTraining({
    dataset: ds,
    outDir: join(dir, 'models'),
    manifestsDir: join(dir, 'manifests'),
    uriBase: 'https://models.example.com/crema/',
    evalDays: 3,
    windowDays: 30,
    seed: 1,
    rankingLists: 1500,
    rows: 3000,
    epochs: 3,
    now: () => new Date('2026-11-24T12:00:00Z'),
  });
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function regionWithMenu(seasonal: string[], unavailable: string[]): StoreRegion {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'StoreRegion',
    metadata: { name: 'west', namespace: 'default' },
    spec: { stores: ['s1'], timezone: 'UTC', menu: { seasonal, unavailable } },
  };
}

describe('training', () => {
  it('writes four models whose ONNX outputs equal the TypeScript model predictions', async () => {
    expect(result.models.map((m) => m.task).sort()).toEqual([
      'addon-attach',
      'churn',
      'drink-ranking',
      'pickup-time',
    ]);
    for (const m of result.models) {
      const bytes = readFileSync(m.paths.onnxPath);
      const cols = m.meta.inputs[0]!.features.length;
      // Realistic-range inputs: take them from the baseline histogram edges of each feature.
      const rows = 25;
      const x = new Float32Array(rows * cols);
      m.meta.inputs[0]!.features.forEach((f, c) => {
        const edges = m.meta.baseline.features[f]!.edges;
        for (let r = 0; r < rows; r++) x[r * cols + c] = edges[r % edges.length]!;
      });
      const session = await ort.InferenceSession.create(bytes);
      const out = await session.run({ features: new ort.Tensor('float32', x, [rows, cols]) });
      const got = out['score']!.data as Float32Array;
      const want = predictMlp(m.mlp, x, rows);
      for (let r = 0; r < rows; r++) expect(got[r]!, `${m.name} row ${r}`).toBeCloseTo(want[r]!, 3);
      await session.release();
    }
  });

  it('writes valid metadata with lineage, baselines and offline metrics, and sha256 of the file', () => {
    for (const m of result.models) {
      const meta = JSON.parse(readFileSync(m.paths.metaPath, 'utf8'));
      expect(validateModelMetadata(meta)).toEqual([]);
      expect(meta.sha256).toBe(sha256Hex(readFileSync(m.paths.onnxPath)));
      expect(meta.lineage).toMatchObject({
        datasetHash: ds.manifest.hash,
        trainedAt: '2026-11-24T12:00:00.000Z',
      });
      expect(meta.lineage.gitCommit).toMatch(/^([0-9a-f]{40}(-dirty)?|unknown)$/);
      for (const f of meta.inputs[0].features) {
        const h = meta.baseline.features[f];
        expect(h.edges.length, f).toBe(h.probs.length + 1);
        expect(h.probs.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 4);
      }
      expect(Object.keys(meta.metrics).length).toBeGreaterThan(2);
    }
    const ranking = result.metrics['drink-ranking']!;
    // Even on a 3-day history, knowing the user beats ranking by popularity.
    expect(ranking['recall_at_5']!).toBeGreaterThan(ranking['popularity_recall_at_5']!);
  });

  it("writes the ranking model's drift baseline per context, and none for the others", () => {
    for (const m of result.models) {
      const meta = JSON.parse(readFileSync(m.paths.metaPath, 'utf8')) as ModelMetadata;
      if (m.task !== 'drink-ranking') {
        expect(meta.baseline.contexts, m.name).toBeUndefined();
        continue;
      }
      const c = meta.baseline.contexts!;
      expect(c.scheme).toBe(DRIFT_CONTEXT_SCHEME);
      // Requests of the 3-day training window, in the stores' timezones at their local hours.
      const timezones = new Set(ds.stores.map((s) => s.timezone));
      for (const x of c.contexts) expect(timezones.has(x.timezone)).toBe(true);
      expect(c.requests.reduce((a, b) => a + b, 0)).toBeGreaterThan(1000);
      // The user and clock features per context; weather is compared by its range instead.
      expect(Object.keys(c.counts).sort()).toEqual(
        REQUEST_FEATURES.filter((f) => f !== 'temperature_c' && f !== 'is_precipitation').sort(),
      );
      expect(meta.baseline.features['temperature_c']!.probs).toEqual([0, 1, 0]);
      // is_weekend has a bin for each value even if the window had no weekend.
      expect(meta.baseline.features['is_weekend']!.edges).toEqual([0, 0.5, 1]);
    }
  });

  it('writes a RecommenderModel per model pointing at the artifact with lineage annotations', () => {
    for (const m of result.models) {
      const doc = parse(readFileSync(m.paths.manifestPath!, 'utf8'));
      expect(doc.apiVersion).toBe('crema.dev/v1alpha1');
      expect(doc.kind).toBe('RecommenderModel');
      expect(doc.spec.model).toEqual({
        uri: `https://models.example.com/crema/${m.name}.onnx`,
        sha256: m.meta.sha256,
        task: m.task,
        featureSchemaVersion: 1,
        metadataUri: `https://models.example.com/crema/${m.name}.meta.json`,
      });
      expect(doc.metadata.annotations['crema.dev/dataset-hash']).toBe(ds.manifest.hash);
    }
  });

  it("records the training catalog's item ids on each RecommenderModel, so region menus are checked", () => {
    const ids = ds.catalog.items.map((i) => i.id);
    expect(ids.length).toBeGreaterThan(100);
    for (const m of result.models) {
      const doc = parse(readFileSync(m.paths.manifestPath!, 'utf8')) as RecommenderModel;
      expect(parseItemCatalog(doc.metadata!.annotations![ITEM_CATALOG_ANNOTATION]!)).toEqual(ids);
      // What the operator makes of it: a real item passes, a typo is named.
      const region = regionWithMenu(['d003'], ['a160', 'd999']);
      expect(checkRegionMenu(region, m.name, itemCatalogOf(doc))).toMatchObject({
        status: 'False',
        reason: 'UnknownMenuItem',
        message: expect.stringContaining('spec.menu.unavailable[1]: "d999"'),
      });
      expect(checkRegionMenu(regionWithMenu(['d003'], ['a160']), m.name, itemCatalogOf(doc)).status).toBe(
        'True',
      );
    }
  });

  it('the committed models (manifests/models) carry the item catalog they were trained with', () => {
    const ids = buildCatalog(2).items.map((i) => i.id);
    for (const f of readdirSync('manifests/models').filter((x) => x.endsWith('.yaml'))) {
      const doc = parse(readFileSync(join('manifests/models', f), 'utf8')) as RecommenderModel;
      const catalog = itemCatalogOf(doc);
      expect(catalog, f).toBeDefined();
      expect([...catalog!], f).toEqual(ids);
      expect(checkRegionMenu(regionWithMenu(['d010'], ['a150']), doc.metadata!.name!, catalog).status).toBe(
        'True',
      );
    }
  });

  it('evaluate scores the ONNX graphs to the same metrics, and refuses a tampered model naming the file', async () => {
    const report = await runEvaluation({ modelsDir: join(dir, 'models'), outDir: join(dir, 'report') });
    for (const m of Object.values(report.models)) expect(m.maxDiffToTraining).toBeLessThan(0.01);
    expect(readFileSync(join(dir, 'report', 'report.md'), 'utf8')).toContain('recall_at_5');
    expect(JSON.parse(readFileSync(join(dir, 'report', 'report.json'), 'utf8')).goals).toBeDefined();
    const churn = join(dir, 'models', 'churn.onnx');
    writeFileSync(churn, Buffer.concat([readFileSync(churn), Buffer.from([0])]));
    await expect(
      runEvaluation({ modelsDir: join(dir, 'models'), outDir: join(dir, 'report') }),
    ).rejects.toThrow(/churn\.onnx: sha256 [0-9a-f]+ does not match/);
  });
});
