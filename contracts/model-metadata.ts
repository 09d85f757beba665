/**
 * The metadata file shipped next to every ONNX model (`<model>.onnx` + `<model>.meta.json`).
 * feature-jobs writes it at training time; serving validates it when loading a model and uses
 * its baselines for drift (PSI); the operator copies lineage into RecommenderModel status.
 */
import type { BaselineHistogram, DriftContext } from './drift-binning.js';

/**
 * What a model can predict, in a stable order: the one task list (the CRD's `spec.model.task`
 * enum, serving's routes and env, training's outputs; contracts.test.ts checks the CRD).
 */
export const MODEL_TASKS = ['drink-ranking', 'addon-attach', 'pickup-time', 'churn'] as const;

/** What a model predicts. */
export type ModelTask = (typeof MODEL_TASKS)[number];

export type { BaselineHistogram };

/**
 * Training counts of the request-level features per drift context (contracts/drift-binning.ts,
 * ADR 0010). Serving compares a window of requests with the mixture of these per-context
 * distributions weighted by the window's own contexts. Optional: models trained before it
 * carry none, and serving then compares with `baseline.features` alone.
 */
export interface DriftContextBaseline {
  /** How requests map to contexts; serving ignores a scheme it does not know. */
  readonly scheme: string;
  /** The contexts training saw, each once. */
  readonly contexts: readonly DriftContext[];
  /** Training requests per context, in `contexts` order. */
  readonly requests: readonly number[];
  /**
   * Per feature: for each context (in `contexts` order), training requests per bin of
   * `baseline.features[feature]`. Features without an entry are compared unconditioned.
   */
  readonly counts: Readonly<Record<string, readonly (readonly number[])[]>>;
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
    /** Per-context counts of the request-level features (absent in models trained before it). */
    readonly contexts?: DriftContextBaseline;
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
  if (o.baseline && typeof o.baseline === 'object' && o.baseline.contexts !== undefined) {
    errors.push(...validateContextBaseline(o.baseline.contexts, o.baseline.features));
  }
  return errors;
}

/** Problems with `baseline.contexts`: every count table must match its contexts and bins. */
function validateContextBaseline(
  c: DriftContextBaseline,
  features: ModelMetadata['baseline']['features'] | undefined,
): string[] {
  const at = 'baseline.contexts';
  if (!c || typeof c !== 'object') return [`${at}: must be an object`];
  if (typeof c.scheme !== 'string') return [`${at}.scheme: required`];
  if (!Array.isArray(c.contexts)) return [`${at}.contexts: list required`];
  const n = c.contexts.length;
  const errors: string[] = [];
  for (const [i, x] of c.contexts.entries()) {
    if (
      !x ||
      typeof x.timezone !== 'string' ||
      !Number.isInteger(x.hour) ||
      x.hour < 0 ||
      x.hour > 23 ||
      (x.weekend !== 0 && x.weekend !== 1)
    ) {
      errors.push(`${at}.contexts[${i}]: {timezone, hour 0..23, weekend 0|1} required`);
      break;
    }
  }
  if (!Array.isArray(c.requests) || c.requests.length !== n)
    errors.push(`${at}.requests: one count per context (${n})`);
  if (!c.counts || typeof c.counts !== 'object') return [...errors, `${at}.counts: required`];
  for (const [f, table] of Object.entries(c.counts)) {
    const bins = features?.[f] ? features[f].probs.length : -1;
    if (bins < 0) errors.push(`${at}.counts.${f}: no baseline.features.${f} histogram`);
    else if (
      !Array.isArray(table) ||
      table.length !== n ||
      table.some((row) => !Array.isArray(row) || row.length !== bins || row.some((x) => !(x >= 0)))
    ) {
      errors.push(`${at}.counts.${f}: ${n} contexts x ${bins} bins of non-negative counts required`);
    }
  }
  return errors;
}
