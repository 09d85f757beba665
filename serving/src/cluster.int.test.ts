/**
 * Serving and the jobs against a real Redis Cluster (3 primaries x 1 replica, hack/testenv/
 * redis-cluster.ts): the batch job publishes a version whose user blobs spread over every
 * primary and serving answers each user from their own features; events are appended once and
 * answered only once a replica has them (503 while the replica is frozen, the retry stored
 * once); the stream job applies each event once across nodes; erase reaches every primary.
 * Failover under load: failover.int.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, encodeUserFeatures } from '../../contracts/features.js';
import { hashSlot, parseRedisTarget, type RedisClient } from '../../contracts/redis.js';
import { startRedisCluster, type RedisCluster } from '../../hack/testenv/redis-cluster.js';
import { computeVersionId, publishFeatures } from '../../feature-jobs/src/batch/publish.js';
import { computeSnapshot } from '../../feature-jobs/src/batch/snapshot.js';
import { connectJobRedis } from '../../feature-jobs/src/common/redis.js';
import { Dataset, generateDataset } from '../../feature-jobs/src/generate/dataset.js';
import { DEFAULT_GROUP, runStreamJob } from '../../feature-jobs/src/stream/consumer.js';
import { build, createModelStore } from './app.js';
import { createServingClient } from './features/redis.js';
import type { ModelStore } from './model/store.js';
import { writeModel } from '../test/fixtures.js';

let dir: string;
let cluster: RedisCluster;
/** A plain cluster client with an offline queue, for checking. */
let admin: Cluster;
let jobs: RedisClient;
let ds: Dataset;
let version: string;
let app: FastifyInstance;
let models: ModelStore;
const clients: RedisClient[] = [];
const TOKEN = 'cluster-token';

/** Users with a feature blob in the published version, by the primary port holding it. */
const usersByPrimary = new Map<number, string[]>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-cluster-'));
  cluster = await startRedisCluster({ log: () => undefined });
  const target = parseRedisTarget(cluster.seeds);
  admin = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
  admin.on('error', () => undefined);

  generateDataset({ seed: 3, users: 600, stores: 6, start: '2026-10-01', days: 4 }, join(dir, 'ds'));
  ds = Dataset.open(join(dir, 'ds'));
  const snapshot = computeSnapshot(ds, '2026-10-05', 30, { index: 0, count: 1 });
  version = computeVersionId({
    datasetHash: ds.manifest.hash,
    asOf: snapshot.asOf,
    windowDays: 30,
    shards: 1,
  });
  jobs = await connectJobRedis(target);
  const published = await publishFeatures({
    redis: jobs,
    version,
    shard: { index: 0, count: 1 },
    snapshot,
    catalog: ds.catalog,
    stores: ds.stores,
    batchSize: 100,
  });
  expect(published).toMatchObject({ switched: true });

  // Where each user's blob landed, asked from the cluster itself (not from our slot function).
  const slotOwner = new Map<number, number>();
  for (const [from, to, owner] of await admin.cluster('SLOTS'))
    for (let s = from; s <= to; s++) slotOwner.set(s, owner![1]);
  for (let u = 0; u < 600; u++) {
    const key = KEYS.user(version, `u${u}`);
    if (!(await admin.exists(key))) continue;
    const slot = Number(await admin.call('CLUSTER', 'KEYSLOT', key));
    expect(hashSlot(key)).toBe(slot);
    const port = slotOwner.get(slot)!;
    usersByPrimary.set(port, [...(usersByPrimary.get(port) ?? []), `u${u}`]);
  }

  const model = await writeModel({ dir, file: 'ranker' });
  models = createModelStore();
  await models.load('drink-ranking', model.uri);
  const redis = createServingClient(target);
  const eventRedis = createServingClient(target, { commandTimeoutMs: 2000 });
  for (const c of [redis, eventRedis]) {
    c.on('error', () => undefined);
    clients.push(c);
  }
  app = await build({
    redis,
    eventRedis,
    eventDurability: { replicas: 1, timeoutMs: 100 },
    models,
    adminToken: TOKEN,
    refreshIntervalMs: 200,
    featureDeadlineMs: 1000,
  });
  await app.ready();
}, 180_000);

afterAll(async () => {
  await app?.close();
  models?.close();
  for (const c of clients) c.disconnect();
  jobs?.disconnect();
  admin?.disconnect();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

const recommend = (userId: string) =>
  app.inject({
    method: 'POST',
    url: '/v1/recommendations',
    payload: { userId, storeId: ds.stores[0]!.id, context: { time: '2026-10-05T08:30:00Z' }, limit: 5 },
  });

/** Event times start two hours back. */
const T0 = Date.now() - 2 * 3_600_000;
let seq = 0;
const event = (type: string, userId: string, extra: Record<string, unknown> = {}) => ({
  eventId: `ev-${Date.now()}-${seq++}`,
  type,
  userId,
  storeId: ds.stores[seq % ds.stores.length]!.id,
  // Within serving's event window (the dedup TTL back, minutes ahead).
  at: new Date(T0 + seq * 1000).toISOString(),
  ...(type === 'order' ? { value: 5.5, itemIds: [ds.catalog.items[0]!.id] } : {}),
  ...extra,
});
const post = (payload: object) => app.inject({ method: 'POST', url: '/v1/events', payload });

describe('on a Redis Cluster', () => {
  it('publishes user blobs on every primary, and serving answers each user from their own, 30 at a time', async () => {
    expect(usersByPrimary.size).toBe(3);
    for (const users of usersByPrimary.values()) expect(users.length).toBeGreaterThan(20);
    // Concurrent requests: their blobs are read in one turn, spread over three nodes.
    const sample = [...usersByPrimary.values()].flatMap((u) => u.slice(0, 10));
    const answers = await Promise.all(sample.map((u) => recommend(u)));
    for (const a of answers) {
      expect(a.statusCode).toBe(200);
      expect(a.json()).toMatchObject({ fallback: false, personalization: 'user', featureVersion: version });
    }
    // A user without a blob is a cold start, not a failure.
    expect((await recommend('nobody')).json()).toMatchObject({ fallback: false, personalization: 'segment' });
  });

  it('appends an event once and answers only after a replica has it; a frozen replica means 503, and the retry is stored once', async () => {
    const e = event('click', 'u1');
    const first = await post(e);
    expect(first.statusCode).toBe(202);
    expect((await post(e)).json()).toMatchObject({ duplicate: true, streamId: first.json().streamId });

    const primary = await cluster.primaryOf(KEYS.events);
    const [replica] = await cluster.replicasOf(primary);
    const frozen = event('order', 'u2');
    replica!.pause();
    try {
      const t0 = performance.now();
      const r = await post(frozen);
      expect(r.statusCode).toBe(503);
      expect(r.headers['retry-after']).toBe('1');
      expect(performance.now() - t0).toBeLessThan(1000);
      // Until the replica answers again, events are refused at once instead of each waiting
      // out its WAIT (probing every 200 ms).
      const t1 = performance.now();
      expect((await post(frozen)).statusCode).toBe(503);
      expect(performance.now() - t1).toBeLessThan(50);
    } finally {
      replica!.resume();
    }
    // The client retries after Retry-After: stored once, now confirmed (the duplicate path
    // waits for the replica too).
    await new Promise((r) => setTimeout(r, 1000));
    const retried = await post(frozen);
    expect(retried.statusCode).toBe(200);
    expect(retried.json()).toMatchObject({ duplicate: true });
    const onStream = (await admin.xrange(KEYS.events, '-', '+')).filter(([, f]) =>
      f.includes(frozen.eventId),
    );
    expect(onStream).toHaveLength(1);
  });

  it('the stream job applies each event once, whichever nodes hold the user and the store', async () => {
    const users = [...usersByPrimary.values()].map((u) => u[0]!);
    const sent: { userId: string; type: string; storeId: string }[] = [];
    for (let i = 0; i < 60; i++) {
      const e = event(i % 2 === 0 ? 'order' : 'add_to_cart', users[i % users.length]!);
      expect([200, 202]).toContain((await post(e)).statusCode);
      sent.push(e);
    }
    // A second consumer group that reads nothing keeps the stream job from trimming the entries
    // (it trims what every group has processed), so they can be delivered again below.
    await admin.xgroup('CREATE', KEYS.events, 'hold', '0');
    const stats = await runStreamJob({
      redis: jobs,
      consumer: 'c1',
      untilIdle: true,
      durability: { replicas: 1, timeoutMs: 500 },
    });
    // Two events were posted by the test above; nothing failed or was malformed.
    expect(stats).toMatchObject({ applied: 62, duplicates: 0, deadLettered: 0, retries: 0 });
    for (const u of users) {
      const h = await admin.hgetall(KEYS.onlineUser(u));
      const mine = sent.filter((e) => e.userId === u);
      expect(Number(h['events_order'] ?? 0)).toBe(mine.filter((e) => e.type === 'order').length);
      expect(Number(h['events_add_to_cart'] ?? 0)).toBe(mine.filter((e) => e.type === 'add_to_cart').length);
    }
    const orders = sent.filter((e) => e.type === 'order');
    let storeOrders = 0;
    for (const s of ds.stores)
      storeOrders += Number((await admin.hget(KEYS.storeQueue(s.id), 'orders_total')) ?? 0);
    expect(storeOrders).toBe(orders.length + 1); // + the frozen-replica order above
    // Delivered again (a redelivery after a crash): no second effect.
    await admin.xgroup('SETID', KEYS.events, DEFAULT_GROUP, '0');
    const again = await runStreamJob({ redis: jobs, consumer: 'c2', untilIdle: true });
    expect(again).toMatchObject({ applied: 0, duplicates: 62 });
    const h = await admin.hgetall(KEYS.onlineUser(users[0]!));
    expect(Number(h['events_order'])).toBe(
      sent.filter((e) => e.userId === users[0] && e.type === 'order').length,
    );
  });

  it("erases the user's blobs on every primary, online state and events, and nobody else's", async () => {
    const victim = 'erase-me';
    // Two old versions whose key for the victim lands on each of the three primaries.
    const perPrimary = new Map<number, string[]>();
    for (let i = 0; [...perPrimary.values()].filter((v) => v.length >= 2).length < 3; i++) {
      const v = `old${i}`;
      const owner = (await cluster.primaryOf(KEYS.user(v, victim))).port;
      const list = perPrimary.get(owner) ?? [];
      if (list.length < 2) perPrimary.set(owner, [...list, v]);
    }
    const versions = [...perPrimary.values()].flat();
    for (const v of versions) {
      await admin.set(KEYS.user(v, victim), encodeUserFeatures(new Float32Array(21)));
      await admin.set(KEYS.user(v, 'bystander'), encodeUserFeatures(new Float32Array(21)));
    }
    await admin.hset(KEYS.onlineUser(victim), { points: '10' });
    const order = event('order', victim);
    expect((await post(order)).statusCode).toBe(202);
    await runStreamJob({ redis: jobs, consumer: 'c3', untilIdle: true });
    expect(await admin.exists(KEYS.eventApplied(victim, order.eventId))).toBe(1);

    const res = await app.inject({
      method: 'DELETE',
      url: `/v1/users/${victim}`,
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().erased).toMatchObject({
      featureKeys: versions.length,
      onlineKeys: 1,
      streamEntries: 1,
      eventMarkers: 3, // seen, applied to the user, applied to the store
    });
    const primaries = (await cluster.topology()).filter((n) => n.flags.includes('master'));
    expect(primaries).toHaveLength(3);
    for (const p of primaries) {
      const r = new Redis(p.port, '127.0.0.1');
      expect(await r.keys(`*${victim}*`)).toEqual([]);
      expect(await r.keys(`*${order.eventId}*`)).toEqual([]);
      r.disconnect();
    }
    for (const v of versions) expect(await admin.exists(KEYS.user(v, 'bystander'))).toBe(1);
  });
});
