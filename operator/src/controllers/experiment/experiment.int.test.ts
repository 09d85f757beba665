/**
 * Experiments end to end on the real API server, with real serving apps (serving's `build()`
 * listening on loopback, real Redis, real ONNX models), the real router (serving's router mode,
 * with the router.json the controller wrote, its in-cluster upstream addresses mapped to the
 * local apps) and a real Prometheus scraping the apps. Synthetic users with hidden tastes ask
 * the router for recommendations and order when the top drink is of their taste; the operator
 * reads serving's counts from Prometheus and decides.
 *
 * Control plane only for the RecommenderModels: no kubelet runs their pods, so
 * `simulatePodsReady` marks them Ready (that only lets the control model's canary rollout move;
 * traffic in these tests never goes through those pods).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { RouterConfig } from '../../../../contracts/router-config.js';
import { startPrometheus, type PrometheusServer } from '../../../../hack/testenv/observability.js';
import { build, createModelStore } from '../../../../serving/src/app.js';
import { createServingRedis } from '../../../../serving/src/features/redis.js';
import { buildRouter } from '../../../../serving/src/router/app.js';
import { rng, seedFeatures, syntheticUser, writeModel } from '../../../../serving/test/fixtures.js';
import { eventually } from '../../../test/helpers.js';
import { startOperatorForTest, type OperatorTestEnv } from '../../../test/operator.js';
import { RESOURCES, resourcePath, type KubeClient, type KubeObject } from '../../runtime/kube.js';
import type { Experiment, RecommenderModel } from './types.js';

const ns = `exp-${Date.now().toString(36)}`;
const USERS = 1500;
const CATS = ['hot', 'iced', 'blended', 'energy'] as const;
let dir: string;
let admin: Redis;
let env: OperatorTestEnv;
let client: KubeClient;
let prom: PrometheusServer;
let slowRedis: Server;
const apps: Array<{ app: FastifyInstance; close: () => void }> = [];
/** Local address of each model's serving app. */
const upstreams = new Map<string, string>();
const modelFiles = new Map<string, { uri: string; sha256: string }>();

/** A TCP proxy to Redis that holds every answer `ms` (a slow network path to the store). */
async function delayingProxy(target: string, ms: number): Promise<Server> {
  const u = new URL(target);
  const srv = createServer((c) => {
    const up = createConnection(Number(u.port), u.hostname);
    c.on('data', (d) => up.write(d));
    up.on('data', (d) => setTimeout(() => c.write(d), ms));
    const end = () => (c.destroy(), up.destroy());
    c.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return srv;
}

async function serve(model: string, redisUrl: string): Promise<void> {
  const redis = createServingRedis(redisUrl);
  redis.on('error', () => undefined);
  const models = createModelStore();
  await models.load('drink-ranking', modelFiles.get(model)!.uri);
  const app = await build({
    redis,
    models,
    modelName: model,
    namespace: ns,
    refreshIntervalMs: 200,
    featureDeadlineMs: 2000,
    // The apps share this test process (and its event loop) with the operator and the router on
    // a busy 2-core box: load shedding would refuse on the test's own lag, not the app's.
    protection: { maxEventLoopDelayMs: 0, maxQueueMs: 0, latencyTargetMs: 0 },
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  // Ready once the feature version is loaded.
  await eventually(async () => (await fetch(`${url}/readyz`)).ok, 20_000, `${model} ready`);
  upstreams.set(model, url);
  apps.push({ app, close: () => (models.close(), redis.disconnect()) });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-exp-'));
  const redisUrl = inject('redisUrl');
  admin = new Redis(redisUrl);
  const r = rng(11);
  await seedFeatures(admin, {
    version: `exp-${ns}`,
    users: Array.from({ length: USERS }, (_, i) => {
      const f = syntheticUser(r, 150);
      // A third are new users: no history, no CUPED covariate (they are not seeded at all).
      return { id: `u${i}`, features: f };
    }).filter((_, i) => i % 3 !== 0),
  });
  for (const [name, seed] of [
    ['drinks', 1],
    ['drinks-v2', 2],
    ['drinks-slow', 3],
  ] as const) {
    const m = await writeModel({ dir, file: name, name: 'ranker', seed });
    modelFiles.set(name, { uri: m.uri, sha256: m.meta.sha256 });
  }
  slowRedis = await delayingProxy(redisUrl, 150);
  await serve('drinks', redisUrl);
  await serve('drinks-v2', redisUrl);
  await serve('drinks-slow', `redis://127.0.0.1:${(slowRedis.address() as AddressInfo).port}`);
  prom = await startPrometheus({
    scrapeTargets: [...upstreams.values()].map((u) => u.slice('http://'.length)),
  });
  env = await startOperatorForTest({
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    simulatePodReadiness: true,
    operator: { prometheusUrl: prom.url, experiments: { lookIntervalMs: 1000, guardrailWindow: '10s' } },
  });
  client = env.client;
  for (const name of modelFiles.keys()) {
    await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
      body: {
        apiVersion: 'crema.dev/v1alpha1',
        kind: 'RecommenderModel',
        metadata: { name, namespace: ns },
        spec: {
          model: { ...modelFiles.get(name)!, task: 'drink-ranking' },
          serving: { minReplicas: 1, maxReplicas: 2 },
          rollout: { steps: [{ weight: 50, pause: '1h', analysis: false }] },
        },
      },
    });
  }
}, 180_000);

afterAll(async () => {
  await env?.stop();
  await prom?.stop();
  for (const a of apps) {
    await a.app.close();
    a.close();
  }
  slowRedis?.close();
  admin?.disconnect();
  await rm(dir, { recursive: true, force: true });
});

const getExp = (name: string) =>
  client.request<Experiment>('GET', resourcePath(RESOURCES.experiment, ns, name));
const getModel = (name: string) =>
  client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, name));

async function createExperiment(
  name: string,
  variants: Array<[string, string, number]>,
  extra: Record<string, unknown>,
) {
  await client.request('POST', resourcePath(RESOURCES.experiment, ns), {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'Experiment',
      metadata: { name, namespace: ns },
      spec: {
        variants: variants.map(([n, modelRef, weight]) => ({ name: n, modelRef, weight })),
        assignment: { salt: `${name}-salt` },
        primaryMetric: 'conversion',
        minSamplesPerVariant: 200,
        maxDuration: '1h',
        ...extra,
      },
    },
  });
}

/** The real router with the controller's router.json, its in-cluster upstreams mapped to the local apps. */
async function routerFor(name: string): Promise<FastifyInstance> {
  const cm = await eventually(
    async () =>
      client
        .request<KubeObject & { data: Record<string, string> }>(
          'GET',
          resourcePath(RESOURCES.configMap, ns, `${name}-exp-router`),
        )
        .catch(() => undefined),
    20_000,
    `${name} router config`,
  );
  const written = JSON.parse(cm.data['router.json']!) as RouterConfig;
  const config: RouterConfig = {
    ...written,
    variants: written.variants.map((v) => {
      const model = /^http:\/\/(.+)-stable\./.exec(v.upstream!)![1]!;
      return { ...v, upstream: upstreams.get(model)! };
    }),
  };
  return buildRouter({ config });
}

/**
 * Users ask for recommendations and order with probability 0.45 when the top drink is of their
 * hidden taste, 0.1 otherwise. `taste(user)` is the hidden category.
 */
async function simulate(router: FastifyInstance, users: number, taste: (u: string) => string): Promise<void> {
  const catalogCat = (id: string) => CATS[Number(id.split('-')[1]) % 4];
  const r = rng(99);
  const now = new Date().toISOString();
  for (let i = 0; i < users; i++) {
    const userId = `u${i}`;
    const res = await router.inject({
      method: 'POST',
      url: '/v1/recommendations',
      payload: {
        userId,
        storeId: 'store-0',
        context: { time: '2026-07-15T12:00:00Z', channel: 'app' },
        limit: 3,
      },
    });
    if (res.statusCode !== 200) throw new Error(`recommendation ${res.statusCode}: ${res.body}`);
    const top = (res.json() as { items: Array<{ itemId: string }> }).items[0]!.itemId;
    const p = catalogCat(top) === taste(userId) ? 0.45 : 0.1;
    if (r() >= p) continue;
    const order = await router.inject({
      method: 'POST',
      url: '/v1/events',
      payload: {
        eventId: `${userId}-o1`,
        type: 'order',
        userId,
        storeId: 'store-0',
        at: now,
        itemIds: [top, 'addon-1'],
        value: 5.5,
      },
    });
    if (order.statusCode >= 300) throw new Error(`order ${order.statusCode}: ${order.body}`);
  }
}

describe('experiments on the real API server, with real serving, router and Prometheus (RecommenderModel pods: readiness simulated)', () => {
  it(
    "a variant with truly higher conversion wins and is auto-promoted through the control's canary",
    { timeout: 240_000 },
    async () => {
      // Hidden tastes: the v2 model ranks each user's taste first (what it learned); the control's
      // ranking ignores them. So v2 truly converts more; nobody tells the operator which is which.
      const v2 = upstreams.get('drinks-v2')!;
      const tastes = new Map<string, string>();
      for (let i = 0; i < USERS; i++) {
        const res = await fetch(`${v2}/v1/recommendations`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            userId: `u${i}`,
            storeId: 'store-0',
            context: { time: '2026-07-15T12:00:00Z', channel: 'app' },
            limit: 1,
          }),
        });
        if (!res.ok) throw new Error(`v2 recommendation ${res.status}: ${await res.text()}`);
        const id = ((await res.json()) as { items: Array<{ itemId: string }> }).items[0]!.itemId;
        tastes.set(`u${i}`, CATS[Number(id.split('-')[1]) % 4]!);
      }
      await createExperiment(
        'ab',
        [
          ['control', 'drinks', 50],
          ['v2', 'drinks-v2', 50],
        ],
        {
          decision: { alpha: 0.05, autoPromote: true },
          guardrails: { p99LatencyMs: 1000, errorRate: 0.05 },
        },
      );
      await eventually(async () => (await getExp('ab')).status?.phase === 'Running', 30_000, 'ab Running');
      const router = await routerFor('ab');
      await simulate(router, USERS, (u) => tastes.get(u)!);
      await router.close();

      const done = await eventually(
        async () => {
          const e = await getExp('ab');
          return e.status?.phase === 'Concluded' ? e : undefined;
        },
        60_000,
        'ab Concluded',
      );
      const s = done.status!;
      console.log(
        `[experiment] ab: ${JSON.stringify({ looks: s.looks, lift: s.lift, reason: s.reason, variants: s.variants })}`,
      );
      expect(s.winner).toBe('v2');
      expect(s.conditions?.find((c) => c.type === 'Concluded')).toMatchObject({
        status: 'True',
        reason: 'Winner',
      });
      const [c, v] = s.variants!;
      // Unique users: every user counted once, split about evenly, no user id anywhere.
      // The sequential test may decide before every user came: each exposed user counted once.
      expect(c!.exposures! + v!.exposures!).toBeLessThanOrEqual(USERS);
      expect(c!.exposures!).toBeGreaterThanOrEqual(200);
      expect(v!.exposures!).toBeGreaterThanOrEqual(200);
      expect(v!.conversionRate!).toBeGreaterThan(c!.conversionRate!);
      expect(v!.significant).toBe(true);
      expect(v!.pValue!).toBeLessThan(0.05);
      expect(s.srm?.mismatch).toBe(false);
      // autoPromote: the control model takes v2's model through its own canary rollout.
      expect(s.promotion).toMatchObject({ model: 'drinks', sha256: modelFiles.get('drinks-v2')!.sha256 });
      const control = await eventually(
        async () => {
          const m = await getModel('drinks');
          return m.status?.canary?.modelSha === modelFiles.get('drinks-v2')!.sha256 ? m : undefined;
        },
        60_000,
        'control model canarying the winner',
      );
      expect(control.spec.model.sha256).toBe(modelFiles.get('drinks-v2')!.sha256);
      // The split ended: everything to the control.
      const cm = await client.request<KubeObject & { data: Record<string, string> }>(
        'GET',
        resourcePath(RESOURCES.configMap, ns, 'ab-exp-router'),
      );
      expect((JSON.parse(cm.data['router.json']!) as RouterConfig).variants.map((x) => x.weight)).toEqual([
        100, 0,
      ]);
    },
  );

  it(
    'a variant breaking the p99 guardrail is stopped, and traffic returns to the control',
    { timeout: 180_000 },
    async () => {
      await createExperiment(
        'slow',
        [
          ['control', 'drinks-v2', 50],
          ['slow', 'drinks-slow', 50],
        ],
        {
          decision: { autoPromote: true },
          guardrails: { p99LatencyMs: 100 },
        },
      );
      await eventually(
        async () => (await getExp('slow')).status?.phase === 'Running',
        30_000,
        'slow Running',
      );
      const router = await routerFor('slow');
      await simulate(router, 150, () => 'hot');
      const stopped = await eventually(
        async () => {
          const e = await getExp('slow');
          return e.status?.phase === 'Stopped' ? e : undefined;
        },
        60_000,
        'slow Stopped',
      );
      await router.close();
      const s = stopped.status!;
      console.log(`[experiment] slow: ${s.reason}`);
      expect(s.conditions?.find((c) => c.type === 'Stopped')).toMatchObject({
        reason: 'GuardrailBreached',
        message: expect.stringMatching(/variant slow \(drinks-slow\) breached p99LatencyMs: \d+ > 100/),
      });
      expect(s.winner).toBeUndefined();
      expect(s.variants?.[1]?.guardrails?.[0]).toMatchObject({ name: 'p99LatencyMs', verdict: 'Breached' });
      expect(s.promotion).toBeUndefined();
    },
  );

  it(
    'counts each user once however often they come; a stop annotation is acted on once and removed',
    { timeout: 120_000 },
    async () => {
      await createExperiment(
        'manual',
        [
          ['control', 'drinks-v2', 50],
          ['other', 'drinks-slow', 50],
        ],
        { minSamplesPerVariant: 100000 },
      );
      await eventually(
        async () => (await getExp('manual')).status?.phase === 'Running',
        30_000,
        'manual Running',
      );
      const router = await routerFor('manual');
      for (let round = 0; round < 3; round++) await simulate(router, 20, () => 'none');
      await router.close();
      await eventually(
        async () =>
          (await getExp('manual')).status?.variants?.reduce((n, v) => n + (v.exposures ?? 0), 0) === 20,
        30_000,
        '20 users exposed (60 requests)',
      );
      // One look per interval (1 s here), however often its own status writes or the models wake
      // the reconcile.
      const running = await getExp('manual');
      const elapsedMs = Date.now() - Date.parse(running.status!.startedAt!);
      expect(running.status!.looks!).toBeGreaterThanOrEqual(1);
      expect(running.status!.looks!).toBeLessThanOrEqual(Math.ceil(elapsedMs / 1000) + 2);
      await client.request('PATCH', resourcePath(RESOURCES.experiment, ns, 'manual'), {
        contentType: 'application/merge-patch+json',
        body: { metadata: { annotations: { 'crema.dev/stop': 'true' } } },
      });
      const stopped = await eventually(
        async () => {
          const e = await getExp('manual');
          return e.status?.phase === 'Stopped' &&
            !e.metadata?.annotations?.['crema.dev/stop'] &&
            !e.status.pendingCommand
            ? e
            : undefined;
        },
        20_000,
        'manual Stopped, annotation consumed',
      );
      expect(stopped.status?.conditions?.find((c) => c.type === 'Stopped')).toMatchObject({
        reason: 'ManualStop',
      });
      const cm = await client.request<KubeObject & { data: Record<string, string> }>(
        'GET',
        resourcePath(RESOURCES.configMap, ns, 'manual-exp-router'),
      );
      expect((JSON.parse(cm.data['router.json']!) as RouterConfig).variants.map((x) => x.weight)).toEqual([
        100, 0,
      ]);
    },
  );

  it('a variant naming a missing model splits no traffic and says which', async () => {
    await createExperiment(
      'ghost',
      [
        ['control', 'drinks', 50],
        ['v', 'nope', 50],
      ],
      {},
    );
    const ghost = await eventually(
      async () => {
        const e = await getExp('ghost');
        return e.status?.conditions?.find((c) => c.type === 'Valid') ? e : undefined;
      },
      20_000,
      'ghost status',
    );
    expect(ghost.status?.phase).toBe('Pending');
    expect(ghost.status?.conditions?.find((c) => c.type === 'Valid')).toMatchObject({
      status: 'False',
      reason: 'ModelNotFound',
      message: expect.stringMatching(/RecommenderModel nope not found/),
    });
    const cm = await client.request<KubeObject & { data: Record<string, string> }>(
      'GET',
      resourcePath(RESOURCES.configMap, ns, 'ghost-exp-router'),
    );
    expect((JSON.parse(cm.data['router.json']!) as RouterConfig).variants.map((x) => x.weight)).toEqual([
      100, 0,
    ]);
  });
});
