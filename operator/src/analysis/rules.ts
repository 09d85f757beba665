/**
 * Prometheus alerting rules rendered from each model's drift settings (pure). One rule per model
 * and live revision: the stable revision always, the canary revision while a rollout runs, each
 * labelled with the variant so the webhook knows whether to roll back a canary or to flag stable.
 */
import { stringify } from 'yaml';
import { METRIC_LABELS as L, SERVING_METRICS as M } from '../../../contracts/metrics.js';
import { parseDurationMs } from '../../../contracts/duration.js';
import type { RecommenderModel } from '../api/v1alpha1/recommendermodel.js';
import { AnalysisInputError, quoteLabelValue } from './queries.js';
import type { Variant } from './types.js';

/** The alert name of every drift rule. */
export const DRIFT_ALERT = 'CremaFeatureDrift';
/** The CRD defaults of spec.drift. */
export const DEFAULT_PSI_THRESHOLD = 0.2;
export const DEFAULT_DRIFT_WINDOW = '1h';
/** Longest `for:` a drift rule waits; see `computeDriftFor`. */
export const MAX_DRIFT_FOR_SECONDS = 300;

/** Labels the rules put on every drift alert; the webhook reads these. */
export const ALERT_LABELS = {
  namespace: 'namespace',
  model: 'crema_model',
  revision: 'revision',
  variant: 'variant',
  severity: 'severity',
} as const;

/** Seconds in a CRD duration such as 30s, 5m or 1h (contracts/duration.ts). */
export function parseDurationSeconds(d: string): number {
  try {
    return parseDurationMs(d) / 1000;
  } catch {
    throw new AnalysisInputError(`duration ${JSON.stringify(d)} is not like 30s, 5m or 1h`);
  }
}

/**
 * The rule's `for:` from `spec.drift.window`: a tenth of the window, at most 5 minutes. The PSI
 * gauge is already computed over the window by serving, so a long `for:` would count the window
 * twice; a tenth rides out a single noisy scrape while a 1h window still alerts within 5 minutes.
 */
export function computeDriftFor(window: string): string {
  return `${Math.min(Math.floor(parseDurationSeconds(window) / 10), MAX_DRIFT_FOR_SECONDS)}s`;
}

interface LiveRevision {
  variant: Variant;
  sha: string;
}

/** The revisions serving traffic: status.stable (or the spec before any status) and status.canary. */
function liveRevisions(m: RecommenderModel): LiveRevision[] {
  const stable = m.status?.stable?.modelSha ?? m.spec.model.sha256;
  const out: LiveRevision[] = [{ variant: 'stable', sha: stable }];
  const canary = m.status?.canary?.modelSha;
  if (canary && canary !== stable) out.push({ variant: 'canary', sha: canary });
  return out;
}

function escapeRegex(v: string): string {
  return v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The alerting rule for one model revision, as a plain object. */
export function buildDriftRule(m: RecommenderModel, rev: LiveRevision): Record<string, unknown> {
  const drift = m.spec.drift!;
  const name = m.metadata?.name ?? '';
  const namespace = m.metadata?.namespace ?? 'default';
  if (!name) throw new AnalysisInputError('a RecommenderModel without metadata.name has no drift rule');
  const threshold = drift.psiThreshold ?? DEFAULT_PSI_THRESHOLD;
  const window = drift.window ?? DEFAULT_DRIFT_WINDOW;
  // The namespace too: the same model name and file in two namespaces (staging and production)
  // must not raise each other's alerts, which would roll back the other one's canary.
  const matchers = [
    `${L.model}=${quoteLabelValue(name)}`,
    `${L.namespace}=${quoteLabelValue(namespace)}`,
    `${L.revision}=${quoteLabelValue(rev.sha)}`,
  ];
  if (drift.features?.length) {
    matchers.push(`${L.feature}=~${quoteLabelValue(drift.features.map(escapeRegex).join('|'))}`);
  }
  // A canary with drift is rolled back at once; drift on stable asks for a human (or a rollback
  // when spec.drift.action says so), hence the different severities.
  const severity = rev.variant === 'canary' || drift.action === 'Rollback' ? 'critical' : 'warning';
  return {
    alert: DRIFT_ALERT,
    expr: `max by (${L.model}, ${L.revision}, ${L.feature}) (${M.featureDriftPsi.name}{${matchers.join(',')}}) > ${threshold}`,
    for: computeDriftFor(window),
    labels: {
      [ALERT_LABELS.namespace]: namespace,
      [ALERT_LABELS.model]: name,
      [ALERT_LABELS.variant]: rev.variant,
      [ALERT_LABELS.severity]: severity,
      crema_action: drift.action ?? 'Alert',
    },
    annotations: {
      summary: `Feature {{ $labels.feature }} of ${namespace}/${name} (${rev.variant}, revision ${rev.sha.slice(0, 12)}) drifted: PSI {{ $value | printf "%.3f" }} > ${threshold}`,
      description: `Population stability index of live traffic against the training baseline over ${window} exceeds spec.drift.psiThreshold ${threshold}.`,
      value: '{{ $value }}',
    },
  };
}

/**
 * The rule file (YAML) for all models with `spec.drift` set: one group per model, ordered by
 * namespace/name so the text is stable and a reload happens only when something changed.
 */
export function buildDriftRules(models: readonly RecommenderModel[]): string {
  const groups = models
    .filter((m) => m.spec.drift !== undefined)
    .map((m) => ({ key: `${m.metadata?.namespace ?? 'default'}/${m.metadata?.name ?? ''}`, m }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map(({ key, m }) => ({
      name: `crema-drift/${key}`,
      rules: liveRevisions(m).map((rev) => buildDriftRule(m, rev)),
    }));
  return stringify({ groups }, { lineWidth: 0 });
}
