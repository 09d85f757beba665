/**
 * Model lineage on a RecommenderModel: training writes these annotations on the resource it
 * generates, the operator copies them into `status.lineage`. One definition for both sides
 * (they once disagreed: training wrote `git-commit`, the operator read `code-version`).
 */
import type { ModelMetadata } from './model-metadata.js';

/** Annotation keys, by lineage field. */
export const LINEAGE_ANNOTATIONS = {
  datasetHash: 'crema.dev/dataset-hash',
  featureJobVersion: 'crema.dev/feature-job-version',
  gitCommit: 'crema.dev/git-commit',
  trainedAt: 'crema.dev/trained-at',
} as const;

/** Offline evaluation metrics (JSON), written next to the lineage. */
export const OFFLINE_METRICS_ANNOTATION = 'crema.dev/offline-metrics';

/** What hand-written manifests used for the training code version before `git-commit`; still read. */
export const LEGACY_CODE_VERSION_ANNOTATION = 'crema.dev/code-version';

/** The annotations training writes for `lineage`. */
export function lineageAnnotations(lineage: ModelMetadata['lineage']): Record<string, string> {
  return {
    [LINEAGE_ANNOTATIONS.datasetHash]: lineage.datasetHash,
    [LINEAGE_ANNOTATIONS.featureJobVersion]: lineage.featureJobVersion,
    [LINEAGE_ANNOTATIONS.gitCommit]: lineage.gitCommit,
    [LINEAGE_ANNOTATIONS.trainedAt]: lineage.trainedAt,
  };
}

/** `status.lineage` of a model with these annotations (only the fields present). */
export function lineageFromAnnotations(a: Readonly<Record<string, string>>): {
  datasetHash?: string;
  featureJobVersion?: string;
  codeVersion?: string;
} {
  const codeVersion = a[LINEAGE_ANNOTATIONS.gitCommit] || a[LEGACY_CODE_VERSION_ANNOTATION];
  return {
    ...(a[LINEAGE_ANNOTATIONS.datasetHash] ? { datasetHash: a[LINEAGE_ANNOTATIONS.datasetHash] } : {}),
    ...(a[LINEAGE_ANNOTATIONS.featureJobVersion]
      ? { featureJobVersion: a[LINEAGE_ANNOTATIONS.featureJobVersion] }
      : {}),
    ...(codeVersion ? { codeVersion } : {}),
  };
}
