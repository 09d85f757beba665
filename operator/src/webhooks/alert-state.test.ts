import { describe, expect, it } from 'vitest';
import {
  DRIFT_ALERTS_CONFIGMAP,
  buildDriftAlertEntry,
  driftAlertKey,
  encodeDriftAlertEntry,
} from '../rollout/alerts.js';
import { KubeApiError, type KubeClient, type RequestOpts } from '../runtime/kube.js';
import { patchDriftAlert, pruneDriftAlerts, startDriftAlertPruning } from './alert-state.js';
import type { DriftAlert } from './alertmanager.js';

const B = 'b'.repeat(64);
const T0 = new Date('2026-11-24T10:00:00Z');
const CM_PATH = `/api/v1/namespaces/stores/configmaps/${DRIFT_ALERTS_CONFIGMAP}`;

const alert = (over: Partial<DriftAlert> = {}): DriftAlert => ({
  status: 'firing',
  alertname: 'CremaFeatureDrift',
  namespace: 'stores',
  model: 'drinks',
  revision: B,
  variant: 'canary',
  feature: 'hour',
  value: 0.45,
  startsAt: '2026-11-24T09:59:00Z',
  labels: { alertname: 'CremaFeatureDrift', crema_model: 'drinks', revision: B, feature: 'hour' },
  annotations: {},
  ...over,
});

type Answer = unknown | KubeApiError;
const apiError = (status: number, method = 'PATCH') =>
  new KubeApiError(method, CM_PATH, status, String(status), 'from the fake');

/** A KubeClient that records requests and answers from a script, in order (default `{}`). */
function scriptedClient(answers: Answer[] = []) {
  const requests: Array<{ method: string; path: string; opts: RequestOpts | undefined }> = [];
  const client: KubeClient = {
    request<T>(method: string, path: string, opts?: RequestOpts): Promise<T> {
      requests.push({ method, path, opts });
      const a = answers.shift() ?? {};
      return a instanceof KubeApiError ? Promise.reject(a) : Promise.resolve(a as T);
    },
    watch: () => Promise.resolve(),
    requestCounts: {},
    close: () => {},
  };
  return { client, requests };
}

describe('patchDriftAlert', () => {
  const key = driftAlertKey(alert());
  const value = encodeDriftAlertEntry(buildDriftAlertEntry(alert(), T0, 60_000));

  it('records a firing alert with a merge patch of its one key', async () => {
    const { client, requests } = scriptedClient();
    await patchDriftAlert(client, alert(), { now: T0, ttlMs: 60_000 });
    expect(requests).toEqual([
      {
        method: 'PATCH',
        path: CM_PATH,
        opts: {
          contentType: 'application/merge-patch+json',
          body: {
            metadata: {
              labels: expect.objectContaining({ 'app.kubernetes.io/managed-by': 'crema-operator' }),
            },
            data: { [key]: value },
          },
        },
      },
    ]);
  });

  it("creates the namespace's ConfigMap when there is none yet", async () => {
    const { client, requests } = scriptedClient([apiError(404)]);
    await patchDriftAlert(client, alert(), { now: T0, ttlMs: 60_000 });
    expect(requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      `PATCH ${CM_PATH}`,
      'POST /api/v1/namespaces/stores/configmaps',
    ]);
    expect(requests[1]?.opts?.body).toMatchObject({
      metadata: { name: DRIFT_ALERTS_CONFIGMAP, namespace: 'stores' },
      data: { [key]: value },
    });
  });

  it('adds its key to the ConfigMap the other replica created a moment earlier', async () => {
    const { client, requests } = scriptedClient([apiError(404), apiError(409, 'POST')]);
    await patchDriftAlert(client, alert(), { now: T0, ttlMs: 60_000 });
    expect(requests.map((r) => r.method)).toEqual(['PATCH', 'POST', 'PATCH']);
    expect(requests[2]?.opts?.body).toMatchObject({ data: { [key]: value } });
  });

  it('forgets a resolved alert by removing its key; no ConfigMap means nothing to forget', async () => {
    const { client, requests } = scriptedClient([{}, apiError(404)]);
    await patchDriftAlert(client, alert({ status: 'resolved' }), { now: T0, ttlMs: 60_000 });
    await patchDriftAlert(client, alert({ status: 'resolved' }), { now: T0, ttlMs: 60_000 });
    expect(requests.map((r) => r.method)).toEqual(['PATCH', 'PATCH']);
    expect(requests[0]?.opts?.body).toMatchObject({ data: { [key]: null } });
  });

  it('rejects when the API server refuses, so the webhook answers 500 and Alertmanager retries', async () => {
    const { client } = scriptedClient([apiError(403)]);
    await expect(patchDriftAlert(client, alert(), { now: T0, ttlMs: 60_000 })).rejects.toThrow(/403/);
    const resolved = scriptedClient([apiError(500)]);
    await expect(
      patchDriftAlert(resolved.client, alert({ status: 'resolved' }), { now: T0, ttlMs: 60_000 }),
    ).rejects.toThrow(/500/);
  });
});

describe('pruneDriftAlerts', () => {
  const old = alert({ feature: 'old', labels: { feature: 'old' } });
  const configMap = (resourceVersion = '7') => ({
    metadata: { name: DRIFT_ALERTS_CONFIGMAP, namespace: 'stores', resourceVersion },
    data: {
      [driftAlertKey(old)]: encodeDriftAlertEntry(
        buildDriftAlertEntry(old, new Date(T0.getTime() - 2000), 1000),
      ),
      [driftAlertKey(alert())]: encodeDriftAlertEntry(buildDriftAlertEntry(alert(), T0, 1000)),
    },
  });

  it('removes only expired entries, guarded by the resourceVersion it read', async () => {
    const { client, requests } = scriptedClient();
    expect(await pruneDriftAlerts(client, configMap(), T0)).toBe(1);
    expect(requests).toEqual([
      {
        method: 'PATCH',
        path: CM_PATH,
        opts: {
          contentType: 'application/merge-patch+json',
          body: { metadata: { resourceVersion: '7' }, data: { [driftAlertKey(old)]: null } },
        },
      },
    ]);
  });

  it('sends nothing when nothing expired', async () => {
    const { client, requests } = scriptedClient();
    expect(await pruneDriftAlerts(client, configMap(), new Date(T0.getTime() - 5000))).toBe(0);
    expect(requests).toEqual([]);
  });

  it('leaves a ConfigMap that changed meanwhile to the next round', async () => {
    const { client } = scriptedClient([apiError(409)]);
    expect(await pruneDriftAlerts(client, configMap(), T0)).toBe(0);
  });
});

describe('startDriftAlertPruning', () => {
  it('prunes only while this replica may write', async () => {
    const expired = alert();
    const cm = {
      metadata: { name: DRIFT_ALERTS_CONFIGMAP, namespace: 'stores', resourceVersion: '1' },
      data: { [driftAlertKey(expired)]: encodeDriftAlertEntry(buildDriftAlertEntry(expired, T0, 1)) },
    };
    const { client, requests } = scriptedClient([{}, {}, {}, {}, {}]);
    let leader = false;
    const pruning = startDriftAlertPruning({
      client,
      configMaps: () => [cm],
      mayWrite: () => leader,
      now: () => new Date(T0.getTime() + 1000),
      intervalMs: 10,
      log: () => {},
    });
    await new Promise((r) => setTimeout(r, 60));
    expect(requests).toEqual([]);
    leader = true;
    await new Promise((r) => setTimeout(r, 60));
    await pruning.stop();
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.every((r) => r.method === 'PATCH' && r.path === CM_PATH)).toBe(true);
  });
});
