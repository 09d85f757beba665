/**
 * Writes drift alert state into the cluster (ADR 0004). `patchDriftAlert` runs in the webhook of
 * whichever replica Alertmanager called, leader or standby: recording what Alertmanager reported
 * is an observation, not a controller decision, so it goes through the unfenced client. Every
 * write is a JSON merge patch of one key, so two replicas writing different alerts at once do not
 * clobber each other. `pruneDriftAlerts` is the leader's housekeeping and goes through the fenced
 * client: expired entries already count for nothing, removing them keeps the ConfigMap small and
 * tells the leader's informer that a condition may clear.
 */
import {
  DRIFT_ALERTS_CONFIGMAP,
  buildDriftAlertConfigMap,
  buildDriftAlertEntry,
  buildDriftAlertPatch,
  buildDriftAlertPrunePatch,
  driftAlertKey,
  encodeDriftAlertEntry,
  expiredDriftAlertKeys,
  parseDriftAlertEntries,
} from '../rollout/alerts.js';
import { KubeApiError, RESOURCES, resourcePath, type KubeClient, type KubeObject } from '../runtime/kube.js';
import type { DriftAlert } from './alertmanager.js';

const MERGE = 'application/merge-patch+json';

/**
 * Records a firing alert (created, or refreshed with a new expiry) or forgets a resolved one in
 * the namespace's `crema-drift-alerts`. Resolves once the API server has it; rejects otherwise
 * (the webhook then answers 500 and Alertmanager retries).
 */
export async function patchDriftAlert(
  client: KubeClient,
  alert: DriftAlert,
  opts: { readonly now: Date; readonly ttlMs: number },
): Promise<void> {
  const key = driftAlertKey(alert);
  const path = resourcePath(RESOURCES.configMap, alert.namespace, DRIFT_ALERTS_CONFIGMAP);
  const patch = (value: string | null) =>
    client.request('PATCH', path, { contentType: MERGE, body: buildDriftAlertPatch(key, value) });
  if (alert.status === 'resolved') {
    await patch(null).catch((err: unknown) => {
      // No ConfigMap: nothing was recorded in this namespace, nothing to forget.
      if (!(err instanceof KubeApiError && err.notFound)) throw err;
    });
    return;
  }
  const value = encodeDriftAlertEntry(buildDriftAlertEntry(alert, opts.now, opts.ttlMs));
  try {
    await patch(value);
    return;
  } catch (err) {
    if (!(err instanceof KubeApiError && err.notFound)) throw err;
  }
  try {
    await client.request('POST', resourcePath(RESOURCES.configMap, alert.namespace), {
      body: buildDriftAlertConfigMap(alert.namespace, key, value),
    });
  } catch (err) {
    // The other replica created it a moment ago: add our key to theirs.
    if (!(err instanceof KubeApiError && err.conflict)) throw err;
    await patch(value);
  }
}

/**
 * Removes the expired entries of one alert ConfigMap (as cached), guarded by its resourceVersion.
 * Returns how many it removed: 0 when none had expired or when the ConfigMap changed meanwhile
 * (the next round sees the new version).
 */
export async function pruneDriftAlerts(
  client: KubeClient,
  configMap: KubeObject & { data?: Record<string, string> },
  now: Date,
): Promise<number> {
  const expired = expiredDriftAlertKeys(parseDriftAlertEntries(configMap.data), now);
  const { namespace, name, resourceVersion } = configMap.metadata ?? {};
  if (!expired.length || !namespace || !name || !resourceVersion) return 0;
  try {
    await client.request('PATCH', resourcePath(RESOURCES.configMap, namespace, name), {
      contentType: MERGE,
      body: buildDriftAlertPrunePatch(resourceVersion, expired),
    });
    return expired.length;
  } catch (err) {
    if (err instanceof KubeApiError && (err.conflict || err.notFound)) return 0;
    throw err;
  }
}

export interface DriftAlertPruningOptions {
  /** The fenced client: only the leader's writes get through. */
  readonly client: KubeClient;
  /** The alert ConfigMaps in the informer cache. */
  readonly configMaps: () => ReadonlyArray<KubeObject & { data?: Record<string, string> }>;
  /** Whether this replica may write now (leader with a valid lease). */
  readonly mayWrite: () => boolean;
  readonly now: () => Date;
  readonly intervalMs: number;
  readonly log: (msg: string) => void;
}

/** Prunes expired entries every `intervalMs` while this replica leads; `stop()` ends it. */
export function startDriftAlertPruning(opts: DriftAlertPruningOptions): { stop(): Promise<void> } {
  let running: Promise<void> | undefined;
  const round = async () => {
    for (const cm of opts.configMaps()) {
      if (!opts.mayWrite()) return;
      const removed = await pruneDriftAlerts(opts.client, cm, opts.now()).catch((err: unknown) => {
        // Housekeeping only (expired entries already count for nothing): the next round retries.
        opts.log(`pruning expired drift alerts in ${cm.metadata?.namespace} failed: ${String(err)}`);
        return 0;
      });
      if (removed) opts.log(`removed ${removed} expired drift alert(s) in ${cm.metadata?.namespace}`);
    }
  };
  const timer = setInterval(() => {
    running ??= round().finally(() => (running = undefined));
  }, opts.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
