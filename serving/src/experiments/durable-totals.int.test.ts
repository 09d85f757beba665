/**
 * Experiment counts survive serving pods, and a user is counted only under the variant that
 * served them. Real redis-server, real serving processes (server.ts), the real router.
 *
 * 1. Users of experiment shop/ab ask one serving process for recommendations (twice each) and
 *    some order, with the headers the router sets. Its /metrics export the true totals. The
 *    process is killed; a fresh one, before any request, exports the same totals.
 * 2. Through the router, users assigned v2 while v2's upstream is down are served by stable
 *    (control) and counted nowhere; their orders of earlier exposures still count. Once v2's
 *    upstream is up, their next request counts them under v2 (its model).
 * 3. The Experiment is deleted and re-created under the same name (a new uid: a new run): the
 *    new run exports no users until its first exposure, users exposed in the old run are
 *    exposed again and their orders count only in the new run; the old run's totals stay as
 *    they were (under their own run label) until they expire.
 * 4. An index entry whose totals exist again is not dropped (the race of a scrape with a new user).
 *
 * The expected sums are this test's own arithmetic from the users' features and orders: every
 * stat the EXPOSE and ORDER scripts write (sumX, sumXX, nWithoutCovariate, sumY, sumYY, sumXY).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  EXPERIMENT_COVARIATES,
  EXPERIMENT_HEADERS,
  EXPERIMENT_INDEX_KEY,
  EXPERIMENT_METRICS,
  experimentIndexEntry,
  experimentTotalsKey,
} from '../../../contracts/experiments.js';
import { USER_FEATURES, type UserFeatureName } from '../../../contracts/features.js';
import type { RouterConfig } from '../../../contracts/router-config.js';
import { assignVariant } from '../../../contracts/variant-hash.js';
import { startRedis } from '../../../hack/testenv/environment.js';
import { rng, seedFeatures, syntheticUser, writeModel } from '../../test/fixtures.js';
import { buildRouter } from '../router/app.js';
import { redisTotalsSource } from './totals.js';

const EXP = 'shop/ab';
/** The run of the first Experiment object, and of the one re-created under the same name. */
const RUN = '3f2a9c1e07b4';
const RUN2 = 'c9d81e5a2f60';
const SALT = 'durable';
const VARIANTS = [
  { name: 'control', weight: 50 },
  { name: 'v2', weight: 50 },
];
const variantOf = (u: string) => assignVariant(u, SALT, VARIANTS);

let dir: string;
let redis: Awaited<ReturnType<typeof startRedis>>['redis'];
let modelUri: string;
/** The batch features of the users with history. */
const features = new Map<string, Float32Array>();
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-exp-durable-'));
  redis = (await startRedis(dir, () => undefined)).redis;
  const admin = new Redis(redis.url);
  const r = rng(5);
  // Users u0..u39 have history (a CUPED covariate) except every fourth; n* users are new.
  const users = Array.from({ length: 40 }, (_, i) => ({
    id: `u${i}`,
    features: syntheticUser(r, 150),
  })).filter((_, i) => i % 4 !== 0);
  for (const u of users) features.set(u.id, u.features);
  await seedFeatures(admin, { version: 'v1', users });
  admin.disconnect();
  modelUri = (await writeModel({ dir, file: 'ranker' })).uri;
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Starts a serving process of `model`; resolves with its base URL once it is ready. */
async function startServing(model: string): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'serving/src/server.ts'], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'info',
      REDIS_URL: redis.url,
      CREMA_RANKING_MODEL_URI: modelUri,
      CREMA_VARIANT: 'stable',
      CREMA_MODEL_NAME: model,
      POD_NAMESPACE: 'shop',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    proc.once('exit', (code) => reject(new Error(`server.ts exited ${code}: ${out}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  await expect.poll(async () => (await fetch(`${url}/readyz`)).status, { timeout: 30_000 }).toBe(200);
  return { proc, url };
}

async function stop(proc: ChildProcess): Promise<void> {
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGKILL');
  await exited;
}

/** A loopback port nobody listens on. */
async function closedPort(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}`;
}

const recommendationBody = (userId: string) =>
  JSON.stringify({ userId, storeId: 'store-0', context: { time: '2026-11-24T08:00:00Z' }, limit: 3 });
let eventN = 0;
const orderBody = (userId: string, value: number) =>
  JSON.stringify({
    eventId: `ord-${eventN++}`,
    type: 'order',
    userId,
    storeId: 'store-0',
    at: new Date().toISOString(),
    value,
  });

/** The headers the router sets for a user (tests 1: talking to serving directly). */
const tagged = (userId: string) => ({
  'content-type': 'application/json',
  [EXPERIMENT_HEADERS.experiment]: EXP,
  [EXPERIMENT_HEADERS.run]: RUN,
  [EXPERIMENT_HEADERS.variant]: variantOf(userId),
  [EXPERIMENT_HEADERS.ttlSeconds]: '3600',
});

/** The experiment gauges of one run in a /metrics text: one number per series, keyed by its labels. */
async function scrape(url: string, run = RUN): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^(crema_experiment_(?:users|sums))\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    expect(labels).not.toHaveProperty('user');
    expect(`${labels['experiment']}|${labels['namespace']}`).toBe('ab|shop');
    expect(labels['run']).toMatch(/^[0-9a-f]{12}$/);
    if (labels['run'] !== run) continue;
    const key = [
      m[1]!.slice('crema_experiment_'.length),
      labels['variant'],
      labels['model'],
      labels['metric'],
      labels['stat'],
    ]
      .filter(Boolean)
      .join('|');
    out.set(key, Number(m[3]));
  }
  return out;
}

/** The user's covariate of `metric` (undefined: a user without history). */
const covariate = (user: string, metric: (typeof EXPERIMENT_METRICS)[number]) =>
  features.get(user)?.[USER_FEATURES.indexOf(EXPERIMENT_COVARIATES[metric] as UserFeatureName)];

/** What serving must have counted in one run: per variant and model, from the requests this test made. */
class Truth {
  readonly exposed = new Map<string, { variant: string; model: string }>();
  readonly spent = new Map<string, number>();
  expose(user: string, model: string): void {
    if (!this.exposed.has(user)) this.exposed.set(user, { variant: variantOf(user), model });
  }
  order(user: string, value: number): void {
    if (this.exposed.has(user)) this.spent.set(user, (this.spent.get(user) ?? 0) + value);
  }
  expected(): Map<string, number> {
    const out = new Map<string, number>();
    const add = (k: string, v: number) => out.set(k, (out.get(k) ?? 0) + v);
    for (const [user, e] of this.exposed) {
      const at = `${e.variant}|${e.model}`;
      add(`users|${at}`, 1);
      // Orders are counted by the process that records them; every one here is of the same model.
      const spent = this.spent.get(user);
      // Per-user outcomes: converted (0/1), spend; no order here carries an add-on.
      const y = { conversion: spent === undefined ? 0 : 1, orderValue: spent ?? 0, attachRate: 0 };
      for (const m of EXPERIMENT_METRICS) {
        const x = covariate(user, m);
        if (x === undefined) add(`sums|${at}|${m}|nWithoutCovariate`, 1);
        else if (x !== 0) {
          add(`sums|${at}|${m}|sumX`, x);
          add(`sums|${at}|${m}|sumXX`, x * x);
        }
        if (y[m] > 0) {
          add(`sums|${at}|${m}|sumY`, y[m]);
          add(`sums|${at}|${m}|sumYY`, y[m] * y[m]);
          if (x !== undefined && x !== 0) add(`sums|${at}|${m}|sumXY`, x * y[m]);
        }
      }
    }
    return out;
  }
}

function expectTotals(actual: Map<string, number>, truth: Truth): void {
  const want = truth.expected();
  for (const [k, v] of want) {
    expect(actual.has(k), `${k} exported`).toBe(true);
    expect(actual.get(k)!, k).toBeCloseTo(v, 6);
  }
  // No series the truth has no room for (users of a variant nobody was exposed to, a stat
  // nothing moved).
  for (const [k, v] of actual) if (v !== 0) expect(want.has(k), `${k} expected`).toBe(true);
}

const truth = new Truth();

it('the totals outlive the serving process that counted them', async () => {
  const a = await startServing('drinks');
  const users = Array.from({ length: 40 }, (_, i) => `u${i}`);
  for (const u of users)
    for (let k = 0; k < 2; k++) {
      const res = await fetch(`${a.url}/v1/recommendations`, {
        method: 'POST',
        headers: tagged(u),
        body: recommendationBody(u),
      });
      expect(res.status).toBe(200);
      truth.expose(u, 'drinks');
    }
  // A third order: some users twice (a user converts once; spend adds up).
  for (const [i, u] of users.entries()) {
    if (i % 3 !== 0) continue;
    for (const value of i % 2 ? [4.5, 2.25] : [6]) {
      const res = await fetch(`${a.url}/v1/events`, {
        method: 'POST',
        headers: tagged(u),
        body: orderBody(u, value),
      });
      expect(res.status).toBe(202);
      truth.order(u, value);
    }
  }
  expect(new Set([...truth.exposed.values()].map((e) => e.variant))).toEqual(new Set(['control', 'v2']));
  expectTotals(await scrape(a.url), truth);

  // The pod is gone (SIGKILL: nothing flushed on the way out); a new one has served nobody yet.
  await stop(a.proc);
  const b = await startServing('drinks');
  expectTotals(await scrape(b.url), truth);
  // Users exposed by the first process come back to the new one, which has seen none of them:
  // Redis still knows them, so nobody is counted twice.
  for (const u of users.slice(0, 10)) {
    const res = await fetch(`${b.url}/v1/recommendations`, {
      method: 'POST',
      headers: tagged(u),
      body: recommendationBody(u),
    });
    expect(res.status).toBe(200);
  }
  expectTotals(await scrape(b.url), truth);
  await stop(b.proc);
}, 120_000);

it("a user sent to stable while their variant is down is not counted; they are at their variant's first answer", async () => {
  const control = await startServing('drinks');
  const path = join(dir, 'router.json');
  const config = (v2Upstream: string): RouterConfig => ({
    salt: SALT,
    stable: 'control',
    variants: [
      { name: 'control', weight: 50, upstream: control.url },
      { name: 'v2', weight: 50, upstream: v2Upstream },
    ],
    experiment: { id: EXP, run: RUN, ttlSeconds: 3600 },
  });
  await writeFile(path, JSON.stringify(config(await closedPort())));
  const router = await buildRouter({ configPath: path, watchIntervalMs: 50 });
  try {
    const viaRouter = (url: string, body: string) =>
      router.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: body });
    const newcomers = Array.from({ length: 30 }, (_, i) => `n${i}`).filter((u) => variantOf(u) === 'v2');
    expect(newcomers.length).toBeGreaterThan(5);
    for (const u of newcomers) {
      const res = await viaRouter('/v1/recommendations', recommendationBody(u));
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-crema-variant']).toBe('control');
    }
    // An order of a v2 user exposed earlier still counts for v2, even through the fallback.
    const earlier = [...truth.exposed.entries()].find(([, e]) => e.variant === 'v2')![0];
    expect((await viaRouter('/v1/events', orderBody(earlier, 3))).statusCode).toBe(202);
    truth.order(earlier, 3);
    expectTotals(await scrape(control.url), truth);

    // v2 comes up: the same users' next requests are their exposures, under v2's model.
    const v2 = await startServing('drinks-v2');
    await writeFile(path, JSON.stringify(config(v2.url)));
    await expect
      .poll(
        async () =>
          (await viaRouter('/v1/recommendations', recommendationBody(newcomers[0]!))).headers[
            'x-crema-variant'
          ],
        { timeout: 5000, interval: 100 },
      )
      .toBe('v2');
    for (const u of newcomers) {
      const res = await viaRouter('/v1/recommendations', recommendationBody(u));
      expect(res.headers['x-crema-variant']).toBe('v2');
      truth.expose(u, 'drinks-v2');
    }
    // Either pod exports the whole experiment.
    expectTotals(await scrape(control.url), truth);
    expectTotals(await scrape(v2.url), truth);
  } finally {
    await router.close();
  }
}, 120_000);

it('an Experiment re-created under the same name counts from zero: its users are exposed again', async () => {
  const before = await startServing('drinks');
  const oldTotals = await scrape(before.url);
  expectTotals(oldTotals, truth);
  const v2 = await startServing('drinks-v2');
  const path = join(dir, 'router-rerun.json');
  // The new object's router: same name, same salt, a new run.
  const config: RouterConfig = {
    salt: SALT,
    stable: 'control',
    variants: [
      { name: 'control', weight: 50, upstream: before.url },
      { name: 'v2', weight: 50, upstream: v2.url },
    ],
    experiment: { id: EXP, run: RUN2, ttlSeconds: 3600 },
  };
  await writeFile(path, JSON.stringify(config));
  const router = await buildRouter({ configPath: path, watchIntervalMs: 50 });
  try {
    // Before any request of the new run: no series of it at all (not the old run's counts).
    expect(await scrape(before.url, RUN2)).toEqual(new Map());
    const viaRouter = (url: string, body: string) =>
      router.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: body });
    const again = new Truth();
    // Users exposed (and some ordering) in the old run, of both variants.
    const returning = Array.from({ length: 12 }, (_, i) => `u${i}`);
    expect(returning.every((u) => truth.exposed.has(u))).toBe(true);
    for (const u of returning) {
      const res = await viaRouter('/v1/recommendations', recommendationBody(u));
      expect(res.statusCode).toBe(200);
      again.expose(u, res.headers['x-crema-variant'] === 'v2' ? 'drinks-v2' : 'drinks');
    }
    for (const u of returning.slice(0, 4)) {
      expect((await viaRouter('/v1/events', orderBody(u, 7.5))).statusCode).toBe(202);
      again.order(u, 7.5);
    }
    expect(again.exposed.size).toBe(12);
    expect(new Set([...again.exposed.values()].map((e) => e.variant))).toEqual(new Set(['control', 'v2']));
    // The new run counts exactly these 12 users and 4 orders, from either pod.
    expectTotals(await scrape(before.url, RUN2), again);
    expectTotals(await scrape(v2.url, RUN2), again);
    // The old run's totals are untouched, still exported under their own run.
    expect(await scrape(v2.url, RUN)).toEqual(oldTotals);
  } finally {
    await router.close();
  }
}, 120_000);

it('a scrape does not drop an index entry whose totals exist again (a new user since they were read)', async () => {
  const admin = new Redis(redis.url);
  try {
    const source = redisTotalsSource(admin);
    const run = { namespace: 'shop', name: 'race', run: 'abcdef012345' };
    const entry = experimentIndexEntry(run.namespace, run.name, run.run);
    const key = experimentTotalsKey(run.namespace, run.name, run.run);
    // The scrape read the totals empty; a new user then created them and added the entry.
    await admin.hset(key, 'users|v2|m', '1');
    await admin.sadd(EXPERIMENT_INDEX_KEY, entry);
    await source.forget(entry, run);
    expect(await admin.sismember(EXPERIMENT_INDEX_KEY, entry)).toBe(1);
    // Expired for real: dropped.
    await admin.del(key);
    await source.forget(entry, run);
    expect(await admin.sismember(EXPERIMENT_INDEX_KEY, entry)).toBe(0);
  } finally {
    admin.disconnect();
  }
});
