/**
 * The `evaluate` command: runs the exported ONNX graphs (onnxruntime-node, as serving does) on
 * the held-out window recorded in their metadata and writes report.json and report.md with
 * the models against their baselines and against the numbers measured at training time.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { validateModelMetadata, type ModelTask } from '../../../contracts/model-metadata.js';
import { InputFileError, readInputFile, readJsonFile, writeFileAtomic } from '../common/files.js';
import { Dataset } from '../generate/dataset.js';
import { sha256Hex, type CremaModelMetadata } from '../train/artifacts.js';
import { buildCutoff, computeSplit, type RowBuffer } from '../train/examples.js';
import { MODEL_NAMES, buildHeldOut } from '../train/train.js';
import {
  computeAddonMetrics,
  computeChurnMetrics,
  computePickupMetrics,
  computeRankingMetrics,
} from './offline.js';

export interface EvaluateOptions {
  readonly modelsDir: string;
  /** Dataset directory; default: the one recorded in the models' metadata. */
  readonly dataDir?: string;
  readonly outDir: string;
  readonly log?: (line: string) => void;
}

export interface EvaluationReport {
  readonly dataset: { readonly dir: string; readonly hash: string };
  readonly window: { readonly evalAsOf: string; readonly evalDays: number };
  readonly models: Record<
    string,
    {
      readonly sha256: string;
      readonly metrics: Record<string, number>;
      /** Largest absolute difference to the metrics recorded at training (TypeScript model). */
      readonly maxDiffToTraining: number;
    }
  >;
  readonly goals: Record<string, { readonly value: number; readonly goal: string; readonly met: boolean }>;
}

function loadMeta(path: string): CremaModelMetadata {
  return readJsonFile<CremaModelMetadata>(path, (v) => {
    const problems = validateModelMetadata(v);
    if (problems.length) return problems.join('; ');
    return (v as Partial<CremaModelMetadata>).training
      ? null
      : 'training: missing (not written by crema-jobs train)';
  });
}

async function scoreOnnx(bytes: Uint8Array, inputName: string, b: RowBuffer): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
  const out = new Float32Array(b.rows);
  const chunk = 50_000;
  try {
    for (let r = 0; r < b.rows; r += chunk) {
      const n = Math.min(chunk, b.rows - r);
      const x = b.x.subarray(r * b.cols, (r + n) * b.cols);
      const res = await session.run({ [inputName]: new ort.Tensor('float32', x, [n, b.cols]) });
      out.set(res[session.outputNames[0]!]!.data as Float32Array, r);
    }
  } finally {
    await session.release();
  }
  return out;
}

/** Evaluates every model found in `modelsDir` and writes the report. */
export async function runEvaluation(o: EvaluateOptions): Promise<EvaluationReport> {
  const log = o.log ?? (() => {});
  const tasks = Object.keys(MODEL_NAMES) as ModelTask[];
  const metas = new Map<ModelTask, { meta: CremaModelMetadata; onnx: Uint8Array }>();
  for (const task of tasks) {
    const metaPath = join(o.modelsDir, `${MODEL_NAMES[task]}.meta.json`);
    const onnxPath = join(o.modelsDir, `${MODEL_NAMES[task]}.onnx`);
    const meta = loadMeta(metaPath);
    const onnx = readInputFile(onnxPath);
    if (sha256Hex(onnx) !== meta.sha256) {
      throw new InputFileError(
        onnxPath,
        `sha256 ${sha256Hex(onnx)} does not match ${metaPath} (${meta.sha256})`,
      );
    }
    metas.set(task, { meta, onnx });
  }
  const first = metas.get('drink-ranking')!.meta.training;
  for (const { meta } of metas.values()) {
    if (
      meta.training.evalAsOf !== first.evalAsOf ||
      meta.lineage.datasetHash !== metas.get('drink-ranking')!.meta.lineage.datasetHash
    ) {
      throw new InputFileError(
        join(o.modelsDir, `${meta.name}.meta.json`),
        'trained on a different dataset or window than drink-ranking',
      );
    }
  }
  const ds = Dataset.open(o.dataDir ?? first.datasetDir);
  if (ds.manifest.hash !== metas.get('drink-ranking')!.meta.lineage.datasetHash) {
    throw new InputFileError(
      join(ds.dir, 'manifest.json'),
      'dataset hash differs from the one the models were trained on',
    );
  }
  const split = computeSplit(ds.days, first.evalDays);
  const cut = buildCutoff(ds, split.evalAsOf, first.windowDays);
  const ex = buildHeldOut(ds, cut, split.evalDays, first.seed, first.rankingLists, first.rows);
  log(`evaluate: ${ex.rankingEval.length} held-out ranking lists from ${split.evalAsOf}`);

  const models: EvaluationReport['models'] = {};
  const run = async (task: ModelTask, b: RowBuffer, f: (s: Float32Array) => Record<string, number>) => {
    const { meta, onnx } = metas.get(task)!;
    const metrics = f(await scoreOnnx(onnx, meta.inputs[0]!.name, b));
    let maxDiff = 0;
    for (const [k, v] of Object.entries(metrics)) {
      const t = meta.metrics[k];
      if (t !== undefined && Number.isFinite(v)) maxDiff = Math.max(maxDiff, Math.abs(t - v));
    }
    models[meta.name] = { sha256: meta.sha256, metrics, maxDiffToTraining: Math.round(maxDiff * 1e4) / 1e4 };
  };
  await run('drink-ranking', ex.ranking, (s) => ({ ...computeRankingMetrics(ex, s) }));
  await run('addon-attach', ex.addon, (s) => computeAddonMetrics(ex, s));
  const trainMean = metas.get('pickup-time')!.meta.metrics['train_mean_minutes'] ?? 0;
  await run('pickup-time', ex.pickup, (s) => computePickupMetrics(ex, s, trainMean));
  await run('churn', ex.churn, (s) => computeChurnMetrics(ex, s));

  const r = models['drink-ranking']!.metrics;
  const p = models['pickup-time']!.metrics;
  const c = models['churn']!.metrics;
  const a = models['addon-attach']!.metrics;
  const goals: EvaluationReport['goals'] = {
    'drink-ranking recall@5 vs popularity': {
      value: r['recall_at_5_lift']!,
      goal: '>= 1.5x',
      met: r['recall_at_5_lift']! >= 1.5,
    },
    'pickup-time MAE vs mean baseline': {
      value: p['mae_minutes']!,
      goal: `< ${p['baseline_mean_mae_minutes']} min`,
      met: p['mae_minutes']! < p['baseline_mean_mae_minutes']!,
    },
    'churn AUC vs recency baseline': {
      value: c['auc']!,
      goal: `> ${c['baseline_recency_auc']}`,
      met: c['auc']! > c['baseline_recency_auc']!,
    },
    'addon-attach AUC vs attach-rate x popularity baseline': {
      value: a['auc']!,
      goal: `> ${a['baseline_rate_x_popularity_auc']}`,
      met: a['auc']! > a['baseline_rate_x_popularity_auc']!,
    },
  };
  const report: EvaluationReport = {
    dataset: { dir: ds.dir, hash: ds.manifest.hash },
    window: { evalAsOf: split.evalAsOf, evalDays: first.evalDays },
    models,
    goals,
  };
  writeFileAtomic(join(o.outDir, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileAtomic(join(o.outDir, 'report.md'), renderMarkdown(report));
  return report;
}

/** The human-readable report. */
export function renderMarkdown(r: EvaluationReport): string {
  const lines = [
    '# Crema offline evaluation',
    '',
    `Dataset \`${r.dataset.hash.slice(0, 16)}\` (${r.dataset.dir}); held-out window: ${r.window.evalDays} days from ${r.window.evalAsOf}, ` +
      'features as of the window start, scored with onnxruntime-node.',
    '',
    '## Goals',
    '',
    '| check | value | goal | met |',
    '| --- | --- | --- | --- |',
    ...Object.entries(r.goals).map(
      ([k, g]) => `| ${k} | ${g.value} | ${g.goal} | ${g.met ? 'yes' : '**no**'} |`,
    ),
    '',
  ];
  for (const [name, m] of Object.entries(r.models)) {
    lines.push(
      `## ${name}`,
      '',
      `sha256 \`${m.sha256}\`; largest difference to the training-time metrics: ${m.maxDiffToTraining}`,
      '',
    );
    lines.push(
      '| metric | value |',
      '| --- | --- |',
      ...Object.entries(m.metrics).map(([k, v]) => `| ${k} | ${v} |`),
      '',
    );
  }
  return lines.join('\n');
}
