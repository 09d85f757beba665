/**
 * Per-request cost of the recommendation path's pieces, in-process (µs per call): input
 * building, ONNX inference, the whole route via inject. For finding hot spots, not a goal.
 *   npx tsx bench/serving/micro.ts
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedis } from '../../hack/testenv/environment.js';
import { build, createModelStore } from '../../serving/src/app.js';
import { createServingRedis } from '../../serving/src/features/redis.js';
import { loadModel } from '../../serving/src/model/loader.js';
import {
  buildRankingInput,
  compileRankingPlan,
  computeContextValues,
} from '../../serving/src/ranking/plan.js';
import {
  buildCatalog,
  buildItemMatrix,
  buildPopularity,
  rng,
  seedFeatures,
  syntheticUser,
  writeModel,
} from '../../serving/test/fixtures.js';

async function time(name: string, n: number, fn: () => unknown): Promise<void> {
  for (let i = 0; i < Math.min(n, 500); i++) await fn();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  console.log(`${name.padEnd(28)} ${(((performance.now() - t0) / n) * 1000).toFixed(1)} µs`);
}

const dir = await mkdtemp(join(tmpdir(), 'crema-micro-'));
const { redis: server } = await startRedis(dir, () => undefined);
try {
  const catalog = buildCatalog(150, 40);
  const users = Array.from({ length: 1000 }, (_, i) => ({
    id: `u${i}`,
    features: syntheticUser(rng(i), 150),
  }));
  const admin = new Redis(server.url);
  await seedFeatures(admin, { version: 'm', catalog, users });
  admin.disconnect();
  const m = await writeModel({ dir, file: 'r', hidden: 64 });
  const model = await loadModel(m.uri, { task: 'drink-ranking' });
  const plan = compileRankingPlan(m.meta.inputs[0]!.features);
  const cand = catalog.items.map((_, i) => i);
  const batch = {
    plan,
    catalog: catalog.items,
    items: buildItemMatrix(catalog),
    user: users[0]!.features,
    context: computeContextValues({ hour: 8, weekday: 2 }),
    popularity: buildPopularity(catalog, 1),
    hour: 8,
    candidates: cand,
  };
  const input = buildRankingInput(batch);
  const only = process.env['MICRO_ONLY'] === '1';
  if (!only) await time('buildRankingInput', 20_000, () => buildRankingInput(batch));
  if (!only) await time('onnx run [190 x 18] h64', 5_000, () => model.run(input, cand.length));
  const redis = createServingRedis(server.url);
  const models = createModelStore();
  await models.load('drink-ranking', m.uri);
  const app = await build({ redis, models });
  await app.ready();
  const payload = JSON.stringify({
    userId: 'u5',
    storeId: 'store-0',
    context: { time: '2026-11-24T08:00:00Z' },
    limit: 5,
  });
  const headers = { 'content-type': 'application/json' };
  await time('inject /v1/recommendations', 3_000, () =>
    app.inject({ method: 'POST', url: '/v1/recommendations', payload, headers }),
  );
  const cpu = async (name: string, total: number, fn: () => Promise<unknown>) => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next++ < total) await fn();
      }),
    );
    const c = process.cpuUsage(c0);
    const ms = performance.now() - t0;
    console.log(
      `${name.padEnd(28)} ${((c.user + c.system) / total).toFixed(1)} µs CPU/req, ${Math.round((total / ms) * 1000)} req/s at 50 in flight`,
    );
  };
  await cpu('recommendations x50', only ? 60_000 : 20_000, () =>
    app.inject({ method: 'POST', url: '/v1/recommendations', payload, headers }),
  );
  if (!only) {
    await cpu('onnx run x50', 20_000, () => model.run(input, cand.length));
    await cpu('redis getBuffer x50', 20_000, () => redis.getBuffer('crema:features:m:user:u5'));
    const check = await app.inject({ method: 'POST', url: '/v1/recommendations', payload, headers });
    console.log('check', check.statusCode, check.json().fallback, check.body.length, 'bytes');
    await cpu('healthz x50', 20_000, () => app.inject({ url: '/healthz' }));
    await time('inject /healthz', 3_000, () => app.inject({ url: '/healthz' }));
    await time('redis GET (sequential)', 3_000, () => redis.get('crema:features:current'));
  }
  await app.close();
  models.close();
  redis.disconnect();
} finally {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}
