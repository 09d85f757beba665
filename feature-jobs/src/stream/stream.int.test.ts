/**
 * The stream job against a real redis-server: a consumer SIGKILLed mid-stream, a second one
 * claims its pending entries and finishes; every event takes effect exactly once.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KEYS } from '../../../contracts/features.js';
import { startRedis, type RedisServer } from '../../../hack/testenv/environment.js';
import { drainQueue } from '../common/queue.js';
import { buildApplyContext } from './apply.js';
import { DEFAULT_GROUP, ensureGroup, runStreamJob, trimProcessedEntries } from './consumer.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-stream-'));
let server: RedisServer;
let redis: Redis;

beforeAll(async () => {
  ({ redis: server } = await startRedis(dir));
  redis = new Redis(server.url);
});
afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  await redis.flushall();
  // The consumers read item kinds and store capacities from the current batch version.
  await redis.set(KEYS.current, 'test');
  await redis.set(KEYS.catalog('test'), JSON.stringify(catalog));
  await redis.hset(KEYS.stores('test'), Object.fromEntries(stores.map((s) => [s.id, JSON.stringify(s)])));
});

const catalog = {
  items: [
    {
      id: 'd0',
      index: 0,
      name: 'Latte',
      kind: 'drink' as const,
      category: 'hot' as const,
      price: 5,
      prepComplexity: 3,
    },
    {
      id: 'a1',
      index: 1,
      name: 'Oat',
      kind: 'addon' as const,
      category: 'addon' as const,
      price: 0.5,
      prepComplexity: 1,
    },
  ],
};
const stores = [
  { id: 's0', region: 'r', timezone: 'UTC', capacityPerHour: 60, unavailable: [] },
  { id: 's1', region: 'r', timezone: 'UTC', capacityPerHour: 90, unavailable: [] },
];
const context = buildApplyContext(catalog, stores);

interface Ev {
  eventId: string;
  type: string;
  userId: string;
  storeId: string;
  at: string;
  itemIds: string;
  value: string;
}

function events(n: number): Ev[] {
  const t0 = Date.parse('2026-11-01T07:00:00Z');
  return Array.from({ length: n }, (_, i) => ({
    eventId: `e${i}`,
    type: i % 5 === 4 ? 'impression' : 'order',
    userId: `u${i % 37}`,
    storeId: `s${i % 2}`,
    at: new Date(t0 + i * 7_000).toISOString(),
    itemIds: i % 3 === 0 ? 'd0,a1' : 'd0',
    value: String(5 + (i % 3 === 0 ? 0.5 : 0)),
  }));
}

async function append(evs: readonly Ev[]) {
  const p = redis.pipeline();
  for (const e of evs) p.xadd(KEYS.events, '*', ...Object.entries(e).flat());
  await p.exec();
}

/** What the online state must be after every event applied exactly once. */
function expected(evs: readonly Ev[]) {
  const orders = new Map<string, number>();
  const points = new Map<string, number>();
  const storeOrders = new Map<string, number>();
  const q = new Map<string, { q: number; at: number }>();
  for (const e of evs) {
    if (e.type !== 'order') continue;
    orders.set(e.userId, (orders.get(e.userId) ?? 0) + 1);
    points.set(e.userId, (points.get(e.userId) ?? 0) + Math.floor(Number(e.value) * 10));
    storeOrders.set(e.storeId, (storeOrders.get(e.storeId) ?? 0) + 1);
    const cap = stores.find((s) => s.id === e.storeId)!.capacityPerHour;
    const prev = q.get(e.storeId) ?? { q: 0, at: 0 };
    const at = Date.parse(e.at);
    q.set(e.storeId, { q: drainQueue(prev.q, prev.at, at, cap) + 1, at });
  }
  return { orders, points, storeOrders, q };
}

async function checkExactlyOnce(evs: readonly Ev[]) {
  const want = expected(evs);
  for (const [u, n] of want.orders) {
    const h = await redis.hgetall(KEYS.onlineUser(u));
    expect(Number(h['orders']), u).toBe(n);
    expect(Number(h['points']), u).toBe(want.points.get(u));
  }
  for (const [s, n] of want.storeOrders) {
    const h = await redis.hgetall(KEYS.storeQueue(s));
    expect(Number(h['orders_total']), s).toBe(n);
    // The live queue is the same drain model the pickup model trains on.
    expect(Number(h['queue'])).toBeCloseTo(want.q.get(s)!.q, 6);
  }
  const pending = (await redis.xpending(KEYS.events, DEFAULT_GROUP)) as [number];
  expect(Number(pending[0])).toBe(0);
}

describe('stream job', () => {
  it('applies each event exactly once when a consumer is SIGKILLed and another claims its pending entries', async () => {
    const evs = events(3000);
    await append(evs);
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'feature-jobs/src/cli.ts',
        'stream',
        '--redis',
        server.url,
        '--consumer',
        'doomed',
        '--count',
        '7',
      ],
      { stdio: 'ignore' },
    );
    // Kill it mid-stream: after some events were applied, long before all were.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const info = (await redis.xinfo('GROUPS', KEYS.events).catch(() => [])) as unknown[][];
      const g = info[0] as unknown[] | undefined;
      const read = g ? Number(g[g.indexOf('entries-read') + 1]) : 0;
      if (read >= 300) break;
      if (Date.now() > deadline) throw new Error('doomed consumer never started');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const applied = (await redis.keys(KEYS.eventApplied('*', '*'))).length;
    expect(applied).toBeGreaterThan(0);
    expect(applied).toBeLessThan(evs.length);

    // A second consumer dies right after reading (delivered, never applied): its entries stay pending.
    await redis.xreadgroup('GROUP', DEFAULT_GROUP, 'ghost', 'COUNT', 5, 'STREAMS', KEYS.events, '>');
    // More events arrive while no consumer runs; then a survivor takes over.
    const late = events(3200).slice(3000);
    await append(late);
    const stats = await runStreamJob({ redis, consumer: 'survivor', claimIdleMs: 200, untilIdle: true });
    expect(stats.applied + applied).toBe(3200);
    expect(stats.claimed).toBeGreaterThanOrEqual(5);
    await checkExactlyOnce([...evs, ...late]);
    // Everything was processed, so nothing is left on the stream.
    expect(await redis.xlen(KEYS.events)).toBe(0);
  }, 60_000);

  it('a redelivered entry or a re-appended event id has no second effect', async () => {
    const evs = events(10);
    await append(evs);
    await runStreamJob({ redis, consumer: 'a', untilIdle: true, context });
    // The same event id on the stream again (e.g. an ingest retry that slipped past dedup).
    await append([evs[0]!, evs[1]!]);
    const again = await runStreamJob({ redis, consumer: 'b', untilIdle: true, context });
    expect(again).toMatchObject({ applied: 0, duplicates: 2 });
    await checkExactlyOnce(evs);
    expect(Number(await redis.hget(KEYS.onlineUser('u0'), 'session_events'))).toBeGreaterThan(0);
  });

  it('trims only entries every consumer group has processed: never one pending or undelivered in any group', async () => {
    const evs = events(100);
    await ensureGroup(redis, DEFAULT_GROUP);
    // A second group (e.g. a replay or an audit consumer) lags behind the stream job.
    await ensureGroup(redis, 'replay');
    await append(evs);
    const ids = (await redis.xrange(KEYS.events, '-', '+')).map(([id]) => id);
    await redis.xreadgroup('GROUP', 'replay', 'r1', 'COUNT', 30, 'STREAMS', KEYS.events, '>');
    await redis.xack(KEYS.events, 'replay', ...ids.slice(10, 30));

    const stats = await runStreamJob({ redis, consumer: 'a', untilIdle: true, context });
    expect(stats).toMatchObject({ applied: 100, trimmed: 0 });
    await checkExactlyOnce(evs);
    // replay still has ids[0..9] pending: everything stays.
    expect(await redis.xlen(KEYS.events)).toBe(100);
    await redis.xack(KEYS.events, 'replay', ...ids.slice(0, 10));
    // Now replay has processed ids[0..29] and not been delivered the rest.
    expect(await trimProcessedEntries(redis)).toBe(30);
    expect((await redis.xrange(KEYS.events, '-', '+', 'COUNT', 1))[0]![0]).toBe(ids[30]);
    await redis.xgroup('DESTROY', KEYS.events, 'replay');
    expect(await trimProcessedEntries(redis)).toBe(70);
    expect(await redis.xlen(KEYS.events)).toBe(0);
  });

  it('acknowledges an entry erased after delivery and counts it as deleted, not applied', async () => {
    await ensureGroup(redis, DEFAULT_GROUP);
    await append(events(3));
    const read = (await redis.xreadgroup(
      'GROUP',
      DEFAULT_GROUP,
      'x',
      'COUNT',
      3,
      'STREAMS',
      KEYS.events,
      '>',
    )) as [string, [string, string[]][]][];
    await redis.xdel(KEYS.events, read[0]![1][1]![0]);
    // The same consumer restarts: it re-reads its pending entries first.
    const stats = await runStreamJob({ redis, consumer: 'x', untilIdle: true, context });
    expect(stats).toMatchObject({ applied: 2, deleted: 1, deadLettered: 0 });
    expect(Number(((await redis.xpending(KEYS.events, DEFAULT_GROUP)) as [number])[0])).toBe(0);
  });
});
