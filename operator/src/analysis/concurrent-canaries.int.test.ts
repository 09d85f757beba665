/**
 * Two RecommenderModels canarying at once behind one real Prometheus, each served by real serving
 * apps (serving's `build()`, real ONNX models, a real redis-server) labelled as the operator
 * renders them. Both are named `drinks` and roll out the same model files, in the namespaces
 * `north` and `south` (as staging and production would); north's canary answers every request
 * with a 503, south's is healthy. South's analysis must pass and north's fail: one model's
 * analysis never counts the other's traffic (issue 11: before the serving metrics carried
 * model, namespace and revision, both canaries' requests were pooled by `variant` alone).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis } from '../../../hack/testenv/environment.js';
import { startPrometheus, type PrometheusServer } from '../../../hack/testenv/observability.js';
import { build, createModelStore } from '../../../serving/src/app.js';
import { createServingRedis } from '../../../serving/src/features/redis.js';
import type { ModelStore } from '../../../serving/src/model/store.js';
import { seedFeatures, writeModel } from '../../../serving/test/fixtures.js';
import type { RecommenderModelSpecRolloutAnalysis } from '../api/v1alpha1/recommendermodel.js';
import { analyzeCanary } from './analyze.js';
import { createPrometheusClient, type PrometheusClient } from './prometheus.js';
import type { AnalysisResult, Variant } from './types.js';

const WINDOW = '10s';
const analysis: RecommenderModelSpecRolloutAnalysis = {
  minSamples: 50,
  metrics: { errorRate: { max: 0.05 }, p99LatencyMs: { max: 2000 } },
};

type RedisServer = Awaited<ReturnType<typeof startRedis>>['redis'];
let dir: string;
let redisServer: RedisServer;
let prom: PrometheusServer;
let client: PrometheusClient;
let stableSha: string;
let canarySha: string;
const running: { app: FastifyInstance; redis: Redis; models: ModelStore }[] = [];
let stopTraffic = false;
const traffic: Promise<void>[] = [];

/** One serving process of one variant of one RecommenderModel, listening for Prometheus. */
async function serving(o: {
  namespace: string;
  variant: Variant;
  modelUri: string;
  /** A Redis nobody listens on and no snapshot: every recommendation is a 503 NOT_READY. */
  broken?: boolean;
}): Promise<{ app: FastifyInstance; target: string }> {
  const redis = createServingRedis(o.broken ? 'redis://127.0.0.1:1' : redisServer.url);
  redis.on('error', () => undefined);
  const models = createModelStore({ inferenceThread: false });
  await models.load('drink-ranking', o.modelUri);
  // What server.ts passes from CREMA_MODEL_NAME, POD_NAMESPACE and CREMA_VARIANT.
  const app = await build({
    redis,
    models,
    modelName: 'drinks',
    namespace: o.namespace,
    variant: o.variant,
    featureDeadlineMs: 1000,
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  running.push({ app, redis, models });
  return { app, target: `127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

/** Recommendation requests into `app`, one after another with a short pause, until stopped. */
async function drive(app: FastifyInstance): Promise<void> {
  for (let i = 0; !stopTraffic; i++) {
    await app.inject({
      method: 'POST',
      url: '/v1/recommendations',
      payload: {
        userId: `user-${i % 50}`,
        storeId: 'store-0',
        context: { time: '2026-11-24T14:00:00Z', channel: 'app' },
        limit: 5,
      },
    });
    await new Promise((r) => setTimeout(r, 40));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-canaries-'));
  redisServer = (await startRedis(dir, () => undefined)).redis;
  const admin = new Redis(redisServer.url);
  await seedFeatures(admin, { version: 'v1' });
  admin.disconnect();
  const stable = await writeModel({ dir, file: 'drinks-v1', name: 'drinks', seed: 1 });
  const canary = await writeModel({ dir, file: 'drinks-v2', name: 'drinks', seed: 2 });
  stableSha = stable.meta.sha256;
  canarySha = canary.meta.sha256;
  const apps = [
    await serving({ namespace: 'north', variant: 'stable', modelUri: stable.uri }),
    await serving({ namespace: 'north', variant: 'canary', modelUri: canary.uri, broken: true }),
    await serving({ namespace: 'south', variant: 'stable', modelUri: stable.uri }),
    await serving({ namespace: 'south', variant: 'canary', modelUri: canary.uri }),
  ];
  prom = await startPrometheus({ scrapeTargets: apps.map((a) => a.target), log: () => {} });
  client = createPrometheusClient(prom.url, { timeoutMs: 5000 });
  for (const a of apps) traffic.push(drive(a.app));
}, 120_000);

afterAll(async () => {
  stopTraffic = true;
  await Promise.all(traffic);
  await prom?.stop();
  for (const r of running) {
    await r.app.close();
    r.models.close();
    r.redis.disconnect();
  }
  await redisServer?.stop();
  await rm(dir, { recursive: true, force: true });
});

const analyze = (namespace: string, model = 'drinks') =>
  analyzeCanary(client, { model, namespace, stableSha, canarySha, window: WINDOW, analysis });

describe('two models canarying at once (real serving, real Prometheus)', () => {
  let north: AnalysisResult;
  let south: AnalysisResult;
  let addons: AnalysisResult;
  beforeAll(async () => {
    // Until the variants of both models have a window's worth of requests in Prometheus (each
    // model's traffic reaches it at its own scrape: one ready does not make the other ready).
    const deadline = Date.now() + 60_000;
    do {
      await new Promise((r) => setTimeout(r, 1000));
      south = await analyze('south');
      north = await analyze('north');
    } while ((south.verdict === 'Inconclusive' || north.verdict === 'Inconclusive') && Date.now() < deadline);
    addons = await analyze('north', 'addons');
  }, 90_000);

  it("passes the healthy canary: the other model's 503s are not counted", () => {
    expect(south.verdict, south.message).toBe('Pass');
    const err = south.metrics.find((m) => m.metric === 'errorRate')!;
    expect(err).toMatchObject({ canary: 0, stable: 0 });
    expect(err.samples.canary).toBeGreaterThanOrEqual(50);
  });

  it('fails the canary that answers 503s, on its own traffic', () => {
    expect(north.verdict, north.message).toBe('Fail');
    const err = north.metrics.find((m) => m.metric === 'errorRate')!;
    expect(err.verdict).toBe('Fail');
    // Every one of its requests failed: nothing of south's healthy canary dilutes it.
    expect(err.canary).toBe(1);
    expect(err.stable).toBe(0);
    expect(north.message).toMatch(/^errorRate: canary 100\.00% > max 5\.00%/);
  });

  it('finds no traffic for a model name nobody serves in that namespace', () => {
    expect(addons.verdict).toBe('Inconclusive');
    for (const m of addons.metrics) expect(m.samples, m.metric).toEqual({ canary: 0, stable: 0 });
  });
});
