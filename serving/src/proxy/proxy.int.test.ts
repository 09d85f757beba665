/**
 * The admission proxy as the pod runs it: `server.ts --mode proxy` starts a real nginx in front
 * of a real serving process (real Redis, a real model). What passes is serving's answer; what
 * finds every slot taken gets the proxy's 503 with Retry-After; serving publishes the proxy's
 * refusals as crema_requests_rejected_total{reason="proxy"}; SIGTERM ends it cleanly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureDebianPackages } from '../../../hack/testenv/debian.js';
import { startRedis } from '../../../hack/testenv/environment.js';
import { seedFeatures, writeModel } from '../../test/fixtures.js';
import { PROXY_REFUSAL_BODY } from './nginx.js';

let dir: string;
let redisServer: Awaited<ReturnType<typeof startRedis>>['redis'];
const children: ChildProcess[] = [];

beforeAll(async () => {
  await ensureDebianPackages([{ command: 'nginx', pkg: 'nginx' }], () => undefined, 'the admission proxy');
  dir = await mkdtemp(join(tmpdir(), 'crema-proxy-'));
  redisServer = (await startRedis(dir, () => undefined)).redis;
  const admin = new Redis(redisServer.url);
  await seedFeatures(admin, { version: 'v1' });
  admin.disconnect();
}, 300_000);

afterAll(async () => {
  // The proxy's nginx is in its process group.
  for (const c of children) if (c.exitCode === null) process.kill(-c.pid!, 'SIGKILL');
  await redisServer?.stop();
  await rm(dir, { recursive: true, force: true });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function start(args: string[], env: Record<string, string>): { proc: ChildProcess; output: () => string } {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'serving/src/server.ts', ...args], {
    env: { ...process.env, HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  children.push(proc);
  let out = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  return { proc, output: () => out };
}

async function waitOk(url: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(url).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > end) throw new Error(`${url} not answering after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const exited = (p: ChildProcess) =>
  new Promise<number | null>((resolve) =>
    p.exitCode !== null ? resolve(p.exitCode) : p.once('exit', (code) => resolve(code)),
  );

it('passes what fits, refuses the rest with 503 + Retry-After, publishes the count, stops on SIGTERM', async () => {
  const model = await writeModel({ dir, file: 'ranker' });
  const [servingPort, proxyPort] = [await freePort(), await freePort()];
  const stats = join(dir, 'shared', 'proxy-refused');
  const serving = start([], {
    PORT: String(servingPort),
    REDIS_URL: redisServer.url,
    CREMA_RANKING_MODEL_URI: model.uri,
    CREMA_PROXY_STATS_PATH: stats,
  });
  await waitOk(`http://127.0.0.1:${servingPort}/readyz`);
  const proxy = start(['--mode', 'proxy'], {
    PORT: String(proxyPort),
    CREMA_PROXY_UPSTREAM_PORT: String(servingPort),
    CREMA_PROXY_MAX_CONCURRENCY: '1',
    CREMA_PROXY_STATS_PATH: stats,
    CREMA_DRAIN_SECONDS: '1',
  });
  const base = `http://127.0.0.1:${proxyPort}`;
  await waitOk(`${base}/healthz`);

  const body = JSON.stringify({
    userId: 'u1',
    storeId: 'store-0',
    context: { time: '2026-11-24T08:00:00Z' },
  });
  const post = (agent: Agent) =>
    request(`${base}/v1/recommendations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
      dispatcher: agent,
    }).then(async (r) => ({ status: r.statusCode, headers: r.headers, text: await r.body.text() }));

  // One at a time: every request is serving's own answer, from the model.
  const one = await post(new Agent());
  expect(one.status).toBe(200);
  expect(JSON.parse(one.text)).toMatchObject({ fallback: false });

  // Bursts of 40 at once on 40 connections with one slot: the ones that find it taken get the
  // proxy's refusal; none is lost or answered with anything else.
  const agent = new Agent({ connections: 40 });
  let ok = 0;
  const refusals: { headers: Record<string, unknown>; text: string }[] = [];
  for (let burst = 0; burst < 20 && refusals.length === 0; burst++) {
    for (const r of await Promise.all(Array.from({ length: 40 }, () => post(agent)))) {
      if (r.status === 200) ok++;
      else if (r.status === 503) refusals.push(r);
      else throw new Error(`unexpected ${r.status}: ${r.text}`);
    }
  }
  expect(ok).toBeGreaterThan(0);
  expect(refusals.length).toBeGreaterThan(0);
  expect(refusals[0]!.headers['retry-after']).toBe('1');
  expect(refusals[0]!.headers['content-type']).toBe('application/json');
  expect(refusals[0]!.text).toBe(PROXY_REFUSAL_BODY);
  await agent.close();

  // Serving publishes exactly the proxy's refusals (the stats file is rewritten every second).
  const published = async () => {
    const m = /crema_requests_rejected_total\{[^}]*reason="proxy"[^}]*\} (\d+)/.exec(
      await fetch(`http://127.0.0.1:${servingPort}/metrics`).then((r) => r.text()),
    );
    return m ? Number(m[1]) : 0;
  };
  const end = Date.now() + 10_000;
  while ((await published()) < refusals.length && Date.now() < end)
    await new Promise((r) => setTimeout(r, 200));
  expect(await published()).toBe(refusals.length);

  // SIGTERM: proxying goes on through the drain, then nginx quits and the process exits 0.
  const t0 = Date.now();
  proxy.proc.kill('SIGTERM');
  const during = await post(new Agent());
  expect(during.status).toBe(200);
  expect(await exited(proxy.proc)).toBe(0);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
  expect(proxy.output()).not.toMatch(/\[(emerg|alert|crit)\]/);
  serving.proc.kill('SIGTERM');
  expect(await exited(serving.proc)).toBe(0);
}, 120_000);

it('a missing or bad setting stops proxy mode with a message that names it', async () => {
  const missing = start(['--mode', 'proxy'], { PORT: String(await freePort()) });
  expect(await exited(missing.proc)).not.toBe(0);
  expect(missing.output()).toContain('CREMA_PROXY_UPSTREAM_PORT');
  const bad = start(['--mode', 'proxy'], {
    PORT: String(await freePort()),
    CREMA_PROXY_UPSTREAM_PORT: '8081',
    CREMA_PROXY_MAX_CONCURRENCY: '0',
  });
  expect(await exited(bad.proc)).not.toBe(0);
  expect(bad.output()).toContain('maxConcurrency must be an integer in 1..4096, got 0');
}, 60_000);
