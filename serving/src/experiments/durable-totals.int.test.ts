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
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { EXPERIMENT_HEADERS } from '../../../contracts/experiments.js';
import type { RouterConfig } from '../../../contracts/router-config.js';
import { assignVariant } from '../../../contracts/variant-hash.js';
import { startRedis } from '../../../hack/testenv/environment.js';
import { rng, seedFeatures, syntheticUser, writeModel } from '../../test/fixtures.js';
import { buildRouter } from '../router/app.js';

const EXP = 'shop/ab';
const SALT = 'durable';
const VARIANTS = [
  { name: 'control', weight: 50 },
  { name: 'v2', weight: 50 },
];
const variantOf = (u: string) => assignVariant(u, SALT, VARIANTS);

let dir: string;
let redis: Awaited<ReturnType<typeof startRedis>>['redis'];
let modelUri: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-exp-durable-'));
  redis = (await startRedis(dir, () => undefined)).redis;
  const admin = new Redis(redis.url);
  const r = rng(5);
  // Users u0..u39 have history (a CUPED covariate) except every fourth; n* users are new.
  await seedFeatures(admin, {
    version: 'v1',
    users: Array.from({ length: 40 }, (_, i) => ({ id: `u${i}`, features: syntheticUser(r, 150) })).filter(
      (_, i) => i % 4 !== 0,
    ),
  });
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
  [EXPERIMENT_HEADERS.variant]: variantOf(userId),
  [EXPERIMENT_HEADERS.ttlSeconds]: '3600',
});

/** The experiment gauges of a /metrics text: one number per series, keyed by its labels. */
async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^(crema_experiment_(?:users|sums))\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    expect(labels).not.toHaveProperty('user');
    expect(`${labels['experiment']}|${labels['namespace']}`).toBe('ab|shop');
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

/** What serving must have counted: per variant and model, from the requests this test made. */
class Truth {
  readonly exposed = new Map<string, { variant: string; model: string; hasHistory: boolean }>();
  readonly spent = new Map<string, number>();
  expose(user: string, model: string): void {
    if (!this.exposed.has(user))
      this.exposed.set(user, {
        variant: variantOf(user),
        model,
        hasHistory: /^u\d+$/.test(user) && Number(user.slice(1)) % 4 !== 0 && Number(user.slice(1)) < 40,
      });
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
      if (!e.hasHistory) add(`sums|${at}|conversion|nWithoutCovariate`, 1);
      const spent = this.spent.get(user);
      // Orders are counted by the process that records them; every one here is of the same model.
      if (spent !== undefined) {
        add(`sums|${at}|conversion|sumY`, 1);
        add(`sums|${at}|orderValue|sumY`, spent);
        add(`sums|${at}|orderValue|sumYY`, spent * spent);
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
  // No series the truth has no room for (users of a variant nobody was exposed to).
  for (const k of actual.keys()) if (k.startsWith('users|')) expect(want.has(k), `${k} expected`).toBe(true);
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
    experiment: { id: EXP, ttlSeconds: 3600 },
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
