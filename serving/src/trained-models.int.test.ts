/**
 * Contract test with the training side: the four models feature-jobs trains (on a tiny
 * generated dataset) load into serving (sha256, schema version and every feature name accepted)
 * and answer each route from the model.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Dataset, generateDataset } from '../../feature-jobs/src/generate/dataset.js';
import { runTraining, type TrainResult } from '../../feature-jobs/src/train/train.js';
import { startRedis } from '../../hack/testenv/environment.js';
import { build, createModelStore } from './app.js';
import { createServingRedis } from './features/redis.js';
import type { ModelStore } from './model/store.js';
import { rng, seedFeatures, syntheticUser } from '../test/fixtures.js';

let dir: string;
let server: Awaited<ReturnType<typeof startRedis>>['redis'];
let trained: TrainResult;
let app: FastifyInstance;
let models: ModelStore;
let redis: Redis;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-trained-'));
  generateDataset({ seed: 3, users: 2000, stores: 10, start: '2026-10-01', days: 9 }, join(dir, 'ds'));
  trained = await runTraining({
    dataset: Dataset.open(join(dir, 'ds')),
    outDir: join(dir, 'models'),
    evalDays: 3,
    windowDays: 30,
    seed: 1,
    rankingLists: 500,
    rows: 1000,
    epochs: 1,
  });
  server = (await startRedis(dir, () => undefined)).redis;
  const admin = new Redis(server.url);
  await seedFeatures(admin, { version: 'v1', users: [{ id: 'u1', features: syntheticUser(rng(1), 150) }] });
  admin.disconnect();
  redis = createServingRedis(server.url);
  models = createModelStore();
  app = await build({ redis, models, featureDeadlineMs: 1000 });
  await app.ready();
}, 120_000);

afterAll(async () => {
  await app?.close();
  models?.close();
  redis?.disconnect();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

it('loads every trained model and answers from it', async () => {
  expect(trained.models.map((m) => m.task).sort()).toEqual([
    'addon-attach',
    'churn',
    'drink-ranking',
    'pickup-time',
  ]);
  for (const m of trained.models) {
    const loaded = await models.load(m.task, pathToFileURL(m.paths.onnxPath).toString());
    expect(loaded.revision).toBe(m.meta.sha256);
  }
  const rank = (m: string) => trained.models.find((x) => x.task === m)!.meta.sha256;
  const rec = await app.inject({
    method: 'POST',
    url: '/v1/recommendations',
    payload: {
      userId: 'u1',
      storeId: 'store-0',
      context: { time: '2026-11-24T08:00:00Z', channel: 'app' },
      limit: 5,
    },
  });
  expect(rec.json()).toMatchObject({
    fallback: false,
    modelRevision: rank('drink-ranking'),
    personalization: 'user',
  });
  expect(rec.json().items).toHaveLength(5);
  for (const item of rec.json().items) expect(item.addons).toHaveLength(2);
  const pickup = await app.inject({
    method: 'POST',
    url: '/v1/pickup-estimate',
    payload: { storeId: 'store-0', items: ['drink-3'] },
  });
  expect(pickup.json()).toMatchObject({
    source: 'model',
    modelRevision: rank('pickup-time'),
    fallback: false,
  });
  const offers = await app.inject({ url: '/v1/users/u1/offers' });
  expect(offers.json()).toMatchObject({ modelRevision: rank('churn'), fallback: false });
});
