/**
 * What the operator renders runs for real (root; a real node, Crema's own images): serving pods
 * fetch and verify their model in an init container, become Ready, and answer personalized
 * recommendations through the model's Service; a rolling update under load loses no request; a
 * serving container killed with SIGKILL restarts while the Service keeps answering; the HPA adds
 * a pod under real load (metrics-server); the admission proxy (nginx in the pod) refuses what
 * exceeds its concurrency with its own 503, and serving publishes the count; and bad input or
 * failure shows as a condition that names the cause: an unreachable model URI, a digest mismatch, a missing image, Redis down.
 *
 * Each test prints one `[node-e2e] {...}` line with what it measured.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RecommenderModel } from '../../src/controllers/recommendermodel/types.js';
import { RESOURCES, resourcePath, type KubeList, type KubeObject } from '../../src/runtime/kube.js';
import { eventually } from '../helpers.js';
import type { Revision } from './models.js';
import {
  cond,
  createModel,
  deleteModel,
  getModel,
  postModel,
  serviceUrl,
  setModel,
  startNodeE2e,
  type NodeE2e,
} from './node-env.js';
import { failed, failureSummary, startTraffic, type Sample } from './traffic.js';

let e: NodeE2e;
let v1: Revision;
let v2: Revision;

interface PodObj extends KubeObject {
  status?: {
    podIP?: string;
    conditions?: Array<{ type: string; status: string; lastTransitionTime?: string }>;
    containerStatuses?: Array<{ name: string; containerID?: string; restartCount?: number; ready?: boolean }>;
  };
}

const pods = async (selector: string) =>
  (
    await e.client.request<KubeList<PodObj>>('GET', resourcePath(RESOURCES.pod, e.ns), {
      query: { labelSelector: selector },
    })
  ).items;

const log = (what: Record<string, unknown>) => console.log(`[node-e2e] ${JSON.stringify(what)}`);

/** Requests per one-second bucket that were answered, from first to last sample. */
function answeredPerSecond(samples: readonly Sample[]): number[] {
  if (!samples.length) return [];
  const t0 = samples[0]!.start;
  const buckets: number[] = [];
  for (const s of samples) {
    const i = Math.floor((s.end - t0) / 1000);
    while (buckets.length <= i) buckets.push(0);
    if (!failed(s)) buckets[i]!++;
  }
  return buckets;
}

const ADMIN_TOKEN = 'e2e-admin-token';

beforeAll(async () => {
  e = await startNodeE2e({ name: 'serving-pods' });
  // The Secret the operator renders the admin token from (spec.serving.adminTokenSecretRef default).
  await e.client.request('POST', `/api/v1/namespaces/${e.ns}/secrets`, {
    body: { metadata: { name: 'crema-serving-admin' }, stringData: { token: ADMIN_TOKEN } },
  });
  v1 = await e.revision({ file: 'ranker-r1' });
  v2 = await e.revision({ file: 'ranker-r2', doc: 'revision 2' });
}, 300_000);

afterAll(async () => {
  await e?.stop();
}, 120_000);

describe('serving pods on a real node', () => {
  it('fetch and verify the model, become Ready, and answer personalized recommendations', async () => {
    const created = Date.now();
    // Two replicas, no room to scale: under this file's load the HPA would add pods mid-test, and
    // scaling under load is the HPA test's subject (its own model), not the rolling update's.
    const m = await createModel(e, 'drinks', v1, { serving: { minReplicas: 2, maxReplicas: 2 } });
    const readyMs = Date.now() - created;
    const [pod] = await pods('crema.dev/model=drinks');
    const podReady = pod!.status!.conditions!.find((c) => c.type === 'Ready')!;
    const podCreateToReadyMs =
      Date.parse(podReady.lastTransitionTime!) - Date.parse(String(pod!.metadata!.creationTimestamp));
    expect(m.status?.readyReplicas).toBeGreaterThanOrEqual(1);
    const url = await serviceUrl(e, 'drinks');
    const res = await fetch(`${url}/v1/recommendations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        userId: e.users[0],
        storeId: 'store-0',
        context: { time: new Date().toISOString() },
      }),
    });
    const body = (await res.json()) as {
      fallback: boolean;
      personalization: string;
      modelRevision: string;
      variant: string;
    };
    expect(res.status).toBe(200);
    expect(body).toMatchObject({
      fallback: false,
      personalization: 'user',
      modelRevision: v1.sha256,
      variant: 'stable',
    });
    // The pods fetched the files from the artifact store (the init container), not from anywhere else.
    expect(e.cluster.artifacts.served.get('/ranker-r1.onnx')).toBeGreaterThanOrEqual(1);
    log({ test: 'pod start', modelCreateToReadyMs: readyMs, podCreateToReadyMs });
  });

  it('erase works with the admin token the operator renders from the Secret', async () => {
    const url = await serviceUrl(e, 'drinks');
    const user = e.users[3]!;
    const erase = (token: string) =>
      fetch(`${url}/v1/users/${encodeURIComponent(user)}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${token}` },
      });
    expect((await erase('wrong')).status).toBe(401);
    const res = await erase(ADMIN_TOKEN);
    expect(res.status).toBe(200);
    // The seeded user's batch feature blob was there, and is gone.
    const body = (await res.json()) as { erased: { featureKeys: number } };
    expect(body.erased.featureKeys).toBeGreaterThanOrEqual(1);
  });

  it('a rolling update under load loses no request', async () => {
    const url = await serviceUrl(e, 'drinks');
    // Open loop at a steady rate: a closed loop at full speed would saturate the machine (see the HPA test).
    const t = startTraffic({ url, users: e.users, ratePerSecond: 400, maxDurationMs: 150_000 });
    await new Promise((r) => setTimeout(r, 3000));
    const started = Date.now();
    await setModel(e, 'drinks', v2);
    // Done: revision 2 everywhere, and every old pod gone (drained, then stopped).
    let podCount = 0;
    await eventually(
      async () => {
        const all = await pods('crema.dev/model=drinks,crema.dev/track=stable');
        const m = await getModel(e, 'drinks');
        podCount = all.length;
        return (
          m.status?.stable?.revision === 2 &&
          all.length === 2 &&
          all.every(
            (p) =>
              p.metadata?.annotations?.['crema.dev/model-sha256'] === v2.sha256 &&
              p.status?.containerStatuses?.every((c) => c.ready),
          )
        );
      },
      150_000,
      'every pod on revision 2 and the old ones gone',
    );
    await new Promise((r) => setTimeout(r, 3000));
    await t.stop();
    const during = t.samples.filter((s) => s.start >= started);
    const revisions = [...new Set(during.filter((s) => !failed(s) && !s.fallback).map((s) => s.revision))];
    log({
      test: 'rolling update under load',
      requests: t.samples.length,
      duringUpdate: during.length,
      failed: t.samples.filter(failed).length,
      errors: failureSummary(t.samples),
      failedAtMs: t.samples
        .filter(failed)
        .map((s) => s.start - started)
        .filter((_, i) => i % 10 === 0),
      rolloutMs: Date.now() - started - 3000,
      podsAfter: podCount,
    });
    expect(during.length).toBeGreaterThan(2000);
    expect(revisions.sort()).toEqual([v1.sha256, v2.sha256].sort());
    expect(t.samples.filter(failed)).toEqual([]);
    // After the update only revision 2 answers.
    const last = t.samples.slice(-50);
    expect(last.every((s) => s.fallback || s.revision === v2.sha256)).toBe(true);
  });

  it('a serving container killed with SIGKILL restarts while the Service keeps answering', async () => {
    const url = await serviceUrl(e, 'drinks');
    const [victim] = await pods('crema.dev/model=drinks,crema.dev/track=stable');
    const serving = victim!.status!.containerStatuses!.find((c) => c.name === 'serving')!;
    const id = serving.containerID!.replace('containerd://', '');
    const restartsBefore = serving.restartCount ?? 0;
    const t = startTraffic({ url, users: e.users, ratePerSecond: 400, maxDurationMs: 90_000 });
    await new Promise((r) => setTimeout(r, 2000));
    const killedAt = Date.now();
    e.cluster.node.ctr(['tasks', 'kill', '--signal', 'SIGKILL', id]);
    const restarted = await eventually(
      async () => {
        const p = (await pods('crema.dev/model=drinks,crema.dev/track=stable')).find(
          (x) => x.metadata?.name === victim!.metadata?.name,
        );
        const c = p?.status?.containerStatuses?.find((x) => x.name === 'serving');
        return c && (c.restartCount ?? 0) > restartsBefore && c.ready ? c : undefined;
      },
      90_000,
      'the killed container restarted and ready again',
    );
    const readyAgainMs = Date.now() - killedAt;
    await new Promise((r) => setTimeout(r, 2000));
    await t.stop();
    const afterKill = t.samples.filter((s) => s.start >= killedAt);
    const lost = afterKill.filter(failed);
    const perSecond = answeredPerSecond(afterKill);
    log({
      test: 'SIGKILL a serving container',
      requestsAfterKill: afterKill.length,
      failedAfterKill: lost.length,
      failedWindowMs: lost.length ? Math.max(...lost.map((s) => s.end)) - killedAt : 0,
      killToReadyAgainMs: readyAgainMs,
      restartCount: restarted.restartCount,
      answeredPerSecond: perSecond,
    });
    // The other pod kept the Service answering every second; only requests that were on, or
    // sent to, the killed process before its endpoint was removed failed.
    expect(perSecond.slice(0, -1).every((n) => n > 0)).toBe(true);
    expect(lost.length).toBeLessThan(afterKill.length / 10);
    expect(t.samples.filter((s) => s.start >= killedAt + readyAgainMs).filter(failed)).toEqual([]);
  });

  it('with Redis down the pods keep answering, flagged as fallback, and personalize again when it is back', async () => {
    const url = await serviceUrl(e, 'drinks');
    const ask = async () => {
      const res = await fetch(`${url}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          userId: e.users[1],
          storeId: 'store-0',
          context: { time: new Date().toISOString() },
        }),
      });
      return {
        status: res.status,
        body: (await res.json()) as { fallback: boolean; fallbackReason?: string },
      };
    };
    await e.cluster.redis.stop();
    try {
      const down = await eventually(
        async () => {
          const a = await ask();
          return a.body.fallback ? a : undefined;
        },
        20_000,
        'a fallback answer',
      );
      expect(down.status).toBe(200);
      expect(down.body.fallbackReason).toBe('redis_unavailable');
      // Still Ready: the pods answer from their feature snapshot.
      const m = await getModel(e, 'drinks');
      expect(cond(m, 'Ready')?.status).toBe('True');
    } finally {
      await e.cluster.redis.start();
    }
    // The restarted Redis is empty: reseed, then answers are personalized again.
    const { Redis } = await import('ioredis');
    const { seedUsers } = await import('./models.js');
    const r = new Redis(e.cluster.redis.url);
    try {
      await seedUsers(r, 'e2e-serving-pods-again', 100);
    } finally {
      r.disconnect();
    }
    await eventually(
      async () => ((await ask()).body.fallback ? undefined : true),
      30_000,
      'personalized again',
    );
  });

  it('the HPA adds a pod under real load (metrics-server)', { timeout: 300_000 }, async () => {
    await deleteModel(e, 'drinks');
    await createModel(e, 'busy', v1, {
      serving: {
        minReplicas: 1,
        maxReplicas: 3,
        targetCPUUtilization: 50,
        resources: { requests: { cpu: '100m', memory: '128Mi' } },
      },
    });
    const url = await serviceUrl(e, 'busy');
    const loadStart = Date.now();
    const t = startTraffic({ url, users: e.users, concurrency: 12, maxDurationMs: 240_000 });
    try {
      const scaled = await eventually(
        async () => {
          const ready = (await pods('crema.dev/model=busy,crema.dev/track=stable')).filter((p) =>
            p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
          );
          return ready.length >= 2 ? ready : undefined;
        },
        240_000,
        'a second Ready pod added by the HPA',
      );
      const hpa = await e.client.request<
        KubeObject & { status?: { currentMetrics?: unknown; desiredReplicas?: number } }
      >('GET', resourcePath(RESOURCES.hpa, e.ns, 'busy'));
      log({
        test: 'HPA under load',
        loadStartToNewPodReadyMs: Date.now() - loadStart,
        readyPods: scaled.length,
        desiredReplicas: hpa.status?.desiredReplicas,
        currentMetrics: hpa.status?.currentMetrics,
        requests: t.samples.length,
      });
      expect(hpa.status?.desiredReplicas).toBeGreaterThanOrEqual(2);
    } finally {
      await t.stop();
    }
    await deleteModel(e, 'busy');
  });

  it('the admission proxy: nginx in the pod passes what serving can take and refuses the rest with 503', async () => {
    await createModel(e, 'guarded', v1, {
      serving: { minReplicas: 1, maxReplicas: 1, admissionProxy: { enabled: true, maxConcurrency: 1 } },
    });
    const [pod] = await pods('crema.dev/model=guarded,crema.dev/track=stable');
    expect(pod!.status!.containerStatuses!.map((c) => [c.name, c.ready]).sort()).toEqual([
      ['admission-proxy', true],
      ['serving', true],
    ]);
    const url = await serviceUrl(e, 'guarded');
    const post = (i: number) =>
      fetch(`${url}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          userId: e.users[i % e.users.length],
          storeId: 'store-0',
          context: { time: new Date().toISOString() },
        }),
      }).then(async (r) => ({
        status: r.status,
        retryAfter: r.headers.get('retry-after'),
        body: await r.text(),
      }));
    // Through the Service (kube-proxy) to nginx to serving: the model's answer.
    const one = await post(0);
    expect(one.status).toBe(200);
    expect(JSON.parse(one.body)).toMatchObject({ fallback: false, modelRevision: v1.sha256 });
    // Bursts of 30 at once with one slot: the rest get the proxy's own 503, nothing else.
    let ok = 0;
    const refused: { retryAfter: string | null; body: string }[] = [];
    for (let burst = 0; burst < 20 && refused.length === 0; burst++) {
      for (const r of await Promise.all(Array.from({ length: 30 }, (_, i) => post(i)))) {
        if (r.status === 200) ok++;
        else if (r.status === 503) refused.push(r);
        else throw new Error(`unexpected ${r.status}: ${r.body}`);
      }
    }
    expect(ok).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]).toMatchObject({ retryAfter: '1' });
    expect(JSON.parse(refused[0]!.body)).toMatchObject({ code: 'OVERLOADED' });
    expect(refused[0]!.body).toContain('(proxy)');
    // Serving (scraped on its own port, not through the proxy) publishes exactly those refusals.
    const [p] = await pods('crema.dev/model=guarded,crema.dev/track=stable');
    const published = async () => {
      const text = await fetch(`http://${p!.status!.podIP}:8081/metrics`).then((r) => r.text());
      return Number(/crema_requests_rejected_total\{[^}]*reason="proxy"[^}]*\} (\d+)/.exec(text)?.[1] ?? 0);
    };
    const count = await eventually(
      async () => ((await published()) >= refused.length ? published() : undefined),
      15_000,
      'serving to publish the proxy refusals',
    );
    expect(count).toBe(refused.length);
    log({ test: 'admission proxy', answered: ok, refusedByProxy: refused.length, published: count });
    await deleteModel(e, 'guarded');
  });
});

describe('bad input and failure on a real node', () => {
  const degraded = (name: string, reason: string) =>
    eventually(
      async () => {
        const m = await getModel(e, name);
        return cond(m, 'Degraded')?.reason === reason ? m : undefined;
      },
      90_000,
      `${name} Degraded (${reason})`,
    );

  /** A model whose pods are expected never to become ready. */
  const createUnready = (name: string, uri: string, sha256: string, serving: Record<string, unknown> = {}) =>
    postModel(
      e,
      name,
      { uri, sha256 },
      { serving: { maxReplicas: 1, resources: { requests: { cpu: '50m', memory: '64Mi' } }, ...serving } },
    );

  it('an unreachable model URI: the pod is not Ready and the model is Degraded naming the URI', async () => {
    const uri = 'http://crema-models.crema-system.svc/no-such-model.onnx';
    await createUnready('unreachable', uri, v1.sha256);
    const m = await degraded('unreachable', 'ModelFetchFailed');
    expect(cond(m, 'Degraded')?.message).toContain(uri);
    expect(cond(m, 'Degraded')?.message).toContain('HTTP 404');
    expect(cond(m, 'Ready')).toMatchObject({ status: 'False', reason: 'ModelFetchFailed' });
    expect(
      (await pods('crema.dev/model=unreachable')).every((p) => !p.status?.containerStatuses?.[0]?.ready),
    ).toBe(true);
    log({ test: 'unreachable URI', degraded: cond(m, 'Degraded')?.message });
    await deleteModel(e, 'unreachable');
  });

  it('a digest mismatch: the model is Degraded naming the URI and both digests', async () => {
    const wrong = 'f'.repeat(64);
    await createUnready('mismatch', v1.uri, wrong);
    const m = await degraded('mismatch', 'ModelFetchFailed');
    expect(cond(m, 'Degraded')?.message).toMatch(
      new RegExp(`${v1.uri.replace(/[./]/g, '\\$&')}: sha256 ${v1.sha256} is not the pinned digest ${wrong}`),
    );
    log({ test: 'digest mismatch', degraded: cond(m, 'Degraded')?.message });
    await deleteModel(e, 'mismatch');
  });

  it('a missing image: the model is Degraded saying which image cannot be pulled', async () => {
    await createUnready('noimage', v1.uri, v1.sha256, { image: 'crema/serving:does-not-exist' });
    const m = await degraded('noimage', 'ImagePullFailed');
    expect(cond(m, 'Degraded')?.message).toMatch(/image crema\/serving:does-not-exist cannot be pulled/);
    log({ test: 'missing image', degraded: cond(m, 'Degraded')?.message });
    await deleteModel(e, 'noimage');
  });

  it('a canary whose model cannot be fetched gets no traffic: weight 0, stable keeps serving', async () => {
    await createModel(e, 'guarded', v1, {
      rollout: {
        steps: [
          { weight: 50, pause: '1s', analysis: false },
          { weight: 100, analysis: false },
        ],
      },
    });
    await e.client.request('PATCH', resourcePath(RESOURCES.recommenderModel, e.ns, 'guarded'), {
      contentType: 'application/merge-patch+json',
      body: {
        spec: { model: { uri: 'http://crema-models.crema-system.svc/missing-r2.onnx', sha256: v2.sha256 } },
      },
    });
    const m = await eventually(
      async () => {
        const x: RecommenderModel = await getModel(e, 'guarded');
        return cond(x, 'Degraded')?.reason === 'ModelFetchFailed' ? x : undefined;
      },
      90_000,
      'canary Degraded (ModelFetchFailed)',
    );
    expect(cond(m, 'Degraded')?.message).toMatch(/^canary: pod guarded-canary-.*missing-r2\.onnx: HTTP 404/);
    expect(m.status?.canary?.weight).toBe(0);
    expect(m.status?.stable?.modelSha).toBe(v1.sha256);
    const url = await serviceUrl(e, 'guarded');
    const res = await fetch(`${url}/v1/recommendations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        userId: e.users[2],
        storeId: 'store-0',
        context: { time: new Date().toISOString() },
      }),
    });
    expect(((await res.json()) as { modelRevision: string }).modelRevision).toBe(v1.sha256);
    await deleteModel(e, 'guarded');
  });
});
