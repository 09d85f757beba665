/**
 * Experiments end to end on a real node (root): two RecommenderModels whose serving pods the
 * kubelet runs from Crema's images, the experiment router Deployment and `<exp>-exp` Service the
 * Experiment controller renders, a real Prometheus that discovers and scrapes the pods, and the
 * operator in-process reading serving's counts from it (operator/test/e2e/node-env.ts).
 *
 * Models: the control `drinks` is the real trained ranker (manifests/models/artifacts); the
 * variant `drinks-v2` is another ranker (serving's test MLP, seed 2) written into the test's
 * artifact store, so the two rank drinks differently. Users follow the trained model's feature
 * baseline.
 *
 * Scenarios:
 * - counting: users come through `count-exp` twice each; halfway one serving pod of the variant
 *   is deleted and replaced. Every exposed user is counted once, under the variant the sticky hash
 *   assigns them, and the counts in status never go down (nothing is lost with the pod);
 * - a winner: synthetic users with hidden tastes (the category v2 ranks first for them) order
 *   with probability 0.45 when the top drink is of their taste, 0.1 otherwise. v2 truly converts
 *   more; the experiment concludes with v2 the winner and, with autoPromote, the control model
 *   rolls v2's model out through its own canary, whose pods start and become Ready; `kubectl get
 *   exp` shows Phase, Winner and Lift;
 * - a guardrail: an SRE's fault on a third model's pods (one request in flight per pod: real
 *   503s) breaks the error-rate guardrail of the variant it serves; the experiment is Stopped
 *   naming the variant and the guardrail, nothing is promoted, and the router sends every user
 *   to the control (no failed request afterwards).
 *
 * Each scenario prints one `[e2e] {...}` JSON line with its measurements.
 */
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assignVariant } from '../../../contracts/variant-hash.js';
import { writeModel } from '../../../serving/test/fixtures.js';
import type { Experiment } from '../../src/controllers/experiment/types.js';
import { RESOURCES, resourcePath, type KubeList, type KubeObject } from '../../src/runtime/kube.js';
import { eventually } from '../helpers.js';
import type { Revision } from './models.js';
import { failed, failureSummary, startTraffic } from './traffic.js';
import {
  cond,
  createModel,
  getModel,
  kubectlGet,
  serviceAnswers,
  serviceUrl,
  startNodeE2e,
  type NodeE2e,
} from './node-env.js';

const CATS = ['hot', 'iced', 'blended', 'energy'] as const;
const catOf = (itemId: string) => CATS[Number(itemId.split('-')[1]) % 4]!;
let e: NodeE2e;
let v2: Revision;

beforeAll(async () => {
  e = await startNodeE2e({
    name: 'exp-e2e',
    users: 1600,
    observability: true,
    operator: { experiments: { lookIntervalMs: 2000, guardrailWindow: '30s' } },
  });
  const control = await e.revision({ file: 'drinks-r1' });
  const m = await writeModel({ dir: e.artifacts.dir, file: 'drinks-v2', name: 'ranker', seed: 2 });
  v2 = { uri: `${e.artifacts.url}/drinks-v2.onnx`, sha256: m.meta.sha256 };
  // The control's canary pauses at 50% (no analysis): a promoted winner stops there for the test to see.
  const rollout = { steps: [{ weight: 50, pause: '1h', analysis: false }] };
  await createModel(e, 'drinks', control, { rollout });
  await createModel(e, 'drinks-v2', v2, { rollout });
}, 600_000);

afterAll(async () => {
  await e?.stop();
}, 120_000);

const getExp = (name: string) =>
  e.client.request<Experiment>('GET', resourcePath(RESOURCES.experiment, e.ns, name));

/**
 * Creates Experiment `name` (control `drinks` vs v2 `drinks-v2` unless `extra.variants` says
 * otherwise) and waits until it runs and its Service answers.
 */
async function createExperiment(name: string, extra: Record<string, unknown>): Promise<Experiment> {
  await e.client.request('POST', resourcePath(RESOURCES.experiment, e.ns), {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'Experiment',
      metadata: { name, namespace: e.ns },
      spec: {
        variants: [
          { name: 'control', modelRef: 'drinks', weight: 50 },
          { name: 'v2', modelRef: 'drinks-v2', weight: 50 },
        ],
        assignment: { salt: `${name}-salt` },
        primaryMetric: 'conversion',
        minSamplesPerVariant: 200,
        maxDuration: '1h',
        ...extra,
      },
    },
  });
  const running = await eventually(
    async () => {
      const x = await getExp(name);
      return x.status?.phase === 'Running' ? x : undefined;
    },
    60_000,
    `${name} Running`,
  );
  // The router pods are up and kube-proxy routes the experiment's Service to them.
  await serviceAnswers(e, `${name}-exp`);
  return running;
}

async function stopExperiment(name: string): Promise<void> {
  await e.client.request('PATCH', resourcePath(RESOURCES.experiment, e.ns, name), {
    contentType: 'application/merge-patch+json',
    body: { metadata: { annotations: { 'crema.dev/stop': 'true' } } },
  });
  await eventually(async () => (await getExp(name)).status?.phase === 'Stopped', 30_000, `${name} Stopped`);
}

interface Recommendation {
  readonly status: number;
  readonly top?: string;
  readonly body: string;
}

/** POST /v1/recommendations for `userId` (store-0 is in New York; now). */
async function recommend(pool: Pool, userId: string, limit = 3): Promise<Recommendation> {
  const res = await pool.request({
    path: '/v1/recommendations',
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      userId,
      storeId: 'store-0',
      context: { time: new Date().toISOString(), channel: 'app' },
      limit,
    }),
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const body = await res.body.text();
  if (res.statusCode !== 200) return { status: res.statusCode, body };
  const top = (JSON.parse(body) as { items: Array<{ itemId: string }> }).items[0]?.itemId;
  return { status: 200, body, ...(top ? { top } : {}) };
}

/** Runs `fn` over `items` with `workers` in parallel. */
async function each<T>(items: readonly T[], workers: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}

type Exposures = Record<string, number>;
const exposuresOf = (x: Experiment): Exposures =>
  Object.fromEntries((x.status?.variants ?? []).map((v) => [v.name, v.exposures ?? 0]));

async function countScenario(exp: Experiment): Promise<void> {
  const url = await serviceUrl(e, 'count-exp');
  const pool = new Pool(url, { connections: 8 });
  // Every look's counts, to see that none goes down.
  const seen: Exposures[] = [];
  let watching = true;
  const watch = (async () => {
    while (watching) {
      const x = await getExp('count').catch(() => undefined);
      if (x) seen.push(exposuresOf(x));
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  try {
    await countAcrossRestart(exp, pool, seen);
  } finally {
    watching = false;
    await watch;
    await pool.close();
  }
}

async function countAcrossRestart(exp: Experiment, pool: Pool, seen: Exposures[]): Promise<void> {
  const served = new Set<string>();
  const failures: string[] = [];
  const visit = async (u: string) => {
    for (let k = 0; k < 2; k++) {
      const r = await recommend(pool, u).catch((err: Error) => ({ status: 0, body: err.message }));
      if (r.status === 200) served.add(u);
      else failures.push(`${r.status} ${r.body.slice(0, 120)}`);
    }
  };
  const first = e.users.slice(0, 200);
  const second = e.users.slice(200, 400);
  const split = exp.spec.variants.map((v) => ({ name: v.name, weight: v.weight }));
  const expected = (users: Iterable<string>): Exposures => {
    const out: Exposures = { control: 0, v2: 0 };
    for (const u of users) out[assignVariant(u, 'count-salt', split)]! += 1;
    return out;
  };
  await each(first, 4, visit);
  const before = await eventually(
    async () => {
      const x = exposuresOf(await getExp('count'));
      return JSON.stringify(x) === JSON.stringify(expected(served)) ? x : undefined;
    },
    60_000,
    `the first ${first.length} users counted`,
  );

  // A serving pod of the variant goes away (a node drain, an eviction); its Deployment replaces it.
  const pods = await e.client.request<KubeList<KubeObject>>('GET', resourcePath(RESOURCES.pod, e.ns), {
    query: { labelSelector: 'crema.dev/model=drinks-v2' },
  });
  const victim = pods.items[0]!.metadata!.name!;
  await e.client.request('DELETE', resourcePath(RESOURCES.pod, e.ns, victim), {
    query: { gracePeriodSeconds: '0' },
  });
  await eventually(
    async () => {
      const now = await e.client.request<
        KubeList<KubeObject & { status?: { conditions?: Array<{ type: string; status: string }> } }>
      >('GET', resourcePath(RESOURCES.pod, e.ns), {
        query: { labelSelector: 'crema.dev/model=drinks-v2' },
      });
      return now.items.some(
        (p) =>
          p.metadata!.name !== victim &&
          p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      );
    },
    120_000,
    'the replacement serving pod Ready',
  );
  // Let Prometheus scrape the new pod and the operator look a few times with the old one gone.
  await new Promise((r) => setTimeout(r, 15_000));
  await each(second, 4, visit);
  const want = expected(served);
  const after = await eventually(
    async () => {
      const x = exposuresOf(await getExp('count'));
      return JSON.stringify(x) === JSON.stringify(want) ? x : undefined;
    },
    60_000,
    `all ${served.size} users counted (${JSON.stringify(want)})`,
  ).catch(async (err: Error) => {
    throw new Error(`${err.message}; status has ${JSON.stringify(exposuresOf(await getExp('count')))}`);
  });
  const drops = seen.filter(
    (s, i) => i > 0 && Object.keys(s).some((k) => (s[k] ?? 0) < (seen[i - 1]![k] ?? 0)),
  );
  console.log(
    `[e2e] ${JSON.stringify({ scenario: 'count', before, after, requests: 2 * served.size, failures: failures.length, looksSeen: seen.length, drops: drops.length })}`,
  );
  expect(failures).toEqual([]);
  expect(after).toEqual(want);
  expect(drops).toEqual([]);
}

describe('experiments on a real node: router and serving pods, real Prometheus', () => {
  it(
    "counts every exposed user once under their variant, and keeps the counts when a variant's serving pod is replaced",
    { timeout: 600_000 },
    async () => {
      const exp = await createExperiment('count', { minSamplesPerVariant: 100_000_000 });
      try {
        await countScenario(exp);
      } finally {
        // Ends the experiment whatever happened, so the next one may hold the same models.
        await stopExperiment('count');
      }
    },
  );

  it(
    'a variant with truly higher conversion wins, and the control model rolls it out on real pods',
    { timeout: 600_000 },
    async () => {
      // Hidden tastes: the category drinks-v2 ranks first for each user (asked of its own Service).
      const direct = new Pool(await serviceUrl(e, 'drinks-v2'), { connections: 4 });
      const users = e.users.slice(400, 1600);
      const tastes = new Map<string, string>();
      await each(users, 4, async (u) => {
        const r = await recommend(direct, u, 1);
        if (!r.top) throw new Error(`drinks-v2 recommendation ${r.status}: ${r.body}`);
        tastes.set(u, catOf(r.top));
      });
      await direct.close();

      await createExperiment('ab', {
        decision: { alpha: 0.05, autoPromote: true },
        guardrails: { p99LatencyMs: 1000, errorRate: 0.05 },
      });
      const pool = new Pool(await serviceUrl(e, 'ab-exp'), { connections: 8 });
      let rnd = 99;
      const random = () => (rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
      let orders = 0;
      let failures = 0;
      const started = Date.now();
      await each(users, 4, async (u) => {
        if ((await getExpPhaseCached()) !== 'Running') return;
        const r = await recommend(pool, u).catch(() => undefined);
        if (!r?.top) {
          failures++;
          return;
        }
        if (random() >= (catOf(r.top) === tastes.get(u) ? 0.45 : 0.1)) return;
        const res = await pool.request({
          path: '/v1/events',
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            eventId: `${u}-o1`,
            type: 'order',
            userId: u,
            storeId: 'store-0',
            at: new Date().toISOString(),
            itemIds: [r.top, 'addon-1'],
            value: 5.5,
          }),
        });
        await res.body.text();
        if (res.statusCode >= 300) failures++;
        else orders++;
      });
      await pool.close();
      const done = await eventually(
        async () => {
          const x = await getExp('ab');
          return x.status?.phase === 'Concluded' ? x : undefined;
        },
        120_000,
        'ab Concluded',
      );
      const s = done.status!;
      const decidedAfterMs =
        Date.parse(s.conditions!.find((c) => c.type === 'Concluded')!.lastTransitionTime!) - started;
      expect(s.winner).toBe('v2');
      expect(s.conditions?.find((c) => c.type === 'Concluded')).toMatchObject({
        status: 'True',
        reason: 'Winner',
      });
      const [c, v] = s.variants!;
      expect(v!.conversionRate!).toBeGreaterThan(c!.conversionRate!);
      expect(v!.significant).toBe(true);
      expect(s.srm?.mismatch).toBe(false);
      expect(s.promotion).toMatchObject({ model: 'drinks', sha256: v2.sha256 });
      // The control model canaries the winner's model: its canary pods start on the node and serve.
      const control = await eventually(
        async () => {
          const m = await getModel(e, 'drinks');
          return m.status?.canary?.modelSha === v2.sha256 &&
            m.status.canary.weight === 50 &&
            (m.status.canary.readyReplicas ?? 0) >= 1
            ? m
            : undefined;
        },
        180_000,
        'the control model canarying the winner at 50% with a Ready canary pod',
      );
      expect(control.spec.model.sha256).toBe(v2.sha256);
      // What an SRE sees: kubectl get exp.
      const table = await kubectlGet(e, 'experiments');
      expect(table[0]).toEqual(['NAME', 'PHASE', 'WINNER', 'LIFT', 'AGE']);
      expect(table.find((r) => r[0] === 'ab')?.slice(0, 4)).toEqual(['ab', 'Concluded', 'v2', s.lift]);
      expect(cond(control, 'Degraded')?.status).not.toBe('True');
      console.log(
        `[e2e] ${JSON.stringify({
          scenario: 'winner',
          users: users.length,
          orders,
          failures,
          looks: s.looks,
          decidedAfterS: Math.round(decidedAfterMs / 100) / 10,
          lift: s.lift,
          variants: s.variants?.map((x) => ({
            name: x.name,
            exposures: x.exposures,
            conversionRate: x.conversionRate,
            pValue: x.pValue,
          })),
        })}`,
      );
      expect(failures).toBe(0);
    },
  );
  it(
    'a variant whose pods fail breaches the error-rate guardrail: the experiment stops and its users go back to the control',
    { timeout: 600_000 },
    async () => {
      const rev = await e.revision({ file: 'drinks-faulty', doc: 'faulty' });
      await createModel(e, 'drinks-faulty', rev);
      // An SRE's fault on the variant's pods (its own field manager; the operator's apply leaves
      // it alone): each pod sheds all but one concurrent request, real 503s.
      await e.client.request('PATCH', resourcePath(RESOURCES.deployment, e.ns, 'drinks-faulty-stable'), {
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'e2e-fault', force: true },
        body: {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: 'drinks-faulty-stable', namespace: e.ns },
          spec: {
            template: {
              spec: { containers: [{ name: 'serving', env: [{ name: 'CREMA_MAX_IN_FLIGHT', value: '1' }] }] },
            },
          },
        },
      });
      await eventually(
        async () => {
          const d = await e.client.request<
            KubeObject & { status?: { updatedReplicas?: number; replicas?: number; readyReplicas?: number } }
          >('GET', resourcePath(RESOURCES.deployment, e.ns, 'drinks-faulty-stable'));
          const st = d.status ?? {};
          return st.updatedReplicas === st.replicas && st.readyReplicas === st.replicas ? true : undefined;
        },
        120_000,
        'the faulty pods rolled out',
      );
      await createExperiment('guard', {
        variants: [
          { name: 'control', modelRef: 'drinks-v2', weight: 50 },
          { name: 'faulty', modelRef: 'drinks-faulty', weight: 50 },
        ],
        decision: { autoPromote: true },
        guardrails: { errorRate: 0.05 },
      });
      // Closed loop: the fault only bites when requests overlap.
      const t = startTraffic({
        url: await serviceUrl(e, 'guard-exp'),
        users: e.users,
        concurrency: 8,
        maxDurationMs: 300_000,
      });
      const stopped = await eventually(
        async () => {
          const x = await getExp('guard');
          return x.status?.phase === 'Stopped' ? x : undefined;
        },
        180_000,
        'guard Stopped',
      ).catch((err: Error) => {
        const seen = t.samples.filter((x) => x.status === 503).length;
        throw new Error(`${err.message}; clients saw ${seen} 503s of ${t.samples.length}`);
      });
      const stoppedAt = Date.now();
      // The router's config goes back to the control; afterwards every answer is the control's.
      await new Promise((r) => setTimeout(r, 10_000));
      await t.stop();
      const s = stopped.status!;
      expect(s.conditions?.find((c) => c.type === 'Stopped')).toMatchObject({
        reason: 'GuardrailBreached',
        message: expect.stringMatching(/variant faulty \(drinks-faulty\) breached errorRate/),
      });
      expect(s.winner).toBeUndefined();
      expect(s.promotion).toBeUndefined();
      const cm = await e.client.request<KubeObject & { data: Record<string, string> }>(
        'GET',
        resourcePath(RESOURCES.configMap, e.ns, 'guard-exp-router'),
      );
      expect(
        (JSON.parse(cm.data['router.json']!) as { variants: Array<{ weight: number }> }).variants.map(
          (x) => x.weight,
        ),
      ).toEqual([100, 0]);
      const before = t.samples.filter((x) => x.start < stoppedAt);
      const after = t.samples.filter((x) => x.start >= stoppedAt + 5_000);
      console.log(
        `[e2e] ${JSON.stringify({
          scenario: 'guardrail',
          reason: s.reason,
          requestsBefore: before.length,
          failedBefore: failureSummary(before),
          requestsAfter: after.length,
          failedAfter: failureSummary(after),
        })}`,
      );
      expect(before.some(failed)).toBe(true);
      expect(after.length).toBeGreaterThan(0);
      expect(after.filter(failed)).toEqual([]);
    },
  );
});

/** The ab experiment's phase, read at most every second (users stop coming once it concluded). */
let phaseCache: { at: number; phase: string | undefined } = { at: 0, phase: undefined };
async function getExpPhaseCached(): Promise<string | undefined> {
  if (Date.now() - phaseCache.at > 1000) {
    phaseCache = { at: Date.now(), phase: (await getExp('ab')).status?.phase };
  }
  return phaseCache.phase;
}
