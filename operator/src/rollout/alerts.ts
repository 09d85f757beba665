/**
 * Drift alert state, kept in the cluster (ADR 0004): one ConfigMap per namespace,
 * `crema-drift-alerts`, one key per alert Alertmanager reported (an alert is its label set), the
 * value a JSON entry with an expiry that Alertmanager's repeats push forward. The webhook of any
 * replica writes entries (`webhooks/alert-state.ts`); the leader reads them from its informer
 * cache (`ClusterDriftAlerts`), so an alert counts whichever replica Alertmanager called, and
 * still counts after a restart. Everything here is pure.
 */
import { createHash } from 'node:crypto';
import type { DriftAlerts } from '../controllers/recommendermodel/reconcile.js';
import { MANAGED_BY } from '../controllers/recommendermodel/desired.js';
import type { KubeObject } from '../runtime/kube.js';
import type { DriftAlert } from '../webhooks/alertmanager.js';

/** Name of the ConfigMap holding the drift alerts of a namespace's models. */
export const DRIFT_ALERTS_CONFIGMAP = 'crema-drift-alerts';

/**
 * Its labels: the controller's ConfigMap informer watches only `MANAGED_BY` objects, so the
 * leader sees this one without a second watch.
 */
export const DRIFT_ALERTS_LABELS = { ...MANAGED_BY, 'app.kubernetes.io/component': 'drift-alerts' } as const;

/**
 * An entry not refreshed for this long is ignored (and removed by the leader). Alertmanager's
 * `repeat_interval` for Crema's receiver must be shorter (docs/analysis.md suggests 5m).
 */
export const DEFAULT_DRIFT_ALERT_TTL_MS = 10 * 60_000;

/** Largest value written for one entry (bytes): a namespace's ConfigMap (1 MiB) holds ≥ 256. */
export const DRIFT_ALERT_VALUE_MAX_BYTES = 4096;

/** ConfigMap keys: at most 253 characters of this alphabet (the API server's IsConfigMapKey). */
const KEY_ALPHABET = /^[-._a-zA-Z0-9]+$/;
const KEY_MAX = 253;
/** Hex characters of the label-set hash that makes a key unique. */
const ID_LENGTH = 20;
/** Label values kept in an entry (they only describe; matching uses model and revision). */
const LABEL_MAX = 128;
const REVISION = /^[0-9a-f]{64}$/;

/** One recorded alert, as stored (JSON) under its key. */
export interface DriftAlertEntry {
  /** The RecommenderModel's name (the namespace is the ConfigMap's). */
  readonly model: string;
  /** The model sha256 the alert is about. */
  readonly revision: string;
  readonly alertname: string;
  readonly variant?: string;
  readonly feature?: string;
  /** What conditions and Events say while it fires. */
  readonly message: string;
  /** When Prometheus first saw the condition (from Alertmanager). */
  readonly startsAt: string;
  /** When a replica's webhook last recorded it. */
  readonly receivedAt: string;
  /** `receivedAt` + TTL: after this the entry no longer counts. */
  readonly expiresAt: string;
}

const sanitize = (s: string) => s.replace(/[^-._a-zA-Z0-9]/g, '_');
const cap = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * The ConfigMap key of an alert: `<model>.<revision, 12>.<hash of the label set>`. The hash makes
 * it unique (two features of one revision are two alerts, and one resolving must not clear the
 * other); the readable prefix is for people running kubectl. Always a valid ConfigMap key.
 */
export function driftAlertKey(alert: Pick<DriftAlert, 'model' | 'revision' | 'labels'>): string {
  const labels = Object.entries(alert.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const id = createHash('sha256')
    .update(JSON.stringify([alert.model, alert.revision, labels]))
    .digest('hex')
    .slice(0, ID_LENGTH);
  const prefix = sanitize(`${alert.model}.${alert.revision.slice(0, 12)}`).slice(0, KEY_MAX - ID_LENGTH - 1);
  return `${prefix}.${id}`;
}

/** Whether `key` is a valid ConfigMap key (the API server refuses the whole write otherwise). */
export function isConfigMapKey(key: string): boolean {
  return key.length <= KEY_MAX && KEY_ALPHABET.test(key);
}

/** The entry for a firing alert received at `now`, valid for `ttlMs`. */
export function buildDriftAlertEntry(alert: DriftAlert, now: Date, ttlMs: number): DriftAlertEntry {
  const alertname = cap(alert.alertname, LABEL_MAX);
  const variant = alert.variant && cap(alert.variant, LABEL_MAX);
  const feature = alert.feature && cap(alert.feature, LABEL_MAX);
  const what = feature ? `feature ${feature}` : 'model inputs';
  const value = alert.value !== undefined ? ` PSI ${alert.value.toFixed(3)}` : '';
  const summary = alert.annotations['summary'] ?? `${alertname} on ${what}${value}`;
  return {
    model: alert.model,
    revision: alert.revision,
    alertname,
    ...(variant ? { variant } : {}),
    ...(feature ? { feature } : {}),
    message: `${alertname} (${variant ?? 'unknown'} revision ${alert.revision.slice(0, 12)}): ${summary}`,
    startsAt: alert.startsAt,
    receivedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + ttlMs).toISOString(),
  };
}

/** The stored value: JSON, at most `DRIFT_ALERT_VALUE_MAX_BYTES` (a long summary is shortened). */
export function encodeDriftAlertEntry(entry: DriftAlertEntry): string {
  let e = entry;
  let text = JSON.stringify(e);
  while (Buffer.byteLength(text) > DRIFT_ALERT_VALUE_MAX_BYTES && e.message.length > 1) {
    e = { ...e, message: cap(e.message, Math.floor(e.message.length * 0.75)) };
    text = JSON.stringify(e);
  }
  return text;
}

const isEntry = (v: unknown): v is DriftAlertEntry => {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  return (
    ['model', 'revision', 'alertname', 'message', 'startsAt', 'receivedAt', 'expiresAt'].every(
      (k) => typeof e[k] === 'string',
    ) && !Number.isNaN(Date.parse(e['expiresAt'] as string))
  );
};

/**
 * The entries of an alert ConfigMap's `data`, by key. A value that is not an entry (edited by
 * hand, written by a newer operator) is skipped: it cannot roll anything back.
 */
export function parseDriftAlertEntries(data: Readonly<Record<string, string>> | undefined) {
  const entries = new Map<string, DriftAlertEntry>();
  for (const [key, value] of Object.entries(data ?? {})) {
    try {
      const parsed: unknown = JSON.parse(value);
      if (isEntry(parsed)) entries.set(key, parsed);
    } catch {
      // Not JSON: skipped, as above.
    }
  }
  return entries;
}

const live = (e: DriftAlertEntry, now: Date) => Date.parse(e.expiresAt) > now.getTime();

/**
 * The firing alert for revision `revision` of `model`, if any unexpired entry names it. With
 * several (one per drifting feature) the earliest speaks and the message counts the rest.
 */
export function findFiringDriftAlert(
  entries: ReadonlyMap<string, DriftAlertEntry>,
  model: string,
  revision: string,
  now: Date,
): { message: string } | undefined {
  const firing = [...entries]
    .filter(([, e]) => e.model === model && e.revision === revision && live(e, now))
    .sort(([ka, a], [kb, b]) =>
      a.startsAt !== b.startsAt ? (a.startsAt < b.startsAt ? -1 : 1) : ka < kb ? -1 : ka > kb ? 1 : 0,
    );
  const first = firing[0]?.[1];
  if (!first) return undefined;
  const more = firing.length - 1;
  return { message: more > 0 ? `${first.message} (+${more} more drift alerts)` : first.message };
}

/** Keys of entries past their expiry at `now`. */
export function expiredDriftAlertKeys(entries: ReadonlyMap<string, DriftAlertEntry>, now: Date): string[] {
  return [...entries].filter(([, e]) => !live(e, now)).map(([k]) => k);
}

/**
 * Why an alert is not recorded, or null to record it: only alerts about a revision digest of a
 * RecommenderModel this operator knows are written (so the token cannot make the operator write
 * into namespaces it has no model in, and a typo'd label does not fail the notification forever).
 */
export function checkRecordable(alert: DriftAlert, modelKnown: boolean): string | null {
  if (!REVISION.test(alert.revision))
    return `label revision ${JSON.stringify(cap(alert.revision, 80))} is not a model sha256`;
  if (!modelKnown) return `no RecommenderModel ${alert.namespace}/${alert.model} is watched by this operator`;
  return null;
}

/** Merge patch that records (`value`) or forgets (`null`) one entry; keys of others stay as they are. */
export function buildDriftAlertPatch(key: string, value: string | null) {
  return { metadata: { labels: { ...DRIFT_ALERTS_LABELS } }, data: { [key]: value } };
}

/** The ConfigMap to create when a namespace has none yet, holding one entry. */
export function buildDriftAlertConfigMap(namespace: string, key: string, value: string) {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: DRIFT_ALERTS_CONFIGMAP, namespace, labels: { ...DRIFT_ALERTS_LABELS } },
    data: { [key]: value },
  };
}

/**
 * Merge patch that removes `keys`, only if the ConfigMap is still at `resourceVersion`: an entry
 * refreshed meanwhile by a webhook must not be dropped.
 */
export function buildDriftAlertPrunePatch(resourceVersion: string, keys: readonly string[]) {
  return { metadata: { resourceVersion }, data: Object.fromEntries(keys.map((k) => [k, null])) };
}

type ConfigMapLike = KubeObject & { data?: Record<string, string> };

/** Drift alerts as the cluster records them, read from a cache of the alert ConfigMaps. */
export class ClusterDriftAlerts implements DriftAlerts {
  private readonly modelsByNamespace = new Map<string, Set<string>>();

  constructor(
    /** The namespace's alert ConfigMap from the informer cache, if it exists. */
    private readonly configMapOf: (namespace: string) => ConfigMapLike | undefined,
    private readonly now: () => Date,
  ) {}

  firing(namespace: string, name: string, sha: string): { message: string } | undefined {
    const entries = parseDriftAlertEntries(this.configMapOf(namespace)?.data);
    return findFiringDriftAlert(entries, name, sha, this.now());
  }

  /**
   * Models to reconcile after an alert ConfigMap changed (`namespace/name`): those named in it
   * now, and those named before (an entry that went away clears a condition).
   */
  keysFor(event: 'add' | 'update' | 'delete', obj: ConfigMapLike): string[] {
    if (obj.metadata?.name !== DRIFT_ALERTS_CONFIGMAP) return [];
    const namespace = obj.metadata.namespace ?? '';
    const before = this.modelsByNamespace.get(namespace) ?? new Set<string>();
    const now = new Set(
      event === 'delete' ? [] : [...parseDriftAlertEntries(obj.data).values()].map((e) => e.model),
    );
    if (now.size) this.modelsByNamespace.set(namespace, now);
    else this.modelsByNamespace.delete(namespace);
    return [...new Set([...before, ...now])].map((m) => `${namespace}/${m}`);
  }
}
