/**
 * The whole event path against a real redis-server: serving's POST /v1/events (the real app,
 * injected) appends, the real stream job applies. What the API accepts the job applies; what
 * it cannot apply the API refuses with 400 naming the field. The stream is never trimmed past
 * an entry a consumer group has not processed; when it is full, serving refuses with 503.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KEYS } from '../../../contracts/features.js';
import { startRedis, type RedisServer } from '../../../hack/testenv/environment.js';
import { build, createModelStore } from '../../../serving/src/app.js';
import { createServingRedis } from '../../../serving/src/features/redis.js';
import { buildCatalog, buildStores, rng } from '../../../serving/test/fixtures.js';
import { buildApplyContext } from './apply.js';
import { DEFAULT_GROUP, ensureGroup, runStreamJob } from './consumer.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-pipeline-'));
let server: RedisServer;
let redis: Redis;
const catalog = buildCatalog(20, 5);
const stores = buildStores(3);
const context = buildApplyContext(catalog, stores);

beforeAll(async () => {
  ({ redis: server } = await startRedis(dir, () => undefined));
  redis = new Redis(server.url);
});
afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  await redis.flushall();
});

const apps: { app: FastifyInstance; client: Redis }[] = [];
afterEach(async () => {
  for (const { app, client } of apps.splice(0)) {
    await app.close();
    client.disconnect();
  }
});

async function serve(eventsMaxLen?: number): Promise<FastifyInstance> {
  const client = createServingRedis(server.url);
  client.on('error', () => undefined);
  const app = await build({
    redis: client,
    models: createModelStore({ inferenceThread: false }),
    // Load shedding would answer 503 when the shared test machine stalls; these tests are about events.
    protection: { maxInFlight: 0, maxEventLoopDelayMs: 0, rateLimit: false },
    ...(eventsMaxLen !== undefined ? { eventsMaxLen } : {}),
  });
  await app.ready();
  apps.push({ app, client });
  return app;
}

type Body = Record<string, unknown>;
const post = (app: FastifyInstance, payload: Body) =>
  app.inject({ method: 'POST', url: '/v1/events', payload });

// ---- A generator of events: valid spellings of every field, and near-misses of each ----

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const ID_CHARS = 'abcxyzABCXYZ0189_.:-';
function idOf(r: () => number, max: number, chars = ID_CHARS): string {
  // Lengths at the bounds as often as in between.
  const len = pick(r, [1, max, 1 + Math.floor(r() * max)]);
  let s = '';
  for (let i = 0; i < len; i++) s += chars[Math.floor(r() * chars.length)];
  return s;
}
const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** An RFC 3339 spelling of `ms` (offset, case, fraction digits vary); leap second when asked. */
function rfc3339(r: () => number, ms: number, leap = false): string {
  const offsetMin = pick(r, [0, 0, 330, -480, 60, -0, 840, -720]);
  const local = new Date(ms + offsetMin * 60_000);
  const date = `${local.getUTCFullYear()}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}`;
  let sec = pad(local.getUTCSeconds());
  if (leap) sec = '60';
  const digits = pick(r, [0, 0, 1, 3, 6, 9]);
  const frac = digits
    ? '.' + String(local.getUTCMilliseconds()).padStart(3, '0').padEnd(digits, '7').slice(0, digits)
    : '';
  const zone =
    offsetMin === 0 && r() < 0.7
      ? pick(r, ['Z', 'z'])
      : `${offsetMin < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(offsetMin) / 60))}:${pad(Math.abs(offsetMin) % 60)}`;
  return `${date}${pick(r, ['T', 't'])}${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${sec}${frac}${zone}`;
}

/** A leap second: 23:59:60 UTC at the end of yesterday, in some offset's local time. */
function leapSecond(r: () => number, now: number): string {
  const endOfYesterday = Math.floor(now / 86_400_000) * 86_400_000 - 1000; // 23:59:59 UTC
  return rfc3339(r, endOfYesterday, true);
}

const TYPES = ['impression', 'click', 'add_to_cart', 'order'] as const;
const ITEM_IDS = catalog.items.map((i) => i.id);

function validEvent(r: () => number, i: number, now: number): Body {
  const type = pick(r, TYPES);
  const e: Body = {
    eventId: `p${i}-${idOf(r, 100)}`,
    type,
    userId: r() < 0.9 ? `u${Math.floor(r() * 12)}` : idOf(r, 128, ID_CHARS + '@'),
    storeId: r() < 0.9 ? pick(r, stores).id : idOf(r, 64),
    at: r() < 0.1 ? leapSecond(r, now) : rfc3339(r, now - Math.floor(r() * 40 * 3_600_000)),
  };
  if (r() < 0.7) {
    const n = pick(r, [0, 1, 2, 3, 50]);
    e['itemIds'] = Array.from({ length: n }, () => (r() < 0.8 ? pick(r, ITEM_IDS) : idOf(r, 64)));
  }
  if (type === 'order' ? r() < 0.85 : r() < 0.1) {
    e['value'] = pick(r, [0, 10_000, 4.5, 1e-7, 9999.999999, Math.round(r() * 2000) / 100]);
  }
  if (r() < 0.3) e['variant'] = idOf(r, 40, 'abcXYZ09_.-');
  if (r() < 0.2) e['modelRevision'] = pick(r, ['', 'sha256:abc', 'é,[x] y', 'r'.repeat(64)]);
  return e;
}

/** Near-misses: one field replaced by something a careless client might send. */
function mutate(r: () => number, e: Body, now: number): Body {
  const day = new Date(now - 86_400_000).toISOString().slice(0, 10);
  const m: [string, unknown][] = [
    ['at', '2026-12-31T23:59:60Z'],
    ['at', `${day}T12:59:60Z`],
    ['at', `${day} 07:00:00Z`],
    ['at', `${day}T07:00:00`],
    ['at', `${day}T07:00:00+0530`],
    ['at', `${day}T07:00:00+05`],
    ['at', `${day}T07:00:00.1234567891Z`],
    ['at', `${day.slice(0, 4)}-02-30T07:00:00Z`],
    ['at', '1970-01-01T00:00:00Z'],
    ['at', '0001-01-01T00:00:00Z'],
    ['at', '9999-12-31T23:59:59Z'],
    ['at', new Date(now - 3 * 86_400_000).toISOString()],
    ['at', new Date(now + 3_600_000).toISOString()],
    ['itemIds', ['drink-1,drink-2']],
    ['itemIds', ['[broken']],
    ['itemIds', ['a b']],
    ['itemIds', ['caf\u00e9']],
    ['itemIds', ['']],
    ['itemIds', Array.from({ length: 51 }, () => 'drink-1')],
    ['value', -1],
    ['value', 10_000.01],
    ['eventId', 'a,b'],
    ['eventId', 'x'.repeat(129)],
    ['userId', 'a*b'],
    ['storeId', 's 1'],
    ['variant', 'x'.repeat(41)],
    ['modelRevision', 'x'.repeat(65)],
    ['extra', 1],
  ];
  const [k, v] = pick(r, m);
  return { ...e, [k]: v };
}

/** What the online user hashes must say once every accepted event was applied. */
function expectedUsers(accepted: readonly Body[]) {
  const users = new Map<
    string,
    { counts: Record<string, number>; spend: number; points: number; noValue: number }
  >();
  for (const e of accepted) {
    const u = users.get(e['userId'] as string) ?? { counts: {}, spend: 0, points: 0, noValue: 0 };
    const t = e['type'] as string;
    u.counts[t] = (u.counts[t] ?? 0) + 1;
    if (t === 'order') {
      const v = e['value'] as number | undefined;
      if (v === undefined) u.noValue++;
      else {
        u.spend += v;
        u.points += Math.floor(v * 10);
      }
    }
    users.set(e['userId'] as string, u);
  }
  return users;
}

describe('what the events API accepts, the stream job applies', () => {
  it('applies every accepted event of 600 generated ones; refusals are 400s naming the field', async () => {
    const app = await serve();
    const r = rng(12);
    const now = Date.now();
    const accepted: Body[] = [];
    const refused: { body: Body; field: string }[] = [];
    for (let i = 0; i < 600; i++) {
      const mutated = i % 3 === 2;
      const e = mutated ? mutate(r, validEvent(r, i, now), now) : validEvent(r, i, now);
      const res = await post(app, e);
      if (res.statusCode === 202) accepted.push(e);
      else {
        // Every valid spelling of every field is accepted.
        expect(mutated, `${JSON.stringify(e)} → ${res.body}`).toBe(true);
        expect(res.statusCode, JSON.stringify(e)).toBe(400);
        expect(res.json().code).toBe('VALIDATION');
        refused.push({ body: e, field: res.json().field });
      }
    }
    expect(accepted.length).toBeGreaterThanOrEqual(400);
    expect(refused.length).toBeGreaterThan(100);
    const fields = [
      'eventId',
      'type',
      'userId',
      'storeId',
      'at',
      'itemIds',
      'value',
      'variant',
      'modelRevision',
      'extra',
    ];
    for (const x of refused) expect(fields, JSON.stringify(x)).toContain(x.field?.replace(/\[\d+\]$/, ''));

    const stats = await runStreamJob({ redis, consumer: 'c', untilIdle: true, context });
    const unapplied: string[] = [];
    for (const e of accepted) {
      if (!(await redis.exists(KEYS.eventApplied(e['userId'] as string, e['eventId'] as string))))
        unapplied.push(JSON.stringify(e));
    }
    expect(unapplied).toEqual([]);
    expect(stats).toMatchObject({ applied: accepted.length, duplicates: 0, deadLettered: 0 });

    for (const [userId, want] of expectedUsers(accepted)) {
      const h = await redis.hgetall(KEYS.onlineUser(userId));
      for (const t of TYPES)
        expect(Number(h[`events_${t}`] ?? 0), `${userId} ${t}`).toBe(want.counts[t] ?? 0);
      expect(Number(h['spend'] ?? 0), userId).toBeCloseTo(want.spend, 4);
      expect(Number(h['points'] ?? 0), userId).toBe(want.points);
      expect(Number(h['orders_without_value'] ?? 0), userId).toBe(want.noValue);
    }
    const pending = (await redis.xpending(KEYS.events, DEFAULT_GROUP)) as [number];
    expect(Number(pending[0])).toBe(0);
  }, 60_000);

  it('takes a leap second and applies it as the last millisecond of that minute', async () => {
    const app = await serve();
    const now = Date.now();
    const day = new Date(now - 86_400_000).toISOString().slice(0, 10);
    const res = await post(app, {
      eventId: 'leap',
      type: 'click',
      userId: 'u1',
      storeId: 'store-0',
      at: `${day}T23:59:60Z`,
    });
    expect(res.statusCode).toBe(202);
    const stats = await runStreamJob({ redis, consumer: 'c', untilIdle: true, context });
    expect(stats).toMatchObject({ applied: 1, deadLettered: 0 });
    expect(await redis.hget(KEYS.onlineUser('u1'), 'last_event_at')).toBe(
      String(Date.parse(`${day}T23:59:59.999Z`)),
    );
  });

  it('refuses the leap second of 2026-12-31 named in the bug report when it is in the future, naming `at`', async () => {
    const app = await serve();
    const res = await post(app, {
      eventId: 'leap-2026',
      type: 'click',
      userId: 'u1',
      storeId: 'store-0',
      at: new Date(Date.now() + 3_600_000).toISOString().slice(0, 10) + 'T23:59:60Z',
    });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'VALIDATION', field: 'at' });
  });

  it('counts an order without value as an order of unknown value: no spend, no points', async () => {
    const app = await serve();
    const at = new Date().toISOString();
    const base = { type: 'order', userId: 'u2', storeId: 'store-0', at, itemIds: ['drink-1'] };
    expect((await post(app, { ...base, eventId: 'o1', value: 5 })).statusCode).toBe(202);
    const res = await post(app, { ...base, eventId: 'o2' });
    expect(res.statusCode).toBe(202);
    await runStreamJob({ redis, consumer: 'c', untilIdle: true, context });
    const h = await redis.hgetall(KEYS.onlineUser('u2'));
    expect(h).toMatchObject({ orders: '2', spend: '5', points: '50', orders_without_value: '1' });
    // The last order's value is unknown, not the previous order's.
    expect(h['last_order_value']).toBeUndefined();
    expect(Number(await redis.hget(KEYS.storeQueue('store-0'), 'orders_total'))).toBe(2);
    // A conversion for the experiment, adding no value.
    const metrics = (await app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/crema_experiment_conversions_total\{[^}]*\} 2/);
    expect(metrics).toMatch(/crema_experiment_conversion_value_dollars_total\{[^}]*\} 5\n/);
  });
});

describe('entries the stream job cannot apply', () => {
  it('are dead-lettered with the reason and counted apart from applied ones, never lost or blocking', async () => {
    await ensureGroup(redis, DEFAULT_GROUP);
    const at = new Date().toISOString();
    const good = ['eventId', 'g1', 'type', 'click', 'userId', 'u1', 'storeId', 'store-0', 'at', at];
    await redis.xadd(KEYS.events, '*', ...good);
    const leap = await redis.xadd(KEYS.events, '*', ...good.slice(0, 8), 'at', '2026-11-30T12:59:60Z');
    const json = await redis.xadd(KEYS.events, '*', ...good.slice(2), 'eventId', 'b2', 'itemIds', '[broken');
    await redis.xadd(KEYS.events, '*', ...good.slice(2), 'eventId', 'g2');
    const stats = await runStreamJob({ redis, consumer: 'c', untilIdle: true, context });
    expect(stats).toMatchObject({ applied: 2, deadLettered: 2 });
    const dead = await redis.xrange(KEYS.eventsDeadLetter, '-', '+');
    expect(dead.map(([, f]) => f[f.indexOf('sourceId') + 1])).toEqual([leap, json]);
    expect(dead[0]![1][dead[0]![1].indexOf('reason') + 1]).toMatch(/at/);
    expect(JSON.parse(dead[1]![1][dead[1]![1].indexOf('fields') + 1] as string)).toContain('[broken');
    const pending = (await redis.xpending(KEYS.events, DEFAULT_GROUP)) as [number];
    expect(Number(pending[0])).toBe(0);
  });
});

describe('stream trimming', () => {
  const click = (i: number) => ({
    eventId: `t${i}`,
    type: 'click',
    userId: `u${i % 7}`,
    storeId: 'store-0',
    at: new Date().toISOString(),
  });

  it('never removes unread entries: with the job stopped serving refuses at the cap (503), and the job catches up and trims', async () => {
    // The stream job's group exists, but the job is stopped.
    await ensureGroup(redis, DEFAULT_GROUP);
    const app = await serve(300);
    const ids: string[] = [];
    let firstRefused = -1;
    for (let i = 0; i < 450; i++) {
      const res = await post(app, click(i));
      if (res.statusCode === 202) ids.push(res.json().streamId);
      else {
        if (firstRefused < 0) firstRefused = i;
        expect(res.statusCode).toBe(503);
        expect(res.json().code).toBe('EVENTS_STREAM_FULL');
        expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
      }
    }
    // Every accepted entry is still there, unread.
    const onStream = (await redis.xrange(KEYS.events, '-', '+')).map(([id]) => id);
    expect(onStream).toEqual(ids);
    expect(firstRefused).toBe(300);
    const metrics = (await app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/crema_events_refused_total\{[^}]*reason="stream_full"[^}]*\} 150/);

    // The job resumes: everything is applied, and the processed entries are trimmed.
    const stats = await runStreamJob({ redis, consumer: 'c', untilIdle: true, context });
    expect(stats).toMatchObject({ applied: 300, deadLettered: 0 });
    expect(await redis.xlen(KEYS.events)).toBe(0);
    // The refused events are taken once the clients retry.
    for (let i = 300; i < 450; i++) expect((await post(app, click(i))).statusCode).toBe(202);
    const again = await runStreamJob({ redis, consumer: 'c', untilIdle: true, context });
    expect(again.applied).toBe(150);
    expect(await redis.xlen(KEYS.events)).toBe(0);
    let clicks = 0;
    for (let u = 0; u < 7; u++) clicks += Number(await redis.hget(KEYS.onlineUser(`u${u}`), 'events_click'));
    expect(clicks).toBe(450);
  }, 60_000);
});
