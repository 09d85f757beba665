/**
 * A Redis Cluster primary SIGKILLed under load, with real processes: the batch job (CLI)
 * publishes features on the cluster, a serving process (server.ts, REDIS_URL = the seeds)
 * answers recommendations and takes events, and the stream job (CLI) applies them. The killed
 * primary holds the events stream and a third of the user blobs. Its replica's link breaks
 * 600 ms before the kill, so the primary dies holding writes no replica has; the replica is
 * then promoted (cluster-node-timeout 1000 ms) and the killed node is started again as a
 * replica once that happened, as a restarted pod would be. Clients retry an event until it is
 * answered 2xx. With CREMA_REDIS_WAIT_REPLICAS=0 (no WAIT) the same run lost 44 of 482
 * acknowledged events; with the default (1) it loses none.
 *
 * What must hold: no acknowledged event is lost or stored twice, each takes effect exactly
 * once, and recommendations never fail (they fall back while the slot is away). The test
 * prints what it measured ([failover] lines): failover time, events posted / acknowledged /
 * applied / lost, recommendation answers by outcome, and the latency WAIT adds to events.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS } from '../../contracts/features.js';
import { parseRedisTarget, type RedisClient } from '../../contracts/redis.js';
import { startRedisCluster, type RedisCluster } from '../../hack/testenv/redis-cluster.js';
import { Dataset, generateDataset } from '../../feature-jobs/src/generate/dataset.js';
import { build, createModelStore } from './app.js';
import { createServingClient } from './features/redis.js';
import type { ModelStore } from './model/store.js';
import { writeModel } from '../test/fixtures.js';

let dir: string;
let cluster: RedisCluster;
let admin: Cluster;
let ds: Dataset;
let model: { uri: string };
const children: ChildProcess[] = [];
const USERS = 1000;

function measure(what: string, data: object): void {
  console.error(`[failover] ${what} ${JSON.stringify(data)}`);
}

/** Starts a command with tsx; resolves its output once it exits. */
function run(script: string, args: string[], env: Record<string, string> = {}) {
  const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const done = new Promise<{ code: number | null; out: () => string }>((r) =>
    proc.once('exit', (code) => r({ code, out: () => out })),
  );
  return { proc, done, out: () => out };
}

/** Starts server.ts; resolves with its port once it listens. */
async function startServing(env: Record<string, string>): Promise<{ proc: ChildProcess; port: number }> {
  const s = run('serving/src/server.ts', [], { HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env });
  const deadline = Date.now() + 90_000;
  for (;;) {
    const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(s.out());
    if (m) return { proc: s.proc, port: Number(m[1]) };
    if (s.proc.exitCode !== null) throw new Error(`server.ts exited: ${s.out()}`);
    if (Date.now() > deadline) throw new Error(`server.ts did not listen: ${s.out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-failover-'));
  cluster = await startRedisCluster({ nodeTimeoutMs: 1000, log: () => undefined });
  admin = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
  admin.on('error', () => undefined);
  generateDataset({ seed: 9, users: USERS, stores: 6, start: '2026-10-01', days: 4 }, join(dir, 'ds'));
  ds = Dataset.open(join(dir, 'ds'));
  // The batch job as a user runs it, against the seed list.
  const features = run('feature-jobs/src/cli.ts', [
    'features',
    '--data',
    join(dir, 'ds'),
    '--redis',
    cluster.seeds,
  ]);
  const f = await features.done;
  expect(f.code, f.out()).toBe(0);
  expect(await admin.get(KEYS.current)).toBeTruthy();
  model = await writeModel({ dir, file: 'ranker' });
}, 180_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  admin?.disconnect();
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Event times start two hours back. */
const T0 = Date.now() - 2 * 3_600_000;
let seq = 0;
function newEvent(users = 'u') {
  const i = seq++;
  const type = (['impression', 'click', 'add_to_cart', 'order'] as const)[i % 4]!;
  return {
    eventId: `fo-${i}`,
    type,
    userId: `${users}${(i * 7919) % USERS}`,
    storeId: ds.stores[i % ds.stores.length]!.id,
    // Within serving's event window (the dedup TTL back, minutes ahead).
    at: new Date(T0 + i * 100).toISOString(),
    ...(type === 'order' ? { value: 4.5, itemIds: [ds.catalog.items[i % 10]!.id] } : {}),
  };
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : NaN;
}

describe('Redis Cluster failover', () => {
  it('measures what WAIT for one replica adds to an event (in-process, same cluster, every event 202)', async () => {
    const target = parseRedisTarget(cluster.seeds);
    const models: ModelStore = createModelStore();
    const apps = new Map<number, FastifyInstance>();
    const clients: RedisClient[] = [];
    const one = new Map<number, number[]>([
      [0, []],
      [1, []],
    ]);
    const rate = new Map<number, number[]>([
      [0, []],
      [1, []],
    ]);
    try {
      for (const replicas of [0, 1]) {
        const redis = createServingClient(target);
        const eventRedis = createServingClient(target, { commandTimeoutMs: 2000 });
        clients.push(redis, eventRedis);
        const app = await build({
          redis,
          eventRedis,
          eventDurability: { replicas, timeoutMs: 100 },
          models,
          // Admission control is not measured here: 32 events in flight on a shared box must not be shed.
          protection: { latencyTargetMs: 0, maxQueueMs: 0, maxEventLoopDelayMs: 0 },
        });
        await app.ready();
        apps.set(replicas, app);
      }
      const post = (replicas: number) =>
        apps.get(replicas)!.inject({ method: 'POST', url: '/v1/events', payload: newEvent('lat') });
      // Rounds alternate between the two, so machine noise falls on both alike.
      for (let round = 0; round < 6; round++) {
        for (const replicas of [0, 1]) {
          for (let i = 0; i < 300; i++) {
            const t0 = performance.now();
            const r = await post(replicas);
            if (round > 0) one.get(replicas)!.push(performance.now() - t0);
            expect(r.statusCode).toBe(202);
          }
          // 32 in flight: one WAIT per batch of events (group commit).
          const t0 = performance.now();
          let sent = 0;
          await Promise.all(
            Array.from({ length: 32 }, async () => {
              while (sent < 1000) {
                sent++;
                expect((await post(replicas)).statusCode).toBe(202);
              }
            }),
          );
          if (round > 0) rate.get(replicas)!.push(1000 / ((performance.now() - t0) / 1000));
        }
      }
    } finally {
      for (const app of apps.values()) await app.close();
      for (const c of clients) c.disconnect();
      models.close();
    }
    const summary = (replicas: number) => ({
      sequentialP50ms: +percentile(one.get(replicas)!, 0.5).toFixed(3),
      sequentialP99ms: +percentile(one.get(replicas)!, 0.99).toFixed(3),
      eventsPerSecondWith32InFlight: Math.round(percentile(rate.get(replicas)!, 0.5)),
    });
    measure('event latency without and with WAIT 1', { replicas0: summary(0), replicas1: summary(1) });
  }, 180_000);

  it('loses no acknowledged event and never fails a recommendation while a primary is killed and replaced', async () => {
    // The latency test's events (other users) are not part of this run; an audit consumer group
    // that reads nothing keeps the stream job from trimming (it trims what every group has
    // processed), so the stream can be checked afterwards.
    await admin.xtrim(KEYS.events, 'MAXLEN', 0);
    await admin.xgroup('CREATE', KEYS.events, 'audit', '$', 'MKSTREAM');
    const serving = await startServing({
      REDIS_URL: cluster.seeds,
      CREMA_RANKING_MODEL_URI: model.uri,
      // Load shedding is not under test: this 2-core box runs six Redis nodes, the stream job
      // and the load generator beside serving, and its answers take ~20 ms at the median before
      // any failover, above the adaptive limit's 12.5 ms target (with the shipped settings it
      // shed 2 of 118 recommendations before the kill, 32 of 224 during the failover).
      CREMA_MAX_EVENT_LOOP_DELAY_MS: '1000',
      CREMA_LATENCY_TARGET_MS: '0',
      CREMA_MAX_QUEUE_MS: '0',
    });
    const base = `http://127.0.0.1:${serving.port}`;
    const stream = run('feature-jobs/src/cli.ts', [
      'stream',
      '--redis',
      cluster.seeds,
      '--consumer',
      'c1',
      '--claim-idle-ms',
      '3000',
    ]);

    // Warm up (JIT, the model, connections) until answers are quick, so the phase before the
    // kill is the steady state the failover is compared with.
    for (let ok = 0, i = 0; ok < 20; i++) {
      if (i > 600) throw new Error('serving never warmed up');
      const t0 = Date.now();
      const r = await fetch(`${base}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          userId: `u${i}`,
          storeId: ds.stores[0]!.id,
          context: { time: '2026-10-05T08:30:00Z' },
        }),
      });
      const body = (await r.json()) as { fallback?: boolean };
      ok = r.status === 200 && !body.fallback && Date.now() - t0 < 50 ? ok + 1 : 0;
    }
    const victim = await cluster.primaryOf(KEYS.events);
    const [heir] = await cluster.replicasOf(victim);
    const t = {
      start: Date.now(),
      lagging: 0,
      kill: 0,
      promoted: 0,
      restarted: 0,
      healthy: 0,
      writesBack: 0,
    };
    const phase = () => (!t.lagging ? 'before' : !t.healthy ? 'failover' : 'after');

    // Events: each client retries its event until it is answered 2xx.
    type Sent = ReturnType<typeof newEvent>;
    const acked: Sent[] = [];
    const posted: Sent[] = [];
    const eventStatus: Record<string, Record<string, number>> = { before: {}, failover: {}, after: {} };
    const eventLatency: number[] = [];
    let stop = false;
    const count = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
    const poster = async () => {
      while (!stop) {
        const e = newEvent();
        posted.push(e);
        for (;;) {
          const began = Date.now();
          const p = phase();
          let status = 'network-error';
          try {
            const r = await fetch(`${base}/v1/events`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify(e),
              signal: AbortSignal.timeout(5000),
            });
            const body = (await r.json()) as { code?: string };
            status = r.status < 300 ? String(r.status) : `${r.status} ${body.code}`;
          } catch {
            // counted below as a network error; retried
          }
          count(eventStatus[p]!, status);
          if (status === '202' || status === '200') {
            if (p === 'before') eventLatency.push(Date.now() - began);
            if (t.kill && began > t.kill && !t.writesBack) t.writesBack = Date.now();
            acked.push(e);
            break;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    // Recommendations for random users with features.
    const recs: Record<string, Record<string, number>> = { before: {}, failover: {}, after: {} };
    const recommender = async () => {
      let i = 0;
      while (!stop) {
        const p = phase();
        let outcome = 'error';
        try {
          const r = await fetch(`${base}/v1/recommendations`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              userId: `u${(i++ * 104729) % USERS}`,
              storeId: ds.stores[i % ds.stores.length]!.id,
              context: { time: '2026-10-05T08:30:00Z' },
              limit: 5,
            }),
            signal: AbortSignal.timeout(5000),
          });
          const body = (await r.json()) as { fallback?: boolean; fallbackReason?: string; code?: string };
          if (r.status !== 200) outcome = `http-${r.status} ${body.code}`;
          else outcome = body.fallback ? `fallback:${body.fallbackReason}` : 'ok';
        } catch {
          outcome = 'network-error';
        }
        count(recs[p]!, outcome);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const workers = [
      ...Array.from({ length: 4 }, () => poster()),
      ...Array.from({ length: 2 }, () => recommender()),
    ];

    await new Promise((r) => setTimeout(r, 3000));
    // The worst case for asynchronous replication: the replica's link breaks (it is frozen,
    // well under the node timeout, and the primary drops the connection, so what follows is
    // never sent to it) and the primary dies 600 ms later with writes the replica never got.
    // Without WAIT those writes were acknowledged and are gone after the failover.
    heir!.pause();
    t.lagging = Date.now();
    const direct = new Redis(victim.port, '127.0.0.1');
    await direct.call('CLIENT', 'KILL', 'TYPE', 'replica');
    direct.disconnect();
    await new Promise((r) => setTimeout(r, 600));
    t.kill = Date.now();
    await victim.kill('SIGKILL');
    heir!.resume();
    // The replica takes over; the dead node comes back (as a restarted pod would) once it has.
    for (;;) {
      const view = await cluster.topology().catch(() => []);
      if (view.find((v) => v.id === heir!.id)?.flags.includes('master')) break;
      if (Date.now() - t.kill > 30_000) throw new Error('the replica was never promoted');
      await new Promise((r) => setTimeout(r, 50));
    }
    t.promoted = Date.now();
    await victim.start();
    t.restarted = Date.now();
    await cluster.waitHealthy(30_000);
    t.healthy = Date.now();
    await new Promise((r) => setTimeout(r, 3000));
    stop = true;
    await Promise.all(workers);

    // Every acknowledged event is on the stream once, and the stream job applies each once.
    const onStream = new Map<string, number>();
    for (const [, f] of await admin.xrange(KEYS.events, '-', '+')) {
      const id = f[f.indexOf('eventId') + 1]!;
      onStream.set(id, (onStream.get(id) ?? 0) + 1);
    }
    const lost = acked.filter((e) => !onStream.has(e.eventId));
    const twice = [...onStream.values()].filter((n) => n > 1).length;
    const want = new Map<string, number>();
    for (const e of acked) want.set(`${e.userId} ${e.type}`, (want.get(`${e.userId} ${e.type}`) ?? 0) + 1);
    let applied = 0;
    let over = 0;
    const appliedDeadline = Date.now() + 60_000;
    for (;;) {
      applied = 0;
      over = 0;
      for (const u of new Set(acked.map((e) => e.userId))) {
        const h = await admin.hgetall(KEYS.onlineUser(u));
        for (const type of ['impression', 'click', 'add_to_cart', 'order']) {
          const have = Number(h[`events_${type}`] ?? 0);
          const need = want.get(`${u} ${type}`) ?? 0;
          applied += Math.min(have, need);
          over += Math.max(0, have - need);
        }
      }
      if (applied === acked.length || Date.now() > appliedDeadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const ordersWanted = acked.filter((e) => e.type === 'order').length;
    let storeOrders = 0;
    for (const s of ds.stores)
      storeOrders += Number((await admin.hget(KEYS.storeQueue(s.id), 'orders_total')) ?? 0);
    stream.proc.kill('SIGTERM');
    const streamDone = await stream.done;
    serving.proc.kill('SIGTERM');

    measure('timeline (ms after the kill)', {
      promoted: t.promoted - t.kill,
      oldPrimaryRestarted: t.restarted - t.kill,
      clusterHealthy: t.healthy - t.kill,
      writesSucceedAgain: t.writesBack ? t.writesBack - t.kill : null,
    });
    measure('events', {
      posted: posted.length,
      acknowledged: acked.length,
      onStream: onStream.size,
      storedTwice: twice,
      applied,
      appliedTwice: over,
      lost: lost.length,
      storeOrders: { want: ordersWanted, have: storeOrders },
      answersByPhase: eventStatus,
      latencyBeforeKillMs: { p50: percentile(eventLatency, 0.5), p99: percentile(eventLatency, 0.99) },
    });
    measure('recommendations by phase', recs);
    measure('stream job', { exit: streamDone.code, log: streamDone.out().trim().split('\n').slice(-6) });

    expect(acked.length).toBeGreaterThan(100);
    expect(lost).toEqual([]);
    expect(twice).toBe(0);
    expect(applied).toBe(acked.length);
    expect(over).toBe(0);
    expect(storeOrders).toBe(ordersWanted);
    // Writes came back once the replica took over and had a replica itself again.
    expect(t.writesBack).toBeGreaterThan(t.kill);
    expect(t.writesBack - t.kill).toBeLessThan(20_000);
    // Recommendations: always an answer, fallback-flagged while the slot was away.
    for (const p of ['before', 'failover', 'after'] as const) {
      const bad = Object.entries(recs[p]!).filter(([k]) => !(k === 'ok' || k.startsWith('fallback:')));
      expect(bad, p).toEqual([]);
      expect(recs[p]!['ok'] ?? 0, p).toBeGreaterThan(0);
    }
    expect(Object.keys(recs['failover']!).some((k) => k.startsWith('fallback:'))).toBe(true);
    expect(streamDone.code).toBe(0);
  }, 240_000);
});
