/**
 * The serving app against a real redis-server (its own, so it can be stopped) and real ONNX
 * models: model answers, fallbacks (Redis down, deadline, model missing or corrupt), hot swap
 * under load, events, offers, pickup estimates and erasure.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DRIFT_CONTEXT_SCHEME } from '../../contracts/drift-binning.js';
import { encodeUserFeatures, KEYS, USER_FEATURES } from '../../contracts/features.js';
import { startRedis } from '../../hack/testenv/environment.js';
import { build, createModelStore, type BuildOptions } from './app.js';
import { RegionMenuFile } from './menu/region-menu.js';
import type { RegionMenuConfig } from '../../contracts/region-menu.js';
import { writeFile } from 'node:fs/promises';
import { createServingRedis } from './features/redis.js';
import type { ModelStore } from './model/store.js';
import {
  buildCatalog,
  buildPopularity,
  rng,
  seedFeatures,
  syntheticUser,
  writeModel,
} from '../test/fixtures.js';

type RedisServer = Awaited<ReturnType<typeof startRedis>>['redis'];

let dir: string;
let server: RedisServer;
let admin: Redis;
let modelA: { uri: string; meta: { sha256: string } };
let modelB: { uri: string; meta: { sha256: string } };
const catalog = buildCatalog(150, 40);
const TOKEN = 'test-token';
/** The identity labels of a process started without CREMA_MODEL_NAME and POD_NAMESPACE. */
const LOCAL = 'model="local",namespace="local"';

const userVec = (seed: number, patch: Partial<Record<(typeof USER_FEATURES)[number], number>> = {}) => {
  const v = syntheticUser(rng(seed), 150);
  for (const [k, x] of Object.entries(patch)) v[USER_FEATURES.indexOf(k as 'segment')] = x;
  return v;
};

async function seed(): Promise<void> {
  await seedFeatures(admin, {
    version: 'v1',
    catalog,
    users: [
      {
        id: 'alice',
        features: userVec(1, { cat_iced: 0.9, cat_hot: 0.05, cat_blended: 0.03, cat_energy: 0.02 }),
      },
      {
        id: 'bob',
        features: userVec(2, { cat_hot: 0.9, cat_iced: 0.05, cat_blended: 0.03, cat_energy: 0.02 }),
      },
      { id: 'lapsed', features: userVec(3, { recency_days: 60, frequency_30d: 0, recent_1: 12 }) },
    ],
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-serving-'));
  server = (await startRedis(dir, () => undefined)).redis;
  // A plain client (with an offline queue) for seeding and checking, unlike the app's.
  admin = new Redis(server.url);
  admin.on('error', () => undefined);
  await seed();
  modelA = await writeModel({ dir, file: 'ranker-a', name: 'ranker', seed: 1 });
  modelB = await writeModel({ dir, file: 'ranker-b', name: 'ranker', seed: 2 });
});

afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

const open: { app: FastifyInstance; redis: Redis; models: ModelStore }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) {
    await o.app.close();
    o.models.close();
    o.redis.disconnect();
  }
});

async function serve(opts: { model?: string | null } & Partial<BuildOptions> = {}) {
  const redis = createServingRedis(server.url);
  redis.on('error', () => undefined);
  const models = createModelStore();
  if (opts.model !== null) await models.load('drink-ranking', opts.model ?? modelA.uri);
  // A generous deadline: these tests assert behaviour, and the shared 2-core box can stall for
  // tens of ms; the deadline test sets its own.
  const app = await build({
    redis,
    models,
    adminToken: TOKEN,
    refreshIntervalMs: 100,
    featureDeadlineMs: 1000,
    ...opts,
  });
  await app.ready();
  open.push({ app, redis, models });
  return { app, models };
}

const recBody = (userId: string, extra: Record<string, unknown> = {}) => ({
  userId,
  storeId: 'store-1',
  context: {
    time: '2026-07-15T12:00:00Z',
    weather: { condition: 'clear', temperatureC: 28 },
    channel: 'app',
  },
  limit: 20,
  ...extra,
});

const recommend = (app: FastifyInstance, userId: string, extra: Record<string, unknown> = {}) =>
  app.inject({ method: 'POST', url: '/v1/recommendations', payload: recBody(userId, extra) });

/** The store's drinks at a local hour by popularity, computed from the fixture independently of serving. */
function expectedPopular(
  storeIndex: number,
  hour: number,
  exclude: string[],
  inSeason: (i: number) => boolean,
  k: number,
) {
  const pop = buildPopularity(catalog, 100 + storeIndex);
  const n = catalog.items.length;
  return catalog.items
    .filter((it, i) => it.kind === 'drink' && !exclude.includes(it.id) && inSeason(i))
    .sort((a, b) => pop[hour * n + b.index]! - pop[hour * n + a.index]!)
    .slice(0, k)
    .map((it) => it.id);
}

describe('recommendations', () => {
  it('ranks the available, in-season drinks with the model, with reasons and add-ons', async () => {
    const { app } = await serve({ variant: 'canary' });
    const res = await recommend(app, 'alice');
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({
      fallback: false,
      modelRevision: modelA.meta.sha256,
      variant: 'canary',
      personalization: 'user',
    });
    expect(body.items).toHaveLength(20);
    const scores = body.items.map((x: { score: number }) => x.score);
    expect([...scores].sort((a, b) => b - a)).toEqual(scores);
    for (const it of body.items) {
      // store-1 does not sell drink-0/drink-1; seasonal drinks (index % 10 == 9) are Nov–Jan only.
      expect(['drink-0', 'drink-1']).not.toContain(it.itemId);
      expect(Number(it.itemId.split('-')[1]) % 10).not.toBe(9);
      expect(it.itemId).toMatch(/^drink-/);
      expect(it.reason.length).toBeGreaterThan(5);
      expect(it.addons.length).toBe(2);
      for (const a of it.addons) expect(a.itemId).toMatch(/^addon-/);
    }
    const winter = (
      await recommend(app, 'alice', { context: { time: '2026-12-15T12:00:00Z' }, limit: 20 })
    ).json();
    expect(winter.items.some((x: { itemId: string }) => Number(x.itemId.split('-')[1]) % 10 === 9)).toBe(
      true,
    );
  });

  it('personalizes: users with opposite tastes get different rankings; unknown users get segment features', async () => {
    const { app } = await serve();
    const a = (await recommend(app, 'alice', { limit: 5 })).json();
    const b = (await recommend(app, 'bob', { limit: 5 })).json();
    expect(a.items.map((x: { itemId: string }) => x.itemId)).not.toEqual(
      b.items.map((x: { itemId: string }) => x.itemId),
    );
    const cold = (await recommend(app, 'never-seen', { limit: 5 })).json();
    expect(cold).toMatchObject({ fallback: false, personalization: 'segment' });
    expect((await app.inject({ url: '/metrics' })).body).toContain(
      `crema_cold_start_requests_total{${LOCAL},revision="${modelA.meta.sha256}"} 1`,
    );
  });

  it('with an add-on model, each drink gets the add-ons that pair best with it', async () => {
    const { app, models } = await serve();
    // score = relu(price - 10·iced) + relu(10·iced - price): hot drinks pair with the dearest
    // add-ons, iced drinks with the cheapest.
    const addonModel = await writeModel({
      dir,
      file: 'addons',
      task: 'addon-attach',
      name: 'addons',
      features: ['drink_is_iced', 'addon_price'],
      sigmoid: false,
      weights: { w0: [-10, 10, 1, -1], b0: [0, 0], w1: [1, 1], b1: [0] },
    });
    await models.load('addon-attach', addonModel.uri);
    const body = (await recommend(app, 'alice')).json();
    const prices = (c: string) =>
      body.items
        .filter((x: { category: string }) => x.category === c)
        .flatMap((x: { addons: { price: number }[] }) => x.addons.map((a) => a.price));
    expect(prices('hot').length).toBeGreaterThan(0);
    expect(prices('iced').length).toBeGreaterThan(0);
    expect(new Set(prices('hot'))).toEqual(new Set([1.25]));
    expect(new Set(prices('iced'))).toEqual(new Set([0.5]));
  });

  it('unknown store is a 404 naming storeId', async () => {
    const { app } = await serve();
    const res = await recommend(app, 'alice', { storeId: 'store-404' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ code: 'UNKNOWN_STORE', field: 'storeId' });
  });

  it('without a model answers by store-and-hour popularity, flagged and counted', async () => {
    const { app } = await serve({ model: null });
    const res = await recommend(app, 'alice', { limit: 5 });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body).toMatchObject({ fallback: true, fallbackReason: 'model_unavailable', modelRevision: null });
    // store-1 is in Los Angeles: 12:00Z in July is 05:00 local.
    const want = expectedPopular(1, 5, ['drink-0', 'drink-1'], (i) => i % 10 !== 9, 5);
    expect(body.items.map((x: { itemId: string }) => x.itemId)).toEqual(want);
    // No model loaded: revision "none".
    expect((await app.inject({ url: '/metrics' })).body).toContain(
      `crema_fallbacks_total{${LOCAL},revision="none",route="/v1/recommendations",reason="model_unavailable"} 1`,
    );
  });

  it('past the feature deadline answers by popularity with reason deadline_exceeded', async () => {
    const { app } = await serve({ featureDeadlineMs: 20 });
    const pauser = new Redis(server.url);
    await pauser.client('PAUSE', 300, 'ALL');
    try {
      const res = await recommend(app, 'alice', { limit: 3 });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ fallback: true, fallbackReason: 'deadline_exceeded' });
    } finally {
      await pauser.client('UNPAUSE').catch(() => undefined);
      pauser.disconnect();
    }
  });

  it('Redis stopped mid-test → popularity fallback (never a 5xx); started again → the model answers', async () => {
    const { app } = await serve();
    expect((await recommend(app, 'alice')).json().fallback).toBe(false);
    await server.stop();
    try {
      const res = await recommend(app, 'alice', { limit: 5 });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ fallback: true, fallbackReason: 'redis_unavailable' });
      expect(res.json().items.map((x: { itemId: string }) => x.itemId)).toEqual(
        expectedPopular(1, 5, ['drink-0', 'drink-1'], (i) => i % 10 !== 9, 5),
      );
      const ready = await app.inject({ url: '/readyz' });
      expect(ready.statusCode).toBe(200);
      expect(ready.json().checks).toEqual({ model: true, redis: false, fallback: true });
      const pickup = await app.inject({
        method: 'POST',
        url: '/v1/pickup-estimate',
        payload: { storeId: 'store-0', items: ['drink-3'] },
      });
      expect(pickup.statusCode).toBe(200);
      expect(pickup.json()).toMatchObject({
        fallback: true,
        fallbackReason: 'redis_unavailable',
        queue: null,
      });
    } finally {
      await server.start();
      await seed();
    }
    await expect
      .poll(async () => (await recommend(app, 'alice')).json().fallback, { timeout: 10_000, interval: 100 })
      .toBe(false);
    expect((await app.inject({ url: '/metrics' })).body).toMatch(
      /crema_fallbacks_total\{model="local",namespace="local",revision="[0-9a-f]{64}",route="\/v1\/recommendations",reason="redis_unavailable"\} [1-9]/,
    );
  });
});

describe('saved snapshot', () => {
  it('a process started while Redis is down answers from the snapshot an earlier one saved', async () => {
    const snapshotPath = join(dir, 'snapshot.json');
    await serve({ snapshotPath });
    // A second process whose Redis is unreachable from the start.
    const down = createServingRedis('redis://127.0.0.1:1');
    down.on('error', () => undefined);
    const models = createModelStore();
    await models.load('drink-ranking', modelA.uri);
    const app = await build({ redis: down, models, snapshotPath, featureDeadlineMs: 1000 });
    await app.ready();
    open.push({ app, redis: down, models });
    expect((await app.inject({ url: '/readyz' })).json()).toEqual({
      ready: true,
      checks: { model: true, redis: false, fallback: true },
      draining: false,
    });
    const res = await recommend(app, 'alice', { limit: 5 });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      fallback: true,
      fallbackReason: 'redis_unavailable',
      featureVersion: 'v1',
    });
    expect(res.json().items.map((x: { itemId: string }) => x.itemId)).toEqual(
      expectedPopular(1, 5, ['drink-0', 'drink-1'], (i) => i % 10 !== 9, 5),
    );
  });
});

describe('models', () => {
  it('refuses a corrupt model (sha256 mismatch) and keeps serving the current one', async () => {
    const bad = await writeModel({ dir, file: 'ranker-bad', seed: 3, corrupt: true });
    const { app } = await serve();
    const res = await app.inject({
      method: 'PUT',
      url: '/v1/admin/models/drink-ranking',
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: { uri: bad.uri },
    });
    expect(res.statusCode).toBe(422);
    expect(res.json()).toMatchObject({ code: 'MODEL_LOAD_FAILED', field: 'uri' });
    expect(res.json().message).toMatch(/sha256/);
    expect((await recommend(app, 'alice')).json()).toMatchObject({
      fallback: false,
      modelRevision: modelA.meta.sha256,
    });
  });

  it('refuses a model naming features serving cannot compute', async () => {
    const odd = await writeModel({ dir, file: 'ranker-odd', features: ['price', 'moon_phase'] });
    const { models } = await serve();
    await expect(models.load('drink-ranking', odd.uri)).rejects.toThrow(/moon_phase/);
  });

  it('hot-swaps under concurrent load without one failed or fallback answer', async () => {
    const { app, models } = await serve();
    const old = models.peek('drink-ranking')!;
    const revisions = new Map<string, number>();
    const failures: string[] = [];
    let stop = false;
    const worker = async (w: number) => {
      for (let i = 0; !stop || i < 5; i++) {
        const res = await recommend(app, i % 2 ? 'alice' : `user-${w}-${i}`, { limit: 5 });
        const b = res.json();
        if (res.statusCode !== 200 || b.fallback)
          failures.push(`${res.statusCode} ${b.fallbackReason ?? b.code}`);
        else revisions.set(b.modelRevision, (revisions.get(b.modelRevision) ?? 0) + 1);
      }
    };
    const load = Array.from({ length: 16 }, (_, w) => worker(w));
    await new Promise((r) => setTimeout(r, 150));
    const swap = await app.inject({
      method: 'PUT',
      url: '/v1/admin/models/drink-ranking',
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: { uri: modelB.uri },
    });
    expect(swap.statusCode).toBe(200);
    expect(swap.json().revision).toBe(modelB.meta.sha256);
    await new Promise((r) => setTimeout(r, 150));
    stop = true;
    await Promise.all(load);
    expect(failures).toEqual([]);
    expect(revisions.get(modelA.meta.sha256)).toBeGreaterThan(0);
    expect(revisions.get(modelB.meta.sha256)).toBeGreaterThan(0);
    expect(old.inFlight).toBe(0);
    expect((await recommend(app, 'alice')).json().modelRevision).toBe(modelB.meta.sha256);
    const metrics = (await app.inject({ url: '/metrics' })).body;
    expect(metrics).toContain(
      `crema_model_info{${LOCAL},revision="${modelB.meta.sha256}",task="drink-ranking",metadata_name="ranker"} 1`,
    );
    expect(metrics).not.toMatch(new RegExp(`crema_model_info\\{[^}]*revision="${modelA.meta.sha256}"`));
    // Each revision's request count is exactly the answers it gave, including requests that were
    // in flight during the swap (labelled with the model they used, not the one current at the end).
    const served = (rev: string) =>
      Number(
        new RegExp(
          `crema_http_request_duration_seconds_count\\{${LOCAL},revision="${rev}",variant="stable",route="/v1/recommendations",method="POST",status_code="200"\\} (\\d+)`,
        ).exec(metrics)?.[1] ?? 0,
      );
    expect(served(modelA.meta.sha256)).toBe(revisions.get(modelA.meta.sha256));
    expect(served(modelB.meta.sha256)).toBe(revisions.get(modelB.meta.sha256)! + 1);
  });

  it('labels a request with the revision that answered it, also when a swap lands while it runs', async () => {
    const { app, models } = await serve({ featureDeadlineMs: 10_000 });
    const old = models.peek('drink-ranking')!;
    // The request takes model A, then waits for its features while Redis is paused (Redis 7
    // queues even CLIENT UNPAUSE during PAUSE ALL, so the pause simply runs out).
    const pauser = new Redis(server.url);
    await pauser.client('PAUSE', 3000, 'ALL');
    pauser.disconnect();
    let answeredAt = 0;
    const pending = recommend(app, 'alice', { limit: 3 }).then((res) => {
      answeredAt = performance.now();
      return res;
    });
    await expect.poll(() => old.inFlight, { timeout: 2000, interval: 5 }).toBe(1);
    const swap = await app.inject({
      method: 'PUT',
      url: '/v1/admin/models/drink-ranking',
      headers: { authorization: `Bearer ${TOKEN}` },
      payload: { uri: modelB.uri },
    });
    expect(swap.json().revision).toBe(modelB.meta.sha256);
    expect(answeredAt, 'the swap landed while the request ran').toBe(0);
    const answer = await pending;
    expect(answer.json()).toMatchObject({ fallback: false, modelRevision: modelA.meta.sha256 });
    const metrics = (await app.inject({ url: '/metrics' })).body;
    const recs = metrics
      .split('\n')
      .filter(
        (l) =>
          l.startsWith('crema_http_request_duration_seconds_count{') && l.includes('/v1/recommendations'),
      );
    expect(recs).toEqual([
      `crema_http_request_duration_seconds_count{${LOCAL},revision="${modelA.meta.sha256}",variant="stable",route="/v1/recommendations",method="POST",status_code="200"} 1`,
    ]);
    // Requests after the swap are model B's.
    await recommend(app, 'alice', { limit: 3 });
    expect((await app.inject({ url: '/metrics' })).body).toContain(
      `crema_http_request_duration_seconds_count{${LOCAL},revision="${modelB.meta.sha256}",variant="stable",route="/v1/recommendations",method="POST",status_code="200"} 1`,
    );
  });

  it('publishes no drift PSI until the window holds enough values, only their count', async () => {
    // A canary's first requests read a PSI of 0.2-0.3 by chance alone and tripped the alert.
    const { app } = await serve({ modelName: 'drinks', namespace: 'shop' });
    for (let i = 0; i < 30; i++) await recommend(app, `user-${i}`, { limit: 3 });
    const metrics = (await app.inject({ url: '/metrics' })).body;
    expect(metrics).not.toMatch(/crema_feature_drift_psi\{/);
    expect(metrics).toContain(
      `crema_feature_drift_observations{model="drinks",namespace="shop",revision="${modelA.meta.sha256}",feature="recency_days"} 30`,
    );
  });

  it('publishes drift PSI per monitored feature, without user ids', async () => {
    const { app } = await serve({ driftMinObservations: 20, modelName: 'drinks', namespace: 'shop' });
    for (let i = 0; i < 30; i++) await recommend(app, i % 2 ? 'alice' : 'bob', { limit: 3 });
    const metrics = (await app.inject({ url: '/metrics' })).body;
    const line = new RegExp(
      `crema_feature_drift_psi\\{model="drinks",namespace="shop",revision="${modelA.meta.sha256}",feature="recency_days"\\} ([0-9.e+-]+)`,
    );
    const m = line.exec(metrics);
    expect(m).not.toBeNull();
    // Two users only: the window is far from the uniform baseline.
    expect(Number(m![1])).toBeGreaterThan(0.5);
    expect(metrics).toContain(
      `crema_score_drift_psi{model="drinks",namespace="shop",revision="${modelA.meta.sha256}"}`,
    );
    expect(metrics).not.toMatch(/alice|bob/);
  });

  it("compares each request with training's requests at its store's local hour", async () => {
    // Training: recent customers at New York's 07:00 rush, lapsing ones at 15:00; over the day
    // that is half and half, and a morning window compared with the day read PSI ~4.
    const model = await writeModel({
      dir,
      file: 'ranker-contexts',
      name: 'ranker',
      seed: 1,
      baseline: {
        features: { recency_days: { edges: [0, 7, 14, 30, 60, 90], probs: [0.5, 0, 0, 0.5, 0] } },
        score: { edges: [0, 1], probs: [1] },
        contexts: {
          scheme: DRIFT_CONTEXT_SCHEME,
          contexts: [
            { timezone: 'America/New_York', hour: 7, weekend: 0 },
            { timezone: 'America/New_York', hour: 15, weekend: 0 },
          ],
          requests: [100, 100],
          counts: {
            recency_days: [
              [100, 0, 0, 0, 0],
              [0, 0, 0, 100, 0],
            ],
          },
        },
      },
    });
    for (let i = 0; i < 5; i++)
      await admin.set(
        KEYS.user('v1', `regular-${i}`),
        encodeUserFeatures(userVec(10 + i, { recency_days: 2 })),
      );
    // No load shedding: every request must reach the monitor, also on a busy test machine.
    const { app } = await serve({
      model: model.uri,
      driftMinObservations: 20,
      protection: { maxEventLoopDelayMs: 0 },
    });
    const psi = async () => {
      const body = (await app.inject({ url: '/metrics' })).body;
      return Number(/crema_feature_drift_psi\{[^}]*feature="recency_days"\} (\S+)/.exec(body)?.[1]);
    };
    // store-0 is in New York: 12:00 UTC on Tuesday 2026-11-24 is 07:00 there.
    const at = (time: string, i: number) =>
      recommend(app, `regular-${i % 5}`, { storeId: 'store-0', context: { time }, limit: 3 });
    for (let i = 0; i < 30; i++) expect((await at('2026-11-24T12:00:00Z', i)).statusCode).toBe(200);
    expect(await psi()).toBeLessThan(0.05);
    // The same recent customers at 15:00, where training had lapsing ones: drift.
    for (let i = 0; i < 60; i++) await at('2026-11-24T20:00:00Z', i);
    expect(await psi()).toBeGreaterThan(0.2);
  });
});

describe('pickup estimate', () => {
  it('grows with the live queue, gives a band and the time to order', async () => {
    const { app } = await serve();
    const ask = () =>
      app.inject({
        method: 'POST',
        url: '/v1/pickup-estimate',
        payload: {
          storeId: 'store-0',
          items: ['drink-3', 'drink-4'],
          placedAt: '2026-11-24T13:00:00Z',
          wantedAt: '2026-11-24T13:45:00Z',
        },
      });
    await admin.hset(KEYS.storeQueue('store-0'), { queue: 0, prep_load: 0 });
    const idle = (await ask()).json();
    await admin.hset(KEYS.storeQueue('store-0'), { queue: 12, prep_load: 36 });
    const busy = (await ask()).json();
    expect(idle).toMatchObject({ fallback: false, source: 'heuristic', queue: 0, onTime: true });
    expect(busy.queue).toBe(12);
    expect(busy.minutes).toBeGreaterThan(idle.minutes + 5);
    expect(Date.parse(busy.readyEarliest)).toBeLessThan(Date.parse(busy.readyAt));
    expect(Date.parse(busy.readyLatest)).toBeGreaterThan(Date.parse(busy.readyAt));
    // Ordering at bestOrderAt leaves the late edge of the band before the wanted time.
    expect(Date.parse(busy.bestOrderAt)).toBeLessThan(Date.parse(idle.bestOrderAt));
    expect(
      Date.parse(busy.bestOrderAt) + (Date.parse(busy.readyLatest) - Date.parse(busy.placedAt)),
    ).toBeLessThanOrEqual(Date.parse('2026-11-24T13:45:00Z') + 1000);
  });

  it('uses the pickup model when one is loaded, and rejects unknown items naming them', async () => {
    const { app, models } = await serve();
    const pm = await writeModel({
      dir,
      file: 'pickup',
      task: 'pickup-time',
      name: 'pickup',
      features: ['queue', 'prep_load', 'order_complexity', 'capacity_per_hour'],
      zeroWeights: true,
      outputBias: 7,
      sigmoid: false,
    });
    await models.load('pickup-time', pm.uri);
    const res = await app.inject({
      method: 'POST',
      url: '/v1/pickup-estimate',
      payload: { storeId: 'store-0', items: ['drink-3'] },
    });
    expect(res.json()).toMatchObject({
      source: 'model',
      minutes: 7,
      modelRevision: pm.meta.sha256,
      fallback: false,
    });
    const bad = await app.inject({
      method: 'POST',
      url: '/v1/pickup-estimate',
      payload: { storeId: 'store-0', items: ['drink-3', 'latte-of-doom'] },
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ code: 'UNKNOWN_ITEM', field: 'items[1]' });
    const noStore = await app.inject({
      method: 'POST',
      url: '/v1/pickup-estimate',
      payload: { storeId: 'x', items: ['drink-3'] },
    });
    expect(noStore.statusCode).toBe(404);
  });
});

describe('regional menus and capacity (ADR 0014)', () => {
  const ids = (res: { json(): { items: { itemId: string }[] } }) => res.json().items.map((x) => x.itemId);
  async function withMenu(config: RegionMenuConfig | string | null, extra: Partial<BuildOptions> = {}) {
    const path = join(dir, `regions-${Math.random().toString(36).slice(2)}.json`);
    if (config !== null) await writeFile(path, typeof config === 'string' ? config : JSON.stringify(config));
    const regionMenu = new RegionMenuFile({ path, log: { warn: () => {}, info: () => {} } });
    await regionMenu.refresh();
    return { ...(await serve({ regionMenu, ...extra })), regionMenu };
  }
  const menu = (regions: RegionMenuConfig['regions']): RegionMenuConfig => ({
    version: 1,
    model: 'drinks',
    regions,
  });

  it("an unavailable drink is never recommended in the region's stores, and still is in other stores", async () => {
    const { app: plain } = await serve();
    const at1 = ids(await recommend(plain, 'alice', { storeId: 'store-1' }));
    const at2 = ids(await recommend(plain, 'alice', { storeId: 'store-2' }));
    // A drink both stores recommend to alice without regional menus.
    const x = at1.find((id) => at2.includes(id))!;
    expect(x).toBeDefined();
    const { app } = await withMenu(
      menu([{ name: 'north', stores: ['store-1'], seasonal: [], unavailable: [x] }]),
    );
    for (const user of ['alice', 'bob', 'nobody-yet']) {
      const north = await recommend(app, user, { storeId: 'store-1' });
      expect(north.json().fallback).toBe(false);
      expect(ids(north)).not.toContain(x);
    }
    expect(ids(await recommend(app, 'alice', { storeId: 'store-2' }))).toContain(x);
  });

  it("a region's seasonal drink is recommended only in that region's stores", async () => {
    const winter = { context: { time: '2026-12-15T12:00:00Z' } };
    const { app: plain } = await serve();
    const at1 = ids(await recommend(plain, 'alice', { storeId: 'store-1', ...winter }));
    const at2 = ids(await recommend(plain, 'alice', { storeId: 'store-2', ...winter }));
    // A winter drink (every 10th: Nov-Jan) both stores recommend without regional menus.
    const s = at1.find((id) => Number(id.split('-')[1]) % 10 === 9 && at2.includes(id))!;
    expect(s).toBeDefined();
    const { app } = await withMenu(
      menu([{ name: 'north', stores: ['store-1'], seasonal: [s], unavailable: [] }]),
    );
    expect(ids(await recommend(app, 'alice', { storeId: 'store-1', ...winter }))).toContain(s);
    expect(ids(await recommend(app, 'alice', { storeId: 'store-2', ...winter }))).not.toContain(s);
  });

  it('a missing or bad menu file refuses nothing: the full menu, and the metric says which', async () => {
    const { app: plain } = await serve();
    const full = ids(await recommend(plain, 'alice', { storeId: 'store-1' }));
    for (const [file, state] of [
      [null, 'missing'],
      ['{"version": 1, "regions": {}}', 'invalid'],
    ] as const) {
      const { app } = await withMenu(file);
      const res = await recommend(app, 'alice', { storeId: 'store-1' });
      expect(res.statusCode).toBe(200);
      expect(ids(res)).toEqual(full);
      const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
      expect(metrics).toContain(`crema_region_menu_state{${LOCAL},state="${state}"} 1`);
      expect(metrics).toContain(`crema_region_menu_state{${LOCAL},state="ok"} 0`);
    }
  });

  it("a store at its region's capacity gets a later pickup time, bounded by what the store can make", async () => {
    const { app, models } = await withMenu(
      menu([
        { name: 'south', stores: ['store-0'], seasonal: [], unavailable: [], drinksPerHourPerStore: 30 },
      ]),
    );
    // A pickup model that always promises 7 minutes, whatever the queue.
    const pm = await writeModel({
      dir,
      file: 'pickup-7',
      task: 'pickup-time',
      name: 'pickup',
      features: ['queue', 'prep_load', 'order_complexity', 'capacity_per_hour'],
      zeroWeights: true,
      outputBias: 7,
      sigmoid: false,
    });
    await models.load('pickup-time', pm.uri);
    const ask = async (storeId: string) =>
      (
        await app.inject({
          method: 'POST',
          url: '/v1/pickup-estimate',
          payload: { storeId, items: ['drink-3'], placedAt: '2026-11-24T13:00:00Z' },
        })
      ).json();
    await admin.hset(KEYS.storeQueue('store-0'), { queue: 0, prep_load: 0 });
    const idle = await ask('store-0');
    expect(idle).toMatchObject({ source: 'model', minutes: 7 });
    expect(idle.capacityLimited).toBeUndefined();

    // 12 drinks waiting (36 units of prep) plus this one (drink-3: 4) = 16 average drinks; at
    // 30 an hour that is 32 minutes, plus 1 to hand over.
    await admin.hset(KEYS.storeQueue('store-0'), { queue: 12, prep_load: 36 });
    await admin.hset(KEYS.storeQueue('store-1'), { queue: 12, prep_load: 36 });
    const busy = await ask('store-0');
    expect(busy).toMatchObject({ source: 'model', minutes: 33, capacityLimited: true, fallback: false });
    expect(busy.readyAt).toBe('2026-11-24T13:33:00.000Z');
    // The early edge of the band is not an impossible time either; the late edge stays finite.
    expect(busy.readyEarliest).toBe(busy.readyAt);
    expect(Date.parse(busy.readyLatest)).toBeGreaterThan(Date.parse(busy.readyAt));
    expect(Date.parse(busy.readyLatest) - Date.parse(busy.readyAt)).toBeLessThan(60 * 60_000);
    // A store outside the region keeps the model's answer.
    expect(await ask('store-1')).toMatchObject({ source: 'model', minutes: 7 });
    await admin.hset(KEYS.storeQueue('store-0'), { queue: 0, prep_load: 0 });
    await admin.hset(KEYS.storeQueue('store-1'), { queue: 0, prep_load: 0 });
  });
});

describe('events, offers and erasure', () => {
  const event = (id: string, type: string, userId: string, extra: Record<string, unknown> = {}) => ({
    eventId: id,
    type,
    userId,
    storeId: 'store-0',
    // Events are accepted up to the dedup window (2 days) old.
    at: new Date().toISOString(),
    ...extra,
  });

  it('appends events once per id, fast, and counts exposures and conversions per variant', async () => {
    const { app } = await serve();
    const before = await admin.xlen(KEYS.events);
    const e = event('ev-1', 'impression', 'alice', { variant: 'canary', itemIds: ['drink-3', 'drink-4'] });
    const t0 = performance.now();
    const first = await app.inject({ method: 'POST', url: '/v1/events', payload: e });
    expect(performance.now() - t0).toBeLessThan(100);
    const again = await app.inject({ method: 'POST', url: '/v1/events', payload: e });
    expect(first.statusCode).toBe(202);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ duplicate: true, streamId: first.json().streamId });
    await app.inject({
      method: 'POST',
      url: '/v1/events',
      payload: event('ev-2', 'order', 'alice', { variant: 'canary', value: 6.5 }),
    });
    expect(await admin.xlen(KEYS.events)).toBe(before + 2);
    const [[, fields]] = (await admin.xrange(KEYS.events, first.json().streamId, first.json().streamId)) as [
      [string, string[]],
    ];
    expect(fields).toEqual(
      expect.arrayContaining(['userId', 'alice', 'itemIds', 'drink-3,drink-4', 'type', 'impression']),
    );
    const metrics = (await app.inject({ url: '/metrics' })).body;
    const id = `${LOCAL},revision="${modelA.meta.sha256}",variant="canary"`;
    expect(metrics).toContain(`crema_experiment_exposures_total{${id}} 1`);
    expect(metrics).toContain(`crema_experiment_conversions_total{${id}} 1`);
    expect(metrics).toContain(`crema_experiment_conversion_value_dollars_total{${id}} 6.5`);
  });

  it('offers a win-back on a favorite to a lapsing user, redemptions by points, a welcome to newcomers', async () => {
    const { app } = await serve();
    await admin.hset(KEYS.onlineUser('lapsed'), 'points', '400');
    const lapsed = (await app.inject({ url: '/v1/users/lapsed/offers?storeId=store-0' })).json();
    expect(lapsed).toMatchObject({ riskBand: 'high', points: 400, fallback: false });
    expect(lapsed.offers[0]).toMatchObject({ kind: 'win_back', itemId: 'drink-12' });
    expect(lapsed.offers.filter((o: { kind: string }) => o.kind === 'redeem').length).toBeGreaterThan(0);
    const newcomer = (await app.inject({ url: '/v1/users/nobody/offers' })).json();
    expect(newcomer).toMatchObject({ riskBand: 'unknown', churnRisk: null });
    expect(newcomer.offers[0].kind).toBe('welcome');
    expect((await app.inject({ url: '/v1/users/nobody/offers?storeId=nope' })).statusCode).toBe(404);
  });

  it("erases every key and stream entry of the user, and nobody else's", async () => {
    const { app } = await serve();
    const victim = 'erase-me';
    await admin.set(KEYS.user('v1', victim), encodeUserFeatures(userVec(9)));
    await admin.set(KEYS.user('v0-old', victim), encodeUserFeatures(userVec(9)));
    await admin.hset(KEYS.onlineUser(victim), { points: '10', last_item: 'drink-3' });
    for (let i = 0; i < 3; i++) {
      await app.inject({ method: 'POST', url: '/v1/events', payload: event(`gone-${i}`, 'click', victim) });
    }
    await app.inject({ method: 'POST', url: '/v1/events', payload: event('kept-1', 'click', 'bob') });
    const others = await admin.dbsize();
    const res = await app.inject({
      method: 'DELETE',
      url: `/v1/users/${victim}`,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().erased).toEqual({
      featureKeys: 2,
      onlineKeys: 1,
      streamEntries: 3,
      eventMarkers: 3,
      deadLetters: 0,
      memoryEntries: 0,
    });
    const keys = await admin.keys('*');
    expect(keys.filter((k) => k.includes(victim))).toEqual([]);
    expect(keys.filter((k) => k.includes('gone-'))).toEqual([]);
    expect(keys.length).toBe(others - 2 - 1 - 3);
    const stream = await admin.xrange(KEYS.events, '-', '+');
    expect(stream.filter(([, f]) => f.includes(victim))).toEqual([]);
    expect(stream.some(([, f]) => f.includes('bob'))).toBe(true);
    const again = await app.inject({
      method: 'DELETE',
      url: `/v1/users/${victim}`,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(again.json().erased).toMatchObject({ featureKeys: 0, onlineKeys: 0, streamEntries: 0 });
  });

  it('erasing x1 leaves the data of the user y1:user:x1 (ids may contain ":") intact', async () => {
    const { app } = await serve();
    const [victim, other] = ['x1', 'y1:user:x1'];
    for (const u of [victim, other]) {
      await admin.set(KEYS.user('v1', u), encodeUserFeatures(userVec(7)));
      await admin.hset(KEYS.onlineUser(u), { points: '10' });
      const res = await app.inject({
        method: 'POST',
        url: '/v1/events',
        payload: event(`colon-${u}`, 'click', u),
      });
      expect(res.statusCode).toBe(202);
    }
    const res = await app.inject({
      method: 'DELETE',
      url: `/v1/users/${victim}`,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(res.json().erased).toMatchObject({
      featureKeys: 1,
      onlineKeys: 1,
      streamEntries: 1,
      eventMarkers: 1,
    });
    expect(await admin.exists(KEYS.user('v1', victim), KEYS.onlineUser(victim))).toBe(0);
    expect(await admin.getBuffer(KEYS.user('v1', other))).toEqual(encodeUserFeatures(userVec(7)));
    expect(await admin.hgetall(KEYS.onlineUser(other))).toEqual({ points: '10' });
    const stream = await admin.xrange(KEYS.events, '-', '+');
    const usersOnStream = stream.map(([, f]) => f[f.indexOf('userId') + 1]);
    expect(usersOnStream).toContain(other);
    expect(usersOnStream).not.toContain(victim);
    expect(await admin.exists(KEYS.eventSeen(`colon-${other}`))).toBe(1);
  });

  it("erase removes the user's entries on the dead-letter stream, and only theirs", async () => {
    const { app } = await serve();
    // What the stream job writes for an entry it cannot apply (DEAD_LETTER_SCRIPT).
    for (const u of ['dl-victim', 'dl-other', 'dl-victim']) {
      const original = [
        'eventId',
        `dl-${u}`,
        'type',
        'click',
        'userId',
        u,
        'storeId',
        'store-0',
        'at',
        'bad',
      ];
      await admin.xadd(
        KEYS.eventsDeadLetter,
        '*',
        'sourceId',
        '1-1',
        'group',
        'g',
        'reason',
        'bad at',
        'fields',
        JSON.stringify(original),
      );
    }
    const res = await app.inject({
      method: 'DELETE',
      url: '/v1/users/dl-victim',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().erased.deadLetters).toBe(2);
    const left = await admin.xrange(KEYS.eventsDeadLetter, '-', '+');
    expect(left.map(([, f]) => f[f.indexOf('fields') + 1])).toEqual([expect.stringContaining('"dl-other"')]);
  });
});

describe('user ids: one grammar on every route', () => {
  const auth = { authorization: `Bearer ${TOKEN}` };
  /** Every user route, called for `id` (`path` is how the id is written in a URL). */
  const calls = (app: FastifyInstance, id: string, path: string, n: number) => ({
    offers: () => app.inject({ url: `/v1/users/${path}/offers?storeId=store-0` }),
    erase: () => app.inject({ method: 'DELETE', url: `/v1/users/${path}`, headers: auth }),
    recommendations: () => recommend(app, id),
    events: () =>
      app.inject({
        method: 'POST',
        url: '/v1/events',
        payload: {
          eventId: `ids-${n}`,
          type: 'click',
          userId: id,
          storeId: 'store-0',
          at: new Date().toISOString(),
        },
      }),
  });
  const accepted: [string, string][] = [
    ['1 character', 'a'],
    ['100 characters', 'u'.repeat(100)],
    ['101 characters', 'u'.repeat(101)],
    ['128 characters', 'u'.repeat(128)],
    [': @ and .', 'shop:eu@user.42'],
    ['128 characters that are all percent-encoded in a path', '@:'.repeat(64)],
  ];
  const status = { offers: 200, erase: 200, recommendations: 200, events: 202 };

  it('ids of 1-128 characters, with : @ and ., are accepted by offers, erase, recommendations and events', async () => {
    const { app } = await serve();
    let n = 0;
    for (const [what, id] of accepted) {
      // Written as is and percent-encoded: both are the same id.
      for (const path of new Set([id, encodeURIComponent(id)])) {
        for (const [route, call] of Object.entries(calls(app, id, path, n++))) {
          const res = await call();
          expect(res.statusCode, `${route}, ${what}, path ${path.length} chars`).toBe(
            status[route as keyof typeof status],
          );
        }
      }
    }
  });

  it('an id of 129 or more characters is a 400 naming the field on every route, never 414 or 404', async () => {
    const { app } = await serve();
    let n = 0;
    for (const id of ['u'.repeat(129), '@'.repeat(129), 'u'.repeat(5000)]) {
      for (const [route, call] of Object.entries(calls(app, id, encodeURIComponent(id), n++))) {
        const res = await call();
        const field = route === 'offers' || route === 'erase' ? 'id' : 'userId';
        expect(res.statusCode, `${route}, ${id.length} chars`).toBe(400);
        expect(res.json()).toMatchObject({ code: 'VALIDATION', field });
      }
    }
  });
});
