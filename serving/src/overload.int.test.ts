/**
 * Overload, end to end: the real serving process with real Redis, hit by far more concurrent
 * requests than it can answer within the feature deadline (hundreds of connections, each sending
 * its next request as soon as it has an answer). What a client notices: the requests it lets in
 * are answered from the model (not the popularity fallback), and the excess gets 503 with
 * Retry-After at once. Before admission control, every one of them was let in (the in-flight
 * cap was 512), and most missed the deadline and got the fallback.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Pool } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startRedis } from '../../hack/testenv/environment.js';
import { rng, seedFeatures, syntheticUser, writeModel } from '../test/fixtures.js';

let dir: string;
let server: Awaited<ReturnType<typeof startRedis>>['redis'];
let proc: ChildProcess | undefined;
const procs: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-overload-'));
  server = (await startRedis(dir, () => undefined)).redis;
  const admin = new Redis(server.url);
  const r = rng(3);
  await seedFeatures(admin, {
    version: 'v1',
    users: Array.from({ length: 2000 }, (_, i) => ({ id: `u${i}`, features: syntheticUser(r, 150) })),
  });
  admin.disconnect();
});

afterAll(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

function start(env: Record<string, string>): Promise<number> {
  const p = spawn(process.execPath, ['--import', 'tsx', 'serving/src/server.ts'], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc = p;
  procs.push(p);
  let out = '';
  return new Promise((resolve, reject) => {
    p.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    p.once('exit', (code) => reject(new Error(`server.ts exited ${code}: ${out}`)));
  });
}

const body = (i: number) =>
  JSON.stringify({
    userId: `u${i % 2500}`,
    storeId: `store-${i % 3}`,
    context: { time: '2026-11-24T08:00:00Z' },
    limit: 5,
  });

it(
  'under overload, admitted requests are answered from the model and the excess gets 503 + Retry-After',
  { timeout: 90_000 },
  async () => {
    const model = await writeModel({ dir, file: 'ranker' });
    // Admission control is opt-in (docs/serving.md): this is what it does when turned on.
    const port = await start({
      REDIS_URL: server.url,
      CREMA_RANKING_MODEL_URI: model.uri,
      CREMA_LATENCY_TARGET_MS: '50',
      CREMA_MAX_QUEUE_MS: '25',
    });
    const url = `http://127.0.0.1:${port}`;
    const one = async (i: number) => {
      const r = await fetch(`${url}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body(i),
      });
      return { status: r.status, json: (await r.json()) as { fallback?: boolean; code?: string } };
    };
    // Warm: JIT, the inference thread, the feature snapshot.
    expect((await one(0)).json.fallback).toBe(false);
    for (let i = 0; i < 200; i++) await one(i);

    // 200 connections in a closed loop for 6 s: far more at once than can meet the 25 ms
    // feature deadline on any machine this runs on.
    const connections = 200;
    const pool = new Pool(url, { connections, pipelining: 1 });
    const seen = { model: 0, fallback: 0, shed: 0, shedWithoutRetryAfter: 0, other: 0 };
    const end = Date.now() + 6000;
    let i = 0;
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (Date.now() < end) {
          const res = await pool.request({
            path: '/v1/recommendations',
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: body(i++),
          });
          const json = (await res.body.json()) as { fallback?: boolean; code?: string };
          if (res.statusCode === 200) {
            if (json.fallback === false) seen.model++;
            else seen.fallback++;
          } else if (res.statusCode === 503 && json.code === 'OVERLOADED') {
            seen.shed++;
            if (res.headers['retry-after'] !== '1') seen.shedWithoutRetryAfter++;
          } else seen.other++;
        }
      }),
    );
    await pool.close();
    const admitted = seen.model + seen.fallback;
    const summary = JSON.stringify(seen);
    console.log(`overload: ${summary}`);
    // The excess is refused at once, with the contract's 503 + Retry-After...
    expect(seen.shed, summary).toBeGreaterThan(0);
    expect(seen.shedWithoutRetryAfter, summary).toBe(0);
    expect(seen.other, summary).toBe(0);
    // ...and what is let in is served properly. Margins are wide (a shared 2-core machine);
    // before admission control, the model answered 10-45 % of them on the same machine.
    expect(admitted, summary).toBeGreaterThanOrEqual(20);
    expect(seen.model / admitted, summary).toBeGreaterThanOrEqual(0.6);

    // The reason is on the shed metric.
    const metrics = await fetch(`${url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(
      /crema_requests_rejected_total\{[^}]*reason="(queue_time|concurrency_limit)"\} [1-9]/,
    );
    // Once the overload is over, requests are answered from the model again.
    let after: Awaited<ReturnType<typeof one>> | undefined;
    for (let k = 0; k < 50 && after?.json.fallback !== false; k++) {
      after = await one(k);
      if (after.json.fallback !== false) await new Promise((r) => setTimeout(r, 100));
    }
    expect(after?.json.fallback).toBe(false);
  },
);

it(
  'a process starved of CPU by its neighbours, at low load, answers late and refuses nothing',
  { timeout: 150_000 },
  async () => {
    // A busy node: the process runs 50 ms in every 300 (SIGSTOP/SIGCONT), so its timers are
    // late (event-loop delay far above the check's 20 ms here) while its own loop is mostly idle.
    // Refusing would not help: nothing is queued behind its own work. Every check is on.
    const model = await writeModel({ dir, file: 'ranker-starved' });
    const port = await start({
      REDIS_URL: server.url,
      CREMA_RANKING_MODEL_URI: model.uri,
      CREMA_MAX_EVENT_LOOP_DELAY_MS: '20',
      CREMA_LATENCY_TARGET_MS: '50',
      CREMA_MAX_QUEUE_MS: '25',
    });
    const starved = proc!;
    const url = `http://127.0.0.1:${port}`;
    const statuses: Record<string, number> = {};
    const pool = new Pool(url, { connections: 20 });
    const one = async (i: number) => {
      const res = await pool.request({
        path: '/v1/recommendations',
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body(i),
      });
      const json = (await res.body.json()) as { message?: string };
      const key = res.statusCode === 200 ? '200' : `${res.statusCode} ${json.message ?? ''}`;
      statuses[key] = (statuses[key] ?? 0) + 1;
    };
    await one(0);
    let running = true;
    const starve = (async () => {
      while (running) {
        starved.kill('SIGSTOP');
        await new Promise((r) => setTimeout(r, 250));
        starved.kill('SIGCONT');
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    // 20 requests a second for 4 s, open loop.
    const sent: Promise<void>[] = [];
    for (let i = 1; i <= 80; i++) {
      sent.push(one(i));
      await new Promise((r) => setTimeout(r, 50));
    }
    running = false;
    await starve;
    starved.kill('SIGCONT');
    await Promise.all(sent);
    await pool.close();
    console.log(`starved: ${JSON.stringify(statuses)}`);
    expect(statuses).toEqual({ '200': 81 });
    starved.kill('SIGTERM');
  },
);
