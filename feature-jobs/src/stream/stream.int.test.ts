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
import { DEFAULT_GROUP, runStreamJob } from './consumer.js';

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
});
