/**
 * The metadata file shipped next to every ONNX model (`<model>.onnx` + `<model>.meta.json`).
 * feature-jobs writes it at training time; serving validates it when loading a model and uses
 * its baselines for drift (PSI); the operator copies lineage into RecommenderModel status.
 */

/**
 * What a model can predict, in a stable order: the one task list (the CRD's `spec.model.task`
 * enum, serving's routes and env, training's outputs; contracts.test.ts checks the CRD).
 */
export const MODEL_TASKS = ['drink-ranking', 'addon-attach', 'pickup-time', 'churn'] as const;

/** What a model predicts. */
export type ModelTask = (typeof MODEL_TASKS)[number];

/** A histogram over fixed bin edges: `edges` has one more entry than `probs`; probs sum to 1. */
export interface BaselineHistogram {
  readonly edges: readonly number[];
  readonly probs: readonly number[];
}

/**
 * Bin of `value` over histogram `edges` (length bins+1): below the first edge → bin 0, at or
 * above the last → the last bin, so every observation counts. Training builds baselines and
 * serving builds live histograms with this one function, so their bins always line up.
 */
export function binOf(edges: readonly number[], value: number): number {
  const bins = edges.length - 1;
  if (bins <= 0) return 0;
  let lo = 0;
  let hi = bins - 1;
  // last bin whose left edge <= value
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (value >= edges[mid]!) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** One ONNX input: its name, shape (-1 = dynamic) and the feature names along the last axis. */
export interface ModelInput {
  readonly name: string;
  readonly shape: readonly number[];
  readonly features: readonly string[];
}

export interface ModelMetadata {
  /** Format version of this file. */
  readonly metadataVersion: 1;
  readonly name: string;
  readonly task: ModelTask;
  /** sha256 (hex) of the .onnx file; also the model revision. */
  readonly sha256: string;
  /** contracts/features.ts FEATURE_SCHEMA_VERSION the model was trained with. */
  readonly featureSchemaVersion: number;
  readonly inputs: readonly ModelInput[];
  readonly outputs: readonly { readonly name: string; readonly shape: readonly number[] }[];
  /** Training-time distributions, by feature name, and of the model score, for drift PSI. */
  readonly baseline: {
    readonly features: Readonly<Record<string, BaselineHistogram>>;
    readonly score: BaselineHistogram;
  };
  /** Offline metrics on the held-out window (recall@5, ndcg@10, mae, auc, ...). */
  readonly metrics: Readonly<Record<string, number>>;
  readonly lineage: {
    readonly datasetHash: string;
    readonly featureJobVersion: string;
    readonly gitCommit: string;
    readonly trainedAt: string;
  };
}

/** Returns a list of problems with `m` (empty when it is valid metadata). */
export function validateModelMetadata(m: unknown): string[] {
  const errors: string[] = [];
  const o = m as Partial<ModelMetadata> | null;
  if (!o || typeof o !== 'object') return ['metadata: not an object'];
  if (o.metadataVersion !== 1) errors.push('metadataVersion: must be 1');
  if (typeof o.name !== 'string' || !o.name) errors.push('name: required');
  if (!(MODEL_TASKS as readonly string[]).includes(o.task as string)) {
    errors.push(`task: must be ${MODEL_TASKS.slice(0, -1).join(', ')} or ${MODEL_TASKS.at(-1)}`);
  }
  if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256))
    errors.push('sha256: 64 hex characters');
  if (!Number.isInteger(o.featureSchemaVersion)) errors.push('featureSchemaVersion: integer required');
  if (!Array.isArray(o.inputs) || o.inputs.length === 0) errors.push('inputs: at least one input');
  if (!o.baseline || typeof o.baseline !== 'object' || !o.baseline.score)
    errors.push('baseline.score: required');
  if (!o.lineage || typeof o.lineage.datasetHash !== 'string') errors.push('lineage.datasetHash: required');
  return errors;
}
