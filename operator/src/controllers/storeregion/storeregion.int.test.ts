/**
 * The StoreRegion controller against the real API server and controller-manager, with a clock
 * the test moves: the model's HPA minReplicas follows a simulated day (lead, peak, a 10x
 * promotion on top, step-down), never below the model's own minimum; the RecommenderModel
 * controller and the region controller share the HPA without taking minReplicas from each
 * other; an SRE's own HPA fields survive both; bad input is a condition naming the field and
 * changes nothing.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { StoreRegion } from '../../api/v1alpha1/index.js';
import type { RunningOperator } from '../../operator.js';
import { FIELD_MANAGER } from '../../runtime/apply.js';
import { RESOURCES, resourcePath, type KubeClient, type KubeObject } from '../../runtime/kube.js';
import { eventually } from '../../../test/helpers.js';
import { startOperatorForTest, type OperatorTestEnv } from '../../../test/operator.js';
import type { RecommenderModel } from '../recommendermodel/types.js';
import { REGION_FIELD_MANAGER, ownsMinReplicas } from './floor.js';

const ns = `sr-${Date.now().toString(36)}`;
let client: KubeClient;
let op: RunningOperator;
let env: OperatorTestEnv;
/** The controller's clock: a day in June in Seattle (PDT, UTC-7). */
let clock = Date.parse('2026-06-01T06:00:00-07:00');

type Hpa = KubeObject & { spec: { minReplicas?: number; maxReplicas: number } };

/** The SRE's fields are still there. */
function sreFieldsSurvive(hpa: Hpa) {
  expect(hpa.metadata?.labels?.['team.example.com/oncall']).toBe('coffee-sre');
  expect(hpa.metadata?.annotations?.['sre.example.com/ticket']).toBe('OPS-42');
}

const getHpa = () => client.request<Hpa>('GET', resourcePath(RESOURCES.hpa, ns, 'drinks'));
const getRegion = (name: string) =>
  client.request<StoreRegion>('GET', resourcePath(RESOURCES.storeRegion, ns, name));
const cond = (r: StoreRegion, type: string) => r.status?.conditions?.find((c) => c.type === type);

function region(name: string, spec: Partial<StoreRegion['spec']>): StoreRegion {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'StoreRegion',
    metadata: { name, namespace: ns },
    spec: { stores: [`${name}-0001`], timezone: 'America/Los_Angeles', ...spec },
  };
}

beforeAll(async () => {
  env = await startOperatorForTest({
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    operator: {
      regionClock: () => new Date(clock),
      regionSchedule: { leadMs: 120_000, stepDownMs: 900_000, stepDownSteps: 3 },
    },
  });
  client = env.client;
  op = env.op;
  await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name: 'drinks', namespace: ns },
      spec: {
        model: { uri: 'file:///models/drinks.onnx', sha256: 'a'.repeat(64), task: 'drink-ranking' },
        serving: { minReplicas: 2, maxReplicas: 40 },
      },
    } as RecommenderModel,
  });
  await eventually(() => getHpa().catch(() => undefined), 20_000, 'the model HPA');
  // An SRE labels and annotates the HPA by hand (kubectl edit: an Update, not an apply). Crema
  // owns minReplicas, maxReplicas, metrics and behavior; these fields are the SRE's.
  await client.request('PATCH', resourcePath(RESOURCES.hpa, ns, 'drinks'), {
    body: {
      metadata: {
        labels: { 'team.example.com/oncall': 'coffee-sre' },
        annotations: { 'sre.example.com/ticket': 'OPS-42' },
      },
    },
    contentType: 'application/merge-patch+json',
    query: { fieldManager: 'kubectl-edit' },
  });
});

afterAll(() => env?.stop());

/** Moves the clock, wakes the region (as its timer would) and waits for the HPA's floor. */
async function at(iso: string, minReplicas: number): Promise<Hpa> {
  clock = Date.parse(iso);
  op.manager.enqueue('storeregion', `${ns}/seattle`);
  const hpa = await eventually(
    async () => {
      const h = await getHpa();
      return h.spec.minReplicas === minReplicas ? h : undefined;
    },
    10_000,
    `HPA minReplicas ${minReplicas} at ${iso}`,
  );
  // Another manager's fields survive every write.
  sreFieldsSurvive(hpa);
  return hpa;
}

describe('StoreRegion controller (real API server, moved clock)', () => {
  it('the HPA floor follows a simulated day with a 10x promotion, never below the model minimum', async () => {
    await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), {
      body: region('seattle', {
        peakWindows: [
          { days: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri'], start: '07:00', end: '09:00', multiplier: 3 },
          // A window ending at midnight (24:00) is accepted by the API server.
          { days: ['Mon'], start: '22:00', end: '24:00', multiplier: 2 },
        ],
        promotions: [
          {
            name: 'bogo',
            start: '2026-06-01T08:00:00-07:00',
            end: '2026-06-01T08:30:00-07:00',
            multiplier: 10,
          },
        ],
        serving: { modelRef: 'drinks', minReplicas: 1, maxReplicas: 50 },
      }),
    });
    // 06:00: the region asks 1, the model's own minimum (2) holds.
    const early = await eventually(
      async () => {
        const r = await getRegion('seattle');
        return cond(r, 'Ready')?.status === 'True' ? r : undefined;
      },
      10_000,
      'region Ready',
    );
    expect(early.status).toMatchObject({
      desiredMinReplicas: 1,
      activeWindow: '',
      nextChangeTime: '2026-06-01T13:58:00.000Z', // 06:58 PDT: the lead before 07:00
      nextMinReplicas: 3,
    });
    expect((await getHpa()).spec.minReplicas).toBe(2);

    // The day: the clock jumps to each instant the region announced as its next change.
    const seen: Array<[string, number, number, string]> = [];
    for (;;) {
      const r = await getRegion('seattle');
      const next = r.status?.nextChangeTime;
      if (!next || next > '2026-06-01T16:15:00.000Z') break;
      clock = Date.parse(next);
      op.manager.enqueue('storeregion', `${ns}/seattle`);
      const after = await eventually(
        async () => {
          const x = await getRegion('seattle');
          return x.status?.nextChangeTime !== next ? x : undefined;
        },
        10_000,
        `the region past ${next}`,
      );
      const hpa = await eventually(
        async () => {
          const h = await getHpa();
          return h.spec.minReplicas === Math.max(2, after.status!.desiredMinReplicas!) ? h : undefined;
        },
        10_000,
        `HPA floor at ${next}`,
      );
      sreFieldsSurvive(hpa);
      seen.push([
        next,
        after.status!.desiredMinReplicas!,
        hpa.spec.minReplicas!,
        after.status!.activeWindow!,
      ]);
    }
    expect(seen).toEqual([
      // [instant, region floor, HPA minReplicas, Active]
      ['2026-06-01T13:58:00.000Z', 3, 3, 'peak 07:00-09:00 x3 (lead)'],
      ['2026-06-01T14:00:00.000Z', 3, 3, 'peak 07:00-09:00 x3'],
      ['2026-06-01T14:58:00.000Z', 30, 30, 'peak 07:00-09:00 x3, promotion bogo x10 (lead)'], // 1 × 3 × 10
      ['2026-06-01T15:00:00.000Z', 30, 30, 'peak 07:00-09:00 x3, promotion bogo x10'],
      ['2026-06-01T15:30:00.000Z', 30, 30, 'peak 07:00-09:00 x3, promotion bogo x10 (stepping down)'],
      ['2026-06-01T15:35:00.000Z', 21, 21, 'peak 07:00-09:00 x3, promotion bogo x10 (stepping down)'],
      ['2026-06-01T15:40:00.000Z', 12, 12, 'peak 07:00-09:00 x3, promotion bogo x10 (stepping down)'],
      ['2026-06-01T15:45:00.000Z', 3, 3, 'peak 07:00-09:00 x3'],
      ['2026-06-01T16:00:00.000Z', 3, 3, 'peak 07:00-09:00 x3 (stepping down)'],
      // x2.33: still 3 whole pods, but what the region adds to its model's sum changed.
      ['2026-06-01T16:05:00.000Z', 3, 3, 'peak 07:00-09:00 x3 (stepping down)'],
      ['2026-06-01T16:10:00.000Z', 2, 2, 'peak 07:00-09:00 x3 (stepping down)'],
      ['2026-06-01T16:15:00.000Z', 1, 2, ''], // the region asks 1; the model keeps its own 2
    ]);
    expect((await getRegion('seattle')).status?.activePromotions).toBeUndefined();
  });

  it('the model controller does not take minReplicas back while a region holds it', async () => {
    clock = Date.parse('2026-06-01T08:10:00-07:00');
    await at('2026-06-01T08:10:00-07:00', 30);
    const before = await getHpa();
    expect(ownsMinReplicas(before, REGION_FIELD_MANAGER)).toBe(true);
    expect(ownsMinReplicas(before, FIELD_MANAGER)).toBe(false);
    // A model reconcile (its spec changes: maxReplicas) re-applies the HPA without minReplicas.
    await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, 'drinks'), {
      body: { spec: { serving: { maxReplicas: 45 } } },
      contentType: 'application/merge-patch+json',
    });
    const hpa = await eventually(
      async () => {
        const h = await getHpa();
        return h.spec.maxReplicas === 45 ? h : undefined;
      },
      10_000,
      'maxReplicas 45',
    );
    expect(hpa.spec.minReplicas).toBe(30);
    sreFieldsSurvive(hpa);
  });

  it('the model maximum clamps the summed floor: CapacityClamped names the field', async () => {
    await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, 'drinks'), {
      body: { spec: { serving: { maxReplicas: 20 } } },
      contentType: 'application/merge-patch+json',
    });
    await eventually(async () => (await getHpa()).spec.minReplicas === 20, 10_000, 'clamped floor 20');
    const r = await eventually(
      async () => {
        const x = await getRegion('seattle');
        return cond(x, 'CapacityClamped')?.status === 'True' ? x : undefined;
      },
      10_000,
      'CapacityClamped',
    );
    expect(cond(r, 'CapacityClamped')).toMatchObject({ reason: 'ModelMaximum' });
    expect(cond(r, 'CapacityClamped')?.message).toContain('spec.serving.maxReplicas');
  });

  it('an unknown timezone or model is Degraded, naming the field, and changes nothing', async () => {
    const floor = (await getHpa()).spec.minReplicas;
    await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), {
      body: region('olympus', {
        timezone: 'Mars/Olympus',
        peakWindows: [{ days: ['Mon'], start: '07:00', end: '09:00', multiplier: 5 }],
        serving: { modelRef: 'drinks', minReplicas: 4 },
      }),
    });
    await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), {
      body: region('nowhere', { serving: { modelRef: 'no-such-model' } }),
    });
    const mars = await eventually(
      async () => {
        const x = await getRegion('olympus');
        return cond(x, 'Degraded')?.status === 'True' ? x : undefined;
      },
      10_000,
      'olympus Degraded',
    );
    expect(cond(mars, 'Degraded')?.message).toContain('spec.timezone');
    expect(cond(mars, 'Degraded')?.message).toContain('Mars/Olympus');
    expect(mars.status?.desiredMinReplicas).toBeUndefined();
    const nowhere = await eventually(
      async () => {
        const x = await getRegion('nowhere');
        return cond(x, 'Degraded')?.status === 'True' ? x : undefined;
      },
      10_000,
      'nowhere Degraded',
    );
    expect(cond(nowhere, 'Degraded')).toMatchObject({ reason: 'ModelNotFound' });
    expect(cond(nowhere, 'Degraded')?.message).toContain('spec.serving.modelRef');
    // A sibling's reconcile sums every region serving the model: the broken one adds nothing.
    op.manager.enqueue('storeregion', `${ns}/seattle`);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await getHpa()).spec.minReplicas).toBe(floor);
  });

  it('without regions the model controller takes minReplicas back with the model minimum', async () => {
    for (const name of ['seattle', 'olympus', 'nowhere'])
      await client.request('DELETE', resourcePath(RESOURCES.storeRegion, ns, name));
    const hpa = await eventually(
      async () => {
        const h = await getHpa();
        return h.spec.minReplicas === 2 && ownsMinReplicas(h, FIELD_MANAGER) ? h : undefined;
      },
      15_000,
      'minReplicas back to 2, owned by the model controller',
    );
    // (The region manager may still co-own the same value: harmless, it never applies it again,
    // and the model controller's next change of its minimum takes the field with force.)
    sreFieldsSurvive(hpa);
  });

  it('8 regions sharing the model without minReplicas ask its minimum, not 8 times it; a 10x promotion in one adds its share', async () => {
    clock = Date.parse('2026-06-01T11:00:00-07:00');
    for (let i = 0; i < 8; i++)
      await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), {
        body: region(`share-${i}`, {
          serving: { modelRef: 'drinks' },
          ...(i === 0
            ? {
                promotions: [
                  {
                    name: 'lunch',
                    start: '2026-06-01T12:00:00-07:00',
                    end: '2026-06-01T13:00:00-07:00',
                    multiplier: 10,
                  },
                ],
              }
            : {}),
        }),
      });
    // Each has 1 store of 8: a quarter replica of the model's 2. Old rule: 8 × 2 = 16.
    const quiet = await eventually(
      async () => {
        // (Siblings do not wake each other: a region's status catches up at its next change.)
        op.manager.enqueue('storeregion', `${ns}/share-7`);
        const r = await getRegion('share-7');
        return cond(r, 'Ready')?.message?.includes('8 region(s) ask 2 in total') ? r : undefined;
      },
      10_000,
      'share-7 sees all 8 regions',
    );
    expect(quiet.status?.desiredMinReplicas).toBe(1); // its own floor in whole pods
    expect(cond(quiet, 'Ready')?.message).toContain('(this one 0.25)');
    await new Promise((r) => setTimeout(r, 500));
    expect((await getHpa()).spec.minReplicas).toBe(2);

    // 12:10 PDT: share-0's promotion: 2 + 0.25 × (10 − 1) = 4.25 → 5 (old rule: 7 × 2 + 20 → 20).
    clock = Date.parse('2026-06-01T12:10:00-07:00');
    op.manager.enqueue('storeregion', `${ns}/share-0`);
    const hpa = await eventually(
      async () => {
        const h = await getHpa();
        return h.spec.minReplicas === 5 ? h : undefined;
      },
      10_000,
      'HPA minReplicas 5',
    );
    sreFieldsSurvive(hpa);
    const promo = await eventually(
      async () => {
        const r = await getRegion('share-0');
        return r.status?.desiredMinReplicas === 3 ? r : undefined;
      },
      10_000,
      'share-0 floor 3',
    );
    expect(cond(promo, 'Ready')?.message).toContain('ask 4.25 in total (this one 2.5)');

    // The platform team sets share-0's quiet-hour demand (a tenth of a pod): its 10x promotion
    // now asks 1 pod, the others keep their shares: 0.1 × 10 + 7 × 0.25 = 2.75 → 3.
    await client.request('PATCH', resourcePath(RESOURCES.storeRegion, ns, 'share-0'), {
      contentType: 'application/merge-patch+json',
      body: { spec: { serving: { baseReplicas: 0.1 } } },
    });
    await eventually(
      async () => ((await getHpa()).spec.minReplicas === 3 ? true : undefined),
      10_000,
      'HPA minReplicas 3',
    );
    const anchored = await eventually(
      async () => {
        const r = await getRegion('share-0');
        return cond(r, 'Ready')?.message?.includes('(this one 1)') ? r : undefined;
      },
      10_000,
      'share-0 asks 1',
    );
    expect(cond(anchored, 'Ready')?.message).toContain('ask 2.75 in total');
  });
});
