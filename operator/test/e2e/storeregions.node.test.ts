/**
 * StoreRegion floors on a real node (root): a RecommenderModel's serving pods run on the kubelet,
 * the real HorizontalPodAutoscaler controller (kube-controller-manager, metrics-server) scales its
 * Deployment, and a StoreRegion with a 3x promotion a minute ahead raises the HPA's minReplicas a
 * lead time before it (server-side apply under the region's own field manager). The pods the floor
 * asks for must be Ready and serving before the promotion starts; after it the floor steps down to
 * the model's own minimum, never below; an SRE's hand-made HPA fields survive; the Service keeps
 * answering throughout (light open-loop traffic).
 *
 * The operator runs with the real clock and a short schedule (lead 45 s, step-down over 20 s in
 * 2 steps) so a promotion day fits in a test; the lead's default (2 min) is what this test measures
 * a floor raise to take on this node, with margin (docs/adr/0013).
 *
 * Prints one `[e2e] {...}` JSON line with its measurements.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { StoreRegion } from '../../src/api/v1alpha1/index.js';
import { RESOURCES, resourcePath, type KubeObject } from '../../src/runtime/kube.js';
import { eventually } from '../helpers.js';
import { createModel, kubectlGet, serviceUrl, startNodeE2e, type NodeE2e } from './node-env.js';
import { failed, failureSummary, startTraffic } from './traffic.js';

let e: NodeE2e;
const LEAD_MS = 45_000;

type Hpa = KubeObject & {
  spec: { minReplicas?: number; maxReplicas: number };
  status?: { currentReplicas?: number; desiredReplicas?: number };
};
type Deployment = KubeObject & { status?: { readyReplicas?: number; replicas?: number } };

beforeAll(async () => {
  e = await startNodeE2e({
    name: 'sr-e2e',
    users: 2000,
    operator: { regionSchedule: { leadMs: LEAD_MS, stepDownMs: 20_000, stepDownSteps: 2 } },
  });
  const rev = await e.revision({ file: 'drinks-r1' });
  await createModel(e, 'drinks', rev, { serving: { minReplicas: 1, maxReplicas: 3 } });
}, 600_000);

afterAll(async () => {
  await e?.stop();
}, 120_000);

const getHpa = () => e.client.request<Hpa>('GET', resourcePath(RESOURCES.hpa, e.ns, 'drinks'));
const getRegion = () =>
  e.client.request<StoreRegion>('GET', resourcePath(RESOURCES.storeRegion, e.ns, 'nyc'));
const readyPods = async () =>
  (await e.client.request<Deployment>('GET', resourcePath(RESOURCES.deployment, e.ns, 'drinks-stable')))
    .status?.readyReplicas ?? 0;

describe('StoreRegion floors on a real node (real HPA controller, real pods)', () => {
  it(
    "raises the HPA floor ahead of a promotion so its pods are Ready before it starts, then steps down to the model's minimum",
    { timeout: 600_000 },
    async () => {
      // An SRE's own label on the HPA (kubectl edit: an update under another manager).
      await e.client.request('PATCH', resourcePath(RESOURCES.hpa, e.ns, 'drinks'), {
        body: { metadata: { labels: { 'team.example.com/oncall': 'coffee-sre' } } },
        contentType: 'application/merge-patch+json',
        query: { fieldManager: 'kubectl-edit' },
      });
      const traffic = startTraffic({
        url: await serviceUrl(e, 'drinks'),
        users: e.users,
        ratePerSecond: 20,
        maxDurationMs: 400_000,
      });
      const created = Date.now();
      const start = new Date(created + 75_000);
      const end = new Date(start.getTime() + 60_000);
      await e.client.request('POST', resourcePath(RESOURCES.storeRegion, e.ns), {
        body: {
          apiVersion: 'crema.dev/v1alpha1',
          kind: 'StoreRegion',
          metadata: { name: 'nyc', namespace: e.ns },
          spec: {
            stores: ['store-0', 'store-2'],
            timezone: 'America/New_York',
            promotions: [{ name: 'bogo', start: start.toISOString(), end: end.toISOString(), multiplier: 3 }],
            serving: { modelRef: 'drinks', minReplicas: 1, maxReplicas: 3 },
          },
        },
      });

      // Every HPA minReplicas the test sees, with when.
      const mins: { at: number; min: number | undefined; ready: number }[] = [];
      let watching = true;
      onTestFinished(() => {
        watching = false;
        return traffic.stop();
      });
      const watch = (async () => {
        while (watching) {
          const read = await Promise.all([getHpa(), readyPods()]).catch(() => undefined);
          if (read) mins.push({ at: Date.now(), min: read[0].spec.minReplicas, ready: read[1] });
          await new Promise((r) => setTimeout(r, 250));
        }
      })();

      const before = await eventually(
        async () => {
          const r = await getRegion();
          return r.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? r : undefined;
        },
        30_000,
        'region Ready',
      );
      expect(before.status).toMatchObject({ desiredMinReplicas: 1, nextMinReplicas: 3 });
      expect(Date.parse(before.status!.nextChangeTime!)).toBe(start.getTime() - LEAD_MS);

      // The lead: the floor reaches the HPA, the real HPA controller scales, the kubelet starts pods.
      const raised = await eventually(
        async () => mins.find((m) => m.min === 3),
        120_000,
        'HPA minReplicas 3',
      );
      const allReady = await eventually(
        async () => mins.find((m) => m.at >= raised.at && m.ready >= 3),
        180_000,
        '3 Ready serving pods',
      );
      const during = await eventually(
        async () => {
          const r = await getRegion();
          // In the lead Active says "promotion bogo x3 (lead)"; the controller wakes at the start.
          return r.status?.activePromotions?.includes('bogo') && r.status.activeWindow === 'promotion bogo x3'
            ? r
            : undefined;
        },
        start.getTime() - Date.now() + 30_000,
        'promotion bogo active (started)',
      );
      expect(Date.now()).toBeGreaterThanOrEqual(start.getTime());
      expect(during.status?.desiredMinReplicas).toBe(3);
      // What an SRE sees: kubectl get storeregions, with the floor and what raised it.
      const table = await kubectlGet(e, 'storeregions');
      // (Next is in `-o wide`.)
      expect(table[0]).toEqual(['NAME', 'TIMEZONE', 'FLOOR', 'ACTIVE', 'AGE']);
      expect(table.find((r) => r[0] === 'nyc')?.slice(0, 4)).toEqual([
        'nyc',
        'America/New_York',
        '3',
        'promotion bogo x3',
      ]);
      expect(await readyPods()).toBeGreaterThanOrEqual(3);

      // After the promotion: down in steps to the model's own minimum, never below it.
      await eventually(
        async () => (Date.now() > end.getTime() && mins[mins.length - 1]?.min === 1 ? true : undefined),
        end.getTime() - Date.now() + 90_000,
        'HPA minReplicas back to 1',
      );
      watching = false;
      await watch;
      await traffic.stop();
      const after = mins.filter((m) => m.at > end.getTime());
      const hpa = await getHpa();
      const failures = traffic.samples.filter(failed);
      console.log(
        `[e2e] ${JSON.stringify({
          test: 'StoreRegion promotion on a real node',
          floorRaisedBeforeStartS: Math.round((start.getTime() - raised.at) / 100) / 10,
          raiseToThreeReadyS: Math.round((allReady.at - raised.at) / 100) / 10,
          readyBeforeStartS: Math.round((start.getTime() - allReady.at) / 100) / 10,
          stepDown: [...new Set(after.map((m) => m.min))],
          requests: traffic.samples.length,
          failed: failureSummary(traffic.samples),
        })}`,
      );
      // The floor went up a lead time before the start, and the pods it asks for were Ready in time.
      expect(raised.at).toBeLessThan(start.getTime() - LEAD_MS + 10_000);
      expect(allReady.at).toBeLessThan(start.getTime());
      // Step-down is gradual (3 → 2 → 1 here) and never below the model's minimum.
      expect(after.every((m) => (m.min ?? 0) >= 1)).toBe(true);
      expect(after.some((m) => m.min === 2)).toBe(true);
      expect(mins.every((m) => (m.min ?? 0) >= 1)).toBe(true);
      expect(hpa.metadata?.labels?.['team.example.com/oncall']).toBe('coffee-sre');
      expect(failures).toEqual([]);
    },
  );
});
