/**
 * Serving benchmark (not a test). In one run, side by side, autocannon at 50 connections
 * against (a) a bare fastify route, (b) POST /v1/recommendations with Redis features and ONNX
 * scoring over 150 drinks + 40 add-ons with 1M synthetic users in Redis, and (c) the router in
 * front of (b). Also measures the feature layout choice (hash vs binary blob) and the RSS of
 * each serving process. Every server is its own process on 127.0.0.1; the last line printed is
 * the JSON result, also written to bench/results/serving.json.
 *
 *   npx tsx bench/serving/run.ts            # ~1 minute; BENCH_SECONDS=10 BENCH_USERS=1000000
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { encodeUserFeatures, KEYS, USER_FEATURES } from '../../contracts/features.js';
import { startRedis } from '../../hack/testenv/environment.js';
import {
  buildCatalog,
  buildStores,
  rng,
  seedFeatures,
  syntheticUser,
  writeModel,
} from '../../serving/src/testing/fixtures.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 10);
const USERS = Number(process.env['BENCH_USERS'] ?? 1_000_000);
const CONNECTIONS = 50;
const LIGHT_CONNECTIONS = 4;
const STORES = 20;

function freePortProcess(
  script: string,
  args: string[],
  env: Record<string, string>,
): { proc: ChildProcess; ready: Promise<number> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const ready = new Promise<number>((resolve, reject) => {
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/i.exec(out) ?? /"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    proc.once('exit', (code) => reject(new Error(`${script} exited with ${code}: ${out.slice(-2000)}`)));
  });
  return { proc, ready };
}

async function waitHttp(url: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`${url} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** CPU seconds (user + system) a process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  // fields 14 and 15 (utime, stime) are at 11 and 12 after the ") " split; clock ticks are 100/s
  return (Number(stat[11]) + Number(stat[12])) / 100;
}

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** Request bodies for random users (1 in 10 unknown → cold start) at random stores. */
function bodies(n: number): string[] {
  const r = rng(99);
  return Array.from({ length: n }, () => {
    const u = Math.floor(r() * USERS * 1.1);
    return JSON.stringify({
      userId: `u${u}`,
      storeId: `store-${Math.floor(r() * STORES)}`,
      context: { time: new Date(Date.UTC(2026, 10, 24, Math.floor(r() * 24))).toISOString(), channel: 'app' },
      limit: 5,
    });
  });
}

/** Warm-up then a measured run; `cpuPid`'s CPU per request over the measured run is returned too. */
async function cannon(
  url: string,
  body: string[],
  connections = CONNECTIONS,
  cpuPid?: number,
): Promise<autocannon.Result & { cpuMicrosPerRequest?: number }> {
  let i = 0;
  const run = (duration: number) =>
    autocannon({
      url,
      connections,
      duration,
      requests: [
        {
          method: 'POST',
          path: '/v1/recommendations',
          headers: { 'content-type': 'application/json' },
          setupRequest: (req) => ({ ...req, body: body[i++ % body.length] }),
        },
      ],
    });
  await run(2); // warm-up: JIT, connections, caches
  const c0 = cpuPid ? await cpuSeconds(cpuPid) : 0;
  const r = await run(SECONDS);
  if (!cpuPid) return r;
  return { ...r, cpuMicrosPerRequest: (((await cpuSeconds(cpuPid)) - c0) * 1e6) / r.requests.total };
}

function summary(r: autocannon.Result) {
  return {
    rps: Math.round(r.requests.average),
    p50ms: r.latency.p50,
    p99ms: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors,
  };
}

/** Sequential and 50-concurrent latency of reading one user as a hash (HGETALL) vs a blob (GET). */
async function layout(redis: Redis): Promise<Record<string, number>> {
  const n = 20_000;
  const r = rng(5);
  const p = redis.pipeline();
  for (let i = 0; i < n; i++) {
    const v = syntheticUser(r, 150);
    const h: Record<string, string> = {};
    USER_FEATURES.forEach((f, j) => (h[f] = String(v[j])));
    p.hset(`bench:hash:user:${i}`, h);
  }
  await p.exec();
  const measure = async (op: (i: number) => Promise<unknown>) => {
    const t0 = performance.now();
    for (let i = 0; i < 5000; i++) await op(i);
    const seqUs = ((performance.now() - t0) / 5000) * 1000;
    const t1 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next < n) await op(next++);
      }),
    );
    const opsPerSec = n / ((performance.now() - t1) / 1000);
    return { seqUs, opsPerSec };
  };
  const hash = await measure(async (i) => {
    const h = await redis.hgetall(`bench:hash:user:${i}`);
    return Float32Array.from(USER_FEATURES, (f) => Number(h[f]));
  });
  const blob = await measure(async (i) => {
    const b = await redis.getBuffer(KEYS.user('bench', `u${i}`));
    return b ? b.length : 0;
  });
  return {
    hashSeqUs: Math.round(hash.seqUs),
    blobSeqUs: Math.round(blob.seqUs),
    hashOpsPerSec: Math.round(hash.opsPerSec),
    blobOpsPerSec: Math.round(blob.opsPerSec),
  };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'crema-bench-serving-'));
  const procs: ChildProcess[] = [];
  const t0 = Date.now();
  const loadBefore = Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]);
  const { redis: server } = await startRedis(dir, () => undefined);
  const redis = new Redis(server.url);
  try {
    // 1. Data: a realistic menu, 20 stores, 1M users as binary blobs.
    const catalog = buildCatalog(150, 40);
    await seedFeatures(redis, { version: 'bench', catalog, stores: buildStores(STORES) });
    const r = rng(1);
    for (let start = 0; start < USERS; start += 20_000) {
      const p = redis.pipeline();
      for (let i = start; i < Math.min(USERS, start + 20_000); i++) {
        p.set(KEYS.user('bench', `u${i}`), encodeUserFeatures(syntheticUser(r, 150)));
      }
      await p.exec();
    }
    const seedSeconds = (Date.now() - t0) / 1000;
    const model = await writeModel({ dir, file: 'ranker', name: 'bench-ranker', hidden: 64 });
    const layoutResult = await layout(redis);

    // 2. Servers, each its own process.
    const bare = freePortProcess('bench/serving/bare.ts', [], {});
    procs.push(bare.proc);
    const servingPort = 18000 + Math.floor(Math.random() * 1000);
    // BENCH_PROFILE=<dir> writes CPU profiles of the serving and router processes (hot spots).
    const profile = process.env['BENCH_PROFILE']
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROFILE']}`]
      : [];
    const serving = spawn(process.execPath, [...profile, '--import', 'tsx', 'serving/src/server.ts'], {
      cwd: root,
      env: {
        ...process.env,
        HOST: '127.0.0.1',
        PORT: String(servingPort),
        REDIS_URL: server.url,
        CREMA_RANKING_MODEL_URI: model.uri,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    procs.push(serving);
    const routerConfig = join(dir, 'router.json');
    await writeFile(
      routerConfig,
      JSON.stringify({
        salt: 'bench',
        stable: 'stable',
        variants: [{ name: 'stable', weight: 100, upstream: `http://127.0.0.1:${servingPort}` }],
      }),
    );
    const routerPort = servingPort + 1;
    const router = spawn(
      process.execPath,
      [...profile, '--import', 'tsx', 'serving/src/server.ts', '--mode', 'router'],
      {
        cwd: root,
        env: {
          ...process.env,
          HOST: '127.0.0.1',
          PORT: String(routerPort),
          CREMA_ROUTER_CONFIG: routerConfig,
          LOG_LEVEL: 'warn',
        },
        stdio: ['ignore', 'inherit', 'inherit'],
      },
    );
    procs.push(router);
    const barePort = await bare.ready;
    await waitHttp(`http://127.0.0.1:${servingPort}/readyz`);
    await waitHttp(`http://127.0.0.1:${routerPort}/readyz`);

    // Sanity: the measured route answers from the model, not the fallback.
    const body = bodies(4096);
    const check = (await (
      await fetch(`http://127.0.0.1:${servingPort}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body[0],
      })
    ).json()) as { fallback?: boolean; items?: unknown[] };
    if (check.fallback !== false || check.items?.length !== 5)
      throw new Error(`serving answered ${JSON.stringify(check)}`);

    // 3. Load, one target at a time so they do not compete for the 2 cores.
    const a = await cannon(`http://127.0.0.1:${barePort}`, body, CONNECTIONS, bare.proc.pid);
    const b = await cannon(`http://127.0.0.1:${servingPort}`, body, CONNECTIONS, serving.pid);
    const servingRss = await rssKiB(serving.pid!);
    const c = await cannon(`http://127.0.0.1:${routerPort}`, body, CONNECTIONS, router.pid);
    const routerRss = await rssKiB(router.pid!);
    // At saturation p99 is queueing (50 connections / throughput), and autocannon's rate limit
    // sends in once-a-second bursts; so the router's own cost is measured with a few
    // connections (closed loop, nothing saturated): direct vs through the router.
    const bLight = await cannon(`http://127.0.0.1:${servingPort}`, body, LIGHT_CONNECTIONS);
    const cLight = await cannon(`http://127.0.0.1:${routerPort}`, body, LIGHT_CONNECTIONS);
    const metrics = await (await fetch(`http://127.0.0.1:${servingPort}/metrics`)).text();
    const fallbacks = [...metrics.matchAll(/^crema_fallbacks_total\{[^}]*\} (\d+)/gm)].reduce(
      (s, m) => s + Number(m[1]),
      0,
    );

    const result = {
      bench: 'serving',
      // The machine is shared: the 1-minute load average before and after says how noisy it was.
      loadAvg: { before: loadBefore, after: Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]) },
      at: new Date().toISOString(),
      node: process.version,
      cpus: (await import('node:os')).cpus().length,
      users: USERS,
      items: catalog.items.length,
      connections: CONNECTIONS,
      seconds: SECONDS,
      seedSeconds: Math.round(seedSeconds * 10) / 10,
      bare: summary(a),
      recommendations: { ...summary(b), fallbacks },
      router: summary(c),
      light: { connections: LIGHT_CONNECTIONS, direct: summary(bLight), viaRouter: summary(cLight) },
      ratio: Math.round((b.requests.average / a.requests.average) * 1000) / 1000,
      routerAddedP99ms: cLight.latency.p99 - bLight.latency.p99,
      routerAddedP99msSaturated: c.latency.p99 - b.latency.p99,
      // CPU per request of each process over its measured run (from /proc/<pid>/stat).
      cpuMicrosPerRequest: {
        bare: Math.round(a.cpuMicrosPerRequest ?? 0),
        serving: Math.round(b.cpuMicrosPerRequest ?? 0),
        router: Math.round(c.cpuMicrosPerRequest ?? 0),
      },
      rssMiB: { serving: Math.round(servingRss / 1024), router: Math.round(routerRss / 1024) },
      featureLayout: layoutResult,
      goals: {
        'ratio>=0.35': b.requests.average / a.requests.average >= 0.35,
        'p99<=10ms': b.latency.p99 <= 10,
        'routerAddedP99<=1ms': cLight.latency.p99 - bLight.latency.p99 <= 1,
      },
    };
    console.log(
      [
        `bare fastify      ${result.bare.rps} req/s  p50 ${result.bare.p50ms} ms  p99 ${result.bare.p99ms} ms`,
        `recommendations   ${result.recommendations.rps} req/s  p50 ${result.recommendations.p50ms} ms  p99 ${result.recommendations.p99ms} ms  (fallbacks ${fallbacks}, non-2xx ${b.non2xx})`,
        `router → recs     ${result.router.rps} req/s  p50 ${result.router.p50ms} ms  p99 ${result.router.p99ms} ms`,
        `${LIGHT_CONNECTIONS} connections: direct p99 ${bLight.latency.p99} ms (${summary(bLight).rps} req/s), via router p99 ${cLight.latency.p99} ms (${summary(cLight).rps} req/s)`,
        `ratio ${result.ratio}, router adds ${result.routerAddedP99ms} ms p99 (at 4 connections), RSS serving ${result.rssMiB.serving} MiB router ${result.rssMiB.router} MiB`,
        `CPU per request: bare ${result.cpuMicrosPerRequest.bare} µs, serving ${result.cpuMicrosPerRequest.serving} µs, router ${result.cpuMicrosPerRequest.router} µs`,
        `layout: HGETALL ${layoutResult.hashSeqUs} µs vs GET blob ${layoutResult.blobSeqUs} µs sequential; ${layoutResult.hashOpsPerSec} vs ${layoutResult.blobOpsPerSec} ops/s at 50 in flight`,
      ].join('\n'),
    );
    const line = JSON.stringify(result);
    await writeFile(join(root, 'bench', 'results', 'serving.json'), line + '\n');
    console.log(line);
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    redis.disconnect();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
