/**
 * The real entry point as a process: serving mode loads its model from the environment before
 * listening, answers, labels its metrics from the environment, and exits cleanly on SIGTERM;
 * router mode forwards to it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startRedis } from '../../hack/testenv/environment.js';
import { seedFeatures, writeModel } from '../test/fixtures.js';

let dir: string;
let server: Awaited<ReturnType<typeof startRedis>>['redis'];
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-server-'));
  server = (await startRedis(dir, () => undefined)).redis;
  const admin = new Redis(server.url);
  await seedFeatures(admin, { version: 'v1' });
  admin.disconnect();
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Starts server.ts and resolves with its port once it logs that it listens. */
function start(args: string[], env: Record<string, string>): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'serving/src/server.ts', ...args], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  return new Promise((resolve, reject) => {
    proc.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve({ proc, port: Number(m[1]) });
    });
    proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    proc.once('exit', (code) => reject(new Error(`server.ts exited ${code}: ${out}`)));
  });
}

it('serving and router processes answer, and SIGTERM stops them cleanly', async () => {
  const model = await writeModel({ dir, file: 'ranker' });
  const serving = await start([], {
    REDIS_URL: server.url,
    CREMA_RANKING_MODEL_URI: model.uri,
    CREMA_VARIANT: 'stable',
    // What the operator renders: the metrics' identity labels.
    CREMA_MODEL_NAME: 'drinks',
    POD_NAMESPACE: 'shop',
  });
  const ready = await fetch(`http://127.0.0.1:${serving.port}/readyz`);
  expect(ready.status).toBe(200);
  const body = JSON.stringify({
    userId: 'u1',
    storeId: 'store-0',
    context: { time: '2026-11-24T08:00:00Z' },
    limit: 3,
  });
  const direct = await fetch(`http://127.0.0.1:${serving.port}/v1/recommendations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  expect(await direct.json()).toMatchObject({ fallback: false, modelRevision: model.meta.sha256 });
  const metrics = await fetch(`http://127.0.0.1:${serving.port}/metrics`).then((r) => r.text());
  expect(metrics).toContain(
    `crema_http_request_duration_seconds_count{model="drinks",namespace="shop",revision="${model.meta.sha256}",variant="stable",route="/v1/recommendations",method="POST",status_code="200"} 1`,
  );

  const config = join(dir, 'router.yaml');
  await writeFile(
    config,
    `salt: s1\nstable: stable\nvariants:\n  - name: stable\n    weight: 100\n    upstream: http://127.0.0.1:${serving.port}\n`,
  );
  const router = await start(['--mode', 'router'], { CREMA_ROUTER_CONFIG: config });
  const routed = await fetch(`http://127.0.0.1:${router.port}/v1/recommendations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  expect(routed.status).toBe(200);
  expect(routed.headers.get('x-crema-variant')).toBe('stable');
  expect(((await routed.json()) as { items: unknown[] }).items).toHaveLength(3);

  for (const p of [router.proc, serving.proc]) {
    const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
    p.kill('SIGTERM');
    expect(await exited).toBe(0);
  }
});
