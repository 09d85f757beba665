/**
 * The `train` command: examples from the dataset, four models trained in TypeScript, each
 * exported to ONNX with metadata (feature schema, baselines, offline metrics, lineage) and a
 * RecommenderModel manifest.
 */
import type { ModelTask } from '../../../contracts/model-metadata.js';
import { FEATURE_JOB_VERSION } from '../batch/publish.js';
import type { Dataset } from '../generate/dataset.js';
import {
  computeAddonMetrics,
  computeChurnMetrics,
  computePickupMetrics,
  computeRankingMetrics,
} from '../evaluate/offline.js';
import { computeBaselineHistogram, type BaselineHistogram } from '../../../contracts/drift-binning.js';
import {
  buildMetadata,
  gitCommit,
  writeArtifact,
  type CremaModelMetadata,
  type TrainingInfo,
} from './artifacts.js';
import {
  ADDON_FEATURES,
  CHURN_FEATURES,
  PICKUP_FEATURES,
  RANKING_FEATURES,
  buildCutoff,
  buildWindowExamples,
  computeSplit,
  type Cutoff,
  type RowBuffer,
  type WindowExamples,
} from './examples.js';
import { buildDriftBaseline } from './drift-baseline.js';
import {
  computeStandardization,
  exportMlpOnnx,
  huberLoss,
  initMlp,
  logisticLoss,
  predictMlp,
  softmaxLoss,
  trainMlp,
  type LossGrad,
  type Mlp,
} from './mlp.js';

export interface TrainCommandOptions {
  readonly dataset: Dataset;
  readonly outDir: string;
  /** Where RecommenderModel YAML goes (e.g. manifests/models); none when absent. */
  readonly manifestsDir?: string;
  readonly uriBase?: string;
  readonly evalDays: number;
  readonly windowDays: number;
  readonly seed: number;
  /** Ranking lists sampled for training. */
  readonly rankingLists?: number;
  /** Rows per single-row task (add-on, pickup, churn). */
  readonly rows?: number;
  readonly epochs?: number;
  /** Requests sampled for the ranking model's drift baseline. Default 400,000. */
  readonly driftRequests?: number;
  readonly now?: () => Date;
  readonly log?: (line: string) => void;
}

/** One trained model: TypeScript network, its ONNX export and metadata. */
export interface TrainedModel {
  readonly name: string;
  readonly task: ModelTask;
  readonly mlp: Mlp;
  readonly meta: CremaModelMetadata;
  readonly onnx: Uint8Array;
  readonly paths: { onnxPath: string; metaPath: string; manifestPath?: string };
}

export interface TrainResult {
  readonly models: TrainedModel[];
  readonly metrics: Record<string, Record<string, number>>;
  readonly timingsMs: Record<string, number>;
  readonly examples: { train: number; eval: number };
}

/** Model names, one per task; also the metadata `name` and the RecommenderModel name. */
export const MODEL_NAMES: Record<ModelTask, string> = {
  'drink-ranking': 'drink-ranking',
  'addon-attach': 'addon-attach',
  'pickup-time': 'pickup-time',
  churn: 'churn',
};

/** Trains and writes all four models. */
export async function runTraining(o: TrainCommandOptions): Promise<TrainResult> {
  const log = o.log ?? (() => {});
  const ds = o.dataset;
  const t: Record<string, number> = {};
  const lap = (k: string, t0: number) => (t[k] = Date.now() - t0);
  let t0 = Date.now();
  const split = computeSplit(ds.days, o.evalDays);
  const trainCut = buildCutoff(ds, split.trainAsOf, o.windowDays);
  const evalCut = buildCutoff(ds, split.evalAsOf, o.windowDays);
  lap('features', t0);
  t0 = Date.now();
  const rows = o.rows ?? 100_000;
  const trainEx = buildWindowExamples(ds, trainCut, split.trainDays, {
    seed: o.seed,
    maxRankingGroups: o.rankingLists ?? 40_000,
    negatives: 15,
    maxRows: rows,
    evaluation: false,
  });
  const evalEx = buildHeldOut(ds, evalCut, split.evalDays, o.seed, o.rankingLists ?? 40_000, rows);
  lap('examples', t0);
  t0 = Date.now();
  // The ranking model's drift baseline: its request-level features as serving will see them.
  const drift = buildDriftBaseline(ds, split.trainDays, {
    seed: o.seed,
    windowDays: o.windowDays,
    firstSnapshot: trainCut.snapshot,
    ...(o.driftRequests !== undefined ? { maxRequests: o.driftRequests } : {}),
  });
  lap('drift_baseline', t0);
  log(`train: drift baseline from ${drift.requests} requests in ${drift.contexts.contexts.length} contexts`);
  log(
    `train: windows train ${split.trainAsOf} (+${o.evalDays}d) eval ${split.evalAsOf} (+${o.evalDays}d); ` +
      `${trainEx.ranking.groups.length - 1} ranking lists, ${evalEx.rankingEval.length} held-out lists`,
  );
  const epochs = o.epochs ?? 4;
  const fit = (
    name: string,
    b: RowBuffer,
    hidden: number[],
    sigmoid: boolean,
    loss: LossGrad,
    lr: number,
  ) => {
    const t1 = Date.now();
    const set = b.toSet();
    const { mean, std } = computeStandardization(set.x, set.cols);
    const m = initMlp([set.cols, ...hidden, 1], o.seed, mean, std, sigmoid);
    trainMlp(m, set, loss, {
      epochs,
      lr,
      batch: 32,
      seed: o.seed,
      onEpoch: (e, l) => log(`train: ${name} epoch ${e + 1}/${epochs} loss ${l.toFixed(4)}`),
    });
    lap(`train_${name}`, t1);
    return m;
  };
  const ranking = fit('drink-ranking', trainEx.ranking, [24], true, softmaxLoss, 0.003);
  const addon = fit('addon-attach', trainEx.addon, [16], true, logisticLoss, 0.003);
  const pickup = fit('pickup-time', trainEx.pickup, [16, 16], false, huberLoss(2), 0.003);
  const churn = fit('churn', trainEx.churn, [16], true, logisticLoss, 0.003);

  t0 = Date.now();
  const score = (m: Mlp, b: RowBuffer) => predictMlp(m, b.x, b.rows);
  const pickupTrainMean = mean(trainEx.pickup.y.subarray(0, trainEx.pickup.rows));
  const metrics = {
    'drink-ranking': { ...computeRankingMetrics(evalEx, score(ranking, evalEx.ranking)) },
    'addon-attach': { ...computeAddonMetrics(evalEx, score(addon, evalEx.addon)) },
    'pickup-time': {
      ...computePickupMetrics(evalEx, score(pickup, evalEx.pickup), pickupTrainMean),
      train_mean_minutes: Math.round(pickupTrainMean * 1e4) / 1e4,
    },
    churn: { ...computeChurnMetrics(evalEx, score(churn, evalEx.churn)) },
  } satisfies Record<ModelTask, Record<string, number>>;
  lap('evaluate', t0);

  const lineage = {
    datasetHash: ds.manifest.hash,
    featureJobVersion: FEATURE_JOB_VERSION,
    gitCommit: gitCommit(),
    trainedAt: (o.now ?? (() => new Date()))().toISOString(),
  };
  const training: TrainingInfo = {
    datasetDir: ds.dir,
    evalDays: o.evalDays,
    windowDays: o.windowDays,
    seed: o.seed,
    trainAsOf: split.trainAsOf,
    evalAsOf: split.evalAsOf,
    rankingLists: o.rankingLists ?? 40_000,
    rows,
  };
  const models: TrainedModel[] = [];
  // The item ids of the catalog the models were trained with (a feature version's item matrix
  // covers drinks and add-ons, and serving applies region menus to both) go on each manifest,
  // so the operator checks StoreRegion menus against what the model was trained on.
  const itemIds = ds.catalog.items.map((i) => i.id);
  const specs: Array<[ModelTask, Mlp, RowBuffer, readonly string[]]> = [
    ['drink-ranking', ranking, trainEx.ranking, RANKING_FEATURES],
    ['addon-attach', addon, trainEx.addon, ADDON_FEATURES],
    ['pickup-time', pickup, trainEx.pickup, PICKUP_FEATURES],
    ['churn', churn, trainEx.churn, CHURN_FEATURES],
  ];
  for (const [task, m, b, features] of specs) {
    const name = MODEL_NAMES[task];
    const onnx = exportMlpOnnx(m, name);
    const base = baselines(m, b, features);
    const meta = buildMetadata(
      {
        name,
        task,
        onnx,
        features,
        ...(task === 'drink-ranking'
          ? {
              baselineFeatures: { ...base.baselineFeatures, ...drift.features },
              baselineScore: base.baselineScore,
              baselineContexts: drift.contexts,
            }
          : base),
        metrics: metrics[task],
      },
      lineage,
      training,
    );
    const paths = writeArtifact(meta, onnx, o.outDir, o.manifestsDir, o.uriBase, itemIds);
    models.push({ name, task, mlp: m, meta, onnx, paths });
    log(`train: wrote ${paths.onnxPath} (${onnx.length} bytes, sha256 ${meta.sha256.slice(0, 12)})`);
  }
  return {
    models,
    metrics,
    timingsMs: t,
    examples: { train: trainEx.orders, eval: evalEx.orders },
  };
}

/** The held-out examples; `evaluate` calls this with the values recorded in the metadata. */
export function buildHeldOut(
  ds: Dataset,
  cut: Cutoff,
  days: readonly string[],
  seed: number,
  rankingLists: number,
  rows: number,
): WindowExamples {
  return buildWindowExamples(ds, cut, days, {
    seed,
    maxRankingGroups: Math.max(500, Math.round(rankingLists / 5)),
    negatives: 0,
    maxRows: rows,
    evaluation: true,
  });
}

/**
 * Training-time feature and score histograms (up to 20k rows), binned like serving bins
 * (contracts/drift-binning.ts). The ranking model's request-level features are replaced by the
 * drift baseline, which counts requests rather than rows.
 */
function baselines(m: Mlp, b: RowBuffer, features: readonly string[]) {
  const n = Math.min(b.rows, 20_000);
  const step = b.rows / n;
  const idx = Array.from({ length: n }, (_, i) => Math.floor(i * step));
  const baselineFeatures: Record<string, BaselineHistogram> = {};
  features.forEach((f, c) => {
    baselineFeatures[f] = computeBaselineHistogram(
      f,
      idx.map((r) => b.x[r * b.cols + c]!),
    );
  });
  const x = new Float32Array(n * b.cols);
  idx.forEach((r, i) => x.set(b.x.subarray(r * b.cols, (r + 1) * b.cols), i * b.cols));
  return { baselineFeatures, baselineScore: computeBaselineHistogram('score', predictMlp(m, x, n)) };
}

function mean(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return a.length ? s / a.length : 0;
}

export type { WindowExamples };
