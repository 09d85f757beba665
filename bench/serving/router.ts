/**
 * Router benchmark (not a test): what the experiment router costs, for the Node router
 * (`serving/src/server.ts --mode router`) and for nginx + njs doing the same assignment
 * (bench/serving/nginx-router.ts), side by side in one run (ADR 0018).
 *
 * Upstream: one serving process (POST /v1/recommendations, Redis blob features, ONNX scoring of
 * 150 drinks + 40 add-ons; BENCH_USERS synthetic users in a private redis-server). Both routers
 * run a 50/50 experiment config (experiment headers on every request) whose variants both point
 * at that serving process. Load: wrk (C; one thread; a Lua script cycles through 4,096 bodies of
 * different users) — autocannon (Node) cost as much CPU per request as the router it measured,
 * and on 2 cores the load generator competes with the router for the core serving leaves.
 *
 * Each round measures, in an order rotated every round: direct, via Node, via nginx at 50
 * connections (throughput at saturation; CPU µs per request of each router process from
 * /proc), then at light load each router paired with direct: two wrk processes at once, 2
 * connections each, one direct and one through the router, so that serving's own stalls (GC,
 * the scheduler) fall on both alike; the router's added p99 = via − direct of the same pair.
 * Run one after the other, a few seconds' p99 moved by ±10 ms with serving's stalls alone.
 * Before the rounds, 3,000 user ids (ASCII, escapes, non-ASCII, path and body) are routed by
 * both routers and compared with assignVariant.
 *
 *   npm run bench:router   # ~3 minutes; BENCH_ROUNDS=5 BENCH_SECONDS=6 BENCH_LIGHT_SECONDS=4 BENCH_USERS=200000 BENCH_BODIES=4096
 *   (result: bench/results/router.json, router-canary.json with BENCH_EXPERIMENT=0; BENCH_OUT overrides)
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { encodeUserFeatures, KEYS } from '../../contracts/features.js';
import { assignVariant } from '../../contracts/variant-hash.js';
import type { RouterConfig } from '../../contracts/router-config.js';
import { startRedis } from '../../hack/testenv/environment.js';
import { ensureDebianPackages } from '../../hack/testenv/debian.js';
import {
  buildCatalog,
  buildStores,
  rng,
  seedFeatures,
  syntheticUser,
  writeModel,
} from '../../serving/test/fixtures.js';
import { renderNginxConf, renderNjs } from './nginx-router.js';

const run = promisify(execFile);
/** Pin serving to core 0 and everything else to the other cores (default on 2+ cores; BENCH_PIN=0 turns it off). */
const EXPERIMENT = process.env['BENCH_EXPERIMENT'] !== '0';
const PIN = (process.env['BENCH_PIN'] ?? (cpus().length >= 2 ? '1' : '0')) === '1';
/** Sets the CPU affinity of every thread of `pid` (new threads inherit it). */
const taskset = (cpuList: string, pid: number) => run('taskset', ['-a', '-pc', cpuList, String(pid)]);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 6);
const LIGHT_SECONDS = Number(process.env['BENCH_LIGHT_SECONDS'] ?? 4);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const USERS = Number(process.env['BENCH_USERS'] ?? 200_000);
/**
 * Distinct request bodies (users) wrk cycles through. The default 4,096 repeats each user every
 * fraction of a second: serving remembers them all as exposed (counting.ts ExposedUsers) and
 * asks Redis once per user. More than serving remembers (65,536), e.g. 200000, makes every
 * request ask Redis: the price of an experiment whose users this pod has not seen lately.
 */
const BODIES = Number(process.env['BENCH_BODIES'] ?? 4096);
const CONNECTIONS = 50;
/** Connections of each of the two wrk processes of a light-load pair. */
const LIGHT_CONNECTIONS = 2;
const STORES = 20;
const NJS_MODULE = '/usr/lib/nginx/modules/ngx_http_js_module.so';

type Target = 'direct' | 'node' | 'nginx';
type Router = Exclude<Target, 'direct'>;
const TARGETS: Target[] = ['direct', 'node', 'nginx'];

async function loadAvg(): Promise<number> {
  return Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]);
}

/** CPU seconds (user + system) of processes so far. */
async function cpuSeconds(pids: readonly number[]): Promise<number> {
  let s = 0;
  for (const pid of pids) {
    const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
    s += (Number(stat[11]) + Number(stat[12])) / 100;
  }
  return s;
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

/** Request bodies for random users (1 in 10 unknown → cold start) at random stores. */
function bodies(n: number): string[] {
  const r = rng(99);
  return Array.from({ length: n }, () =>
    JSON.stringify({
      userId: `u${Math.floor(r() * USERS * 1.1)}`,
      storeId: `store-${Math.floor(r() * STORES)}`,
      context: { time: new Date(Date.UTC(2026, 10, 24, Math.floor(r() * 24))).toISOString(), channel: 'app' },
      limit: 5,
    }),
  );
}

/** wrk's Lua script: cycle through pre-formatted requests; print a JSON summary at the end. */
const WRK_LUA = `
local reqs = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do
    reqs[#reqs + 1] = wrk.format("POST", "/v1/recommendations", { ["Content-Type"] = "application/json" }, line)
  end
end
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
`;

interface WrkResult {
  rps: number;
  p50ms: number;
  p99ms: number;
  errors: number;
  non2xx: number;
}

async function wrk(url: string, connections: number, seconds: number, script: string, bodyFile: string) {
  const { stdout } = await run(
    'wrk',
    ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '5s', '-s', script, url, '--', bodyFile],
    { maxBuffer: 1 << 20 },
  );
  const m = /WRKJSON (\{.*\})/.exec(stdout);
  if (!m) throw new Error(`wrk printed no summary: ${stdout}`);
  const j = JSON.parse(m[1]!) as {
    requests: number;
    durationUs: number;
    p50Us: number;
    p99Us: number;
    errors: number;
    non2xx: number;
  };
  return {
    rps: Math.round(j.requests / (j.durationUs / 1e6)),
    p50ms: Math.round(j.p50Us / 10) / 100,
    p99ms: Math.round(j.p99Us / 10) / 100,
    errors: j.errors,
    non2xx: j.non2xx,
    requests: j.requests,
  };
}

/** nginx's master and worker pids (the workers are the master's children). */
async function nginxPids(master: number): Promise<number[]> {
  const children = await readFile(`/proc/${master}/task/${master}/children`, 'utf8').catch(() => '');
  return [master, ...children.trim().split(/\s+/).filter(Boolean).map(Number)];
}

/** User ids that exercise the assignment: plain, escapes in the body, non-ASCII, path-encoded. */
function parityIds(n: number): string[] {
  const r = rng(17);
  const extra = ['é', '日本', '😀', '"', '\\', '/', ' ', '\n', '\u2028', '%', '+', '@', ':'];
  return Array.from({ length: n }, (_, i) => {
    let id = `user-${Math.floor(r() * 1e9)}`;
    if (i % 3 === 1) id += extra[Math.floor(r() * extra.length)]!;
    if (i % 7 === 2) id = extra[Math.floor(r() * extra.length)]! + id;
    return id;
  });
}

/** How many of `ids` a router sends to a variant other than assignVariant's (body and path). */
async function parity(url: string, config: RouterConfig, ids: readonly string[]): Promise<number> {
  let wrong = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < ids.length) {
        const id = ids[next]!;
        const asPath = next % 4 === 3;
        next++;
        const res = asPath
          ? await request(`${url}/v1/users/${encodeURIComponent(id)}/offers`)
          : await request(`${url}/v1/recommendations`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ userId: id, storeId: 'store-1' }),
            });
        await res.body.dump();
        if (res.headers['x-crema-variant'] !== assignVariant(id, config.salt, config.variants)) wrong++;
      }
    }),
  );
  return wrong;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const r3 = (x: number) => Math.round(x * 1000) / 1000;

async function main(): Promise<void> {
  await ensureDebianPackages(
    [
      { command: 'wrk', pkg: 'wrk' },
      { command: 'nginx', pkg: 'nginx' },
      { command: NJS_MODULE, pkg: 'libnginx-mod-http-js' },
    ],
    (l) => console.log(l),
    'bench:router',
  );
  const dir = await mkdtemp(join(tmpdir(), 'crema-bench-router-'));
  const procs: ChildProcess[] = [];
  const loadBefore = await loadAvg();
  const { redis: server } = await startRedis(dir, () => undefined);
  const redis = new Redis(server.url);
  try {
    // 1. Data and the serving upstream.
    const catalog = buildCatalog(150, 40);
    await seedFeatures(redis, { version: 'bench', catalog, stores: buildStores(STORES) });
    const r = rng(1);
    for (let start = 0; start < USERS; start += 20_000) {
      const p = redis.pipeline();
      for (let i = start; i < Math.min(USERS, start + 20_000); i++)
        p.set(KEYS.user('bench', `u${i}`), encodeUserFeatures(syntheticUser(r, 150)));
      await p.exec();
    }
    redis.disconnect();
    const model = await writeModel({ dir, file: 'ranker', name: 'bench-ranker', hidden: 64 });
    const base = 19000 + Math.floor(Math.random() * 1000);
    const ports = { direct: base, node: base + 1, nginx: base + 2 };
    const urls = Object.fromEntries(TARGETS.map((t) => [t, `http://127.0.0.1:${ports[t]}`])) as Record<
      Target,
      string
    >;
    // BENCH_PROFILE=<dir>: CPU profile of the Node router.
    const profile = process.env['BENCH_PROFILE']
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROFILE']}`]
      : [];
    const node = (args: string[], env: Record<string, string>, prof: string[] = []) => {
      const p = spawn(process.execPath, [...prof, '--import', 'tsx', 'serving/src/server.ts', ...args], {
        cwd: root,
        env: { ...process.env, HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      procs.push(p);
      return p;
    };
    const serving = node([], {
      PORT: String(ports.direct),
      REDIS_URL: server.url,
      CREMA_RANKING_MODEL_URI: model.uri,
    });

    // 2. The routers, one config.
    const config: RouterConfig = {
      salt: 'bench-exp',
      stable: 'stable',
      variants: [
        { name: 'stable', weight: 50, upstream: urls.direct },
        { name: 'treatment', weight: 50, upstream: urls.direct },
      ],
      // BENCH_EXPERIMENT=0: a canary split (no experiment headers, so serving records no
      // exposures): the router's own cost, without the experiment's counting in serving.
      ...(EXPERIMENT ? { experiment: { id: 'bench/ab', run: '0a1b2c3d4e5f', ttlSeconds: 3600 } } : {}),
    };
    const configPath = join(dir, 'router.json');
    await writeFile(configPath, JSON.stringify(config));
    const router = node(
      ['--mode', 'router'],
      { PORT: String(ports.node), CREMA_ROUTER_CONFIG: configPath },
      profile,
    );
    await mkdir(join(dir, 'nginx'));
    const ndir = join(dir, 'nginx');
    const configId = createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 12);
    await writeFile(join(ndir, 'crema-router.js'), renderNjs(config));
    await writeFile(
      join(ndir, 'nginx.conf'),
      renderNginxConf({ config, configId, port: ports.nginx, dir: ndir }),
    );
    const nginx = spawn('nginx', ['-c', join(ndir, 'nginx.conf'), '-p', ndir], { stdio: 'inherit' });
    procs.push(nginx);
    await waitHttp(`${urls.direct}/readyz`);
    await waitHttp(`${urls.node}/readyz`);
    await waitHttp(`${urls.nginx}/healthz`);
    const nginxAll = await nginxPids(nginx.pid!);
    // Serving gets core 0 to itself; the routers, wrk, Redis and this script share the others, as
    // in a cluster where the router runs in its own pods: the routed ratio then says whether a
    // router keeps up with the serving pod it fronts, not how three programs split two cores.
    if (PIN) {
      const others = `1-${cpus().length - 1}`;
      const redisPids = (await run('pgrep', ['-f', `redis-server 127.0.0.1:${server.port}`])).stdout
        .split('\n')
        .filter(Boolean)
        .map(Number);
      await taskset('0', serving.pid!);
      for (const pid of [router.pid!, ...nginxAll, ...redisPids, process.pid]) await taskset(others, pid);
    }

    // 3. Same variant as assignVariant, through both routers; the answers come from the model.
    const ids = parityIds(3000);
    const wrong = {
      node: await parity(urls.node, config, ids),
      nginx: await parity(urls.nginx, config, ids),
    };
    if (wrong.node + wrong.nginx > 0)
      throw new Error(`assignment differs from assignVariant: ${JSON.stringify(wrong)}`);
    const body = bodies(BODIES);
    for (const t of TARGETS) {
      const res = await request(`${urls[t]}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body[0],
      });
      const j = (await res.body.json()) as { fallback?: boolean; items?: unknown[] };
      if (j.fallback !== false || j.items?.length !== 5)
        throw new Error(`${t} answered ${JSON.stringify(j)}`);
    }

    // 4. Rounds.
    const bodyFile = join(dir, 'bodies.txt');
    await writeFile(bodyFile, body.join('\n') + '\n');
    const script = join(dir, 'bodies.lua');
    await writeFile(script, WRK_LUA);
    const routerPids: Record<Target, number[]> = { direct: [], node: [router.pid!], nginx: nginxAll };
    for (const t of TARGETS) await wrk(urls[t], CONNECTIONS, 2, script, bodyFile); // warm-up
    type Sat = WrkResult & { routerCpuUs: number | null; servingCpuUs: number };
    const rounds: {
      loadAvg: number;
      saturated: Record<Target, Sat>;
      light: Record<Router, { direct: WrkResult; via: WrkResult }>;
      ratio: { node: number; nginx: number };
      addedP99ms: { node: number; nginx: number };
      addedP50ms: { node: number; nginx: number };
      servingCpuUs: { direct: number; viaNode: number; viaNginx: number };
    }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order = TARGETS.map((_, k) => TARGETS[(k + round) % TARGETS.length]!);
      const saturated = {} as Record<Target, Sat>;
      for (const t of order) {
        const pids = routerPids[t];
        const c0 = await cpuSeconds(pids);
        const s0 = await cpuSeconds([serving.pid!]);
        const w = await wrk(urls[t], CONNECTIONS, SECONDS, script, bodyFile);
        const routerCpuUs = pids.length
          ? Math.round((((await cpuSeconds(pids)) - c0) * 1e6) / w.requests)
          : null;
        const servingCpuUs = Math.round((((await cpuSeconds([serving.pid!])) - s0) * 1e6) / w.requests);
        saturated[t] = { ...w, routerCpuUs, servingCpuUs };
      }
      const light = {} as Record<Router, { direct: WrkResult; via: WrkResult }>;
      for (const t of order) {
        if (t === 'direct') continue;
        const [direct, via] = await Promise.all([
          wrk(urls.direct, LIGHT_CONNECTIONS, LIGHT_SECONDS, script, bodyFile),
          wrk(urls[t], LIGHT_CONNECTIONS, LIGHT_SECONDS, script, bodyFile),
        ]);
        light[t] = { direct, via };
      }
      const added = (t: Router, q: 'p50ms' | 'p99ms') =>
        Math.round((light[t].via[q] - light[t].direct[q]) * 100) / 100;
      const entry = {
        loadAvg: await loadAvg(),
        saturated,
        light,
        ratio: {
          node: r3(saturated.node.rps / saturated.direct.rps),
          nginx: r3(saturated.nginx.rps / saturated.direct.rps),
        },
        addedP99ms: { node: added('node', 'p99ms'), nginx: added('nginx', 'p99ms') },
        addedP50ms: { node: added('node', 'p50ms'), nginx: added('nginx', 'p50ms') },
        // serving's own CPU per request rises when a router shares the machine with it
        servingCpuUs: {
          direct: saturated.direct.servingCpuUs,
          viaNode: saturated.node.servingCpuUs,
          viaNginx: saturated.nginx.servingCpuUs,
        },
      };
      rounds.push(entry);
      const s = saturated;
      console.log(
        `round ${round + 1}/${ROUNDS} (load ${entry.loadAvg}): ${CONNECTIONS} conns direct ${s.direct.rps} req/s, ` +
          `node ${s.node.rps} (${entry.ratio.node}x, ${s.node.routerCpuUs} µs/req), ` +
          `nginx ${s.nginx.rps} (${entry.ratio.nginx}x, ${s.nginx.routerCpuUs} µs/req); ` +
          `light (${LIGHT_CONNECTIONS}+${LIGHT_CONNECTIONS} conns) p99 direct ${light.node.direct.p99ms}/${light.nginx.direct.p99ms} ms, node +${entry.addedP99ms.node}, nginx +${entry.addedP99ms.nginx} ` +
          `(p50 direct ${light.node.direct.p50ms}/${light.nginx.direct.p50ms} ms, node +${entry.addedP50ms.node}, nginx +${entry.addedP50ms.nginx}); ` +
          `serving µs/req direct ${s.direct.servingCpuUs}, via node ${s.node.servingCpuUs}, via nginx ${s.nginx.servingCpuUs}`,
      );
    }
    const med = (f: (x: (typeof rounds)[number]) => number) => median(rounds.map(f));
    const result = {
      bench: 'router',
      at: new Date().toISOString(),
      loadAvg: { before: loadBefore, after: await loadAvg() },
      node: process.version,
      cpus: (await import('node:os')).cpus().length,
      generator: 'wrk -t1',
      experiment: EXPERIMENT,
      pinned: PIN ? { serving: '0', routersWrkRedis: `1-${cpus().length - 1}` } : false,
      users: USERS,
      distinctBodies: BODIES,
      rounds: ROUNDS,
      secondsPerRound: SECONDS,
      lightSecondsPerRound: LIGHT_SECONDS,
      parity: { ids: ids.length, wrong },
      median: {
        rps: {
          direct: med((x) => x.saturated.direct.rps),
          node: med((x) => x.saturated.node.rps),
          nginx: med((x) => x.saturated.nginx.rps),
        },
        ratio: { node: med((x) => x.ratio.node), nginx: med((x) => x.ratio.nginx) },
        addedP99ms: { node: med((x) => x.addedP99ms.node), nginx: med((x) => x.addedP99ms.nginx) },
        addedP50ms: { node: med((x) => x.addedP50ms.node), nginx: med((x) => x.addedP50ms.nginx) },
        cpuMicrosPerRequest: {
          node: med((x) => x.saturated.node.routerCpuUs!),
          nginx: med((x) => x.saturated.nginx.routerCpuUs!),
          serving: med((x) => x.saturated.direct.servingCpuUs),
          servingViaNode: med((x) => x.saturated.node.servingCpuUs),
          servingViaNginx: med((x) => x.saturated.nginx.servingCpuUs),
        },
        lightP99ms: {
          directBesideNode: med((x) => x.light.node.direct.p99ms),
          node: med((x) => x.light.node.via.p99ms),
          directBesideNginx: med((x) => x.light.nginx.direct.p99ms),
          nginx: med((x) => x.light.nginx.via.p99ms),
        },
      },
      perRound: rounds,
      goals: {
        'node ratio>=0.8 every round': rounds.every((x) => x.ratio.node >= 0.8),
        'node addedP99<=1ms every round': rounds.every((x) => x.addedP99ms.node <= 1),
        'nginx ratio>=0.8 every round': rounds.every((x) => x.ratio.nginx >= 0.8),
        'nginx addedP99<=1ms every round': rounds.every((x) => x.addedP99ms.nginx <= 1),
      },
    };
    const m = result.median;
    console.log(
      [
        `median of ${ROUNDS}: direct ${m.rps.direct} req/s, node ${m.rps.node} (${m.ratio.node}x), nginx ${m.rps.nginx} (${m.ratio.nginx}x)`,
        `ratio per round: node ${rounds.map((x) => x.ratio.node).join(' ')}; nginx ${rounds.map((x) => x.ratio.nginx).join(' ')}`,
        `added p99 at light load (${LIGHT_CONNECTIONS} connections via, ${LIGHT_CONNECTIONS} direct at once) per round: node ${rounds.map((x) => x.addedP99ms.node).join(' ')} ms; nginx ${rounds.map((x) => x.addedP99ms.nginx).join(' ')} ms`,
        `added p50 per round: node ${rounds.map((x) => x.addedP50ms.node).join(' ')} ms; nginx ${rounds.map((x) => x.addedP50ms.nginx).join(' ')} ms`,
        `CPU per request: node router ${m.cpuMicrosPerRequest.node} µs, nginx ${m.cpuMicrosPerRequest.nginx} µs, serving ${m.cpuMicrosPerRequest.serving} µs (${m.cpuMicrosPerRequest.servingViaNode} via node, ${m.cpuMicrosPerRequest.servingViaNginx} via nginx)`,
        `load average ${result.loadAvg.before} → ${result.loadAvg.after}`,
      ].join('\n'),
    );
    const line = JSON.stringify(result);
    await writeFile(
      process.env['BENCH_OUT'] ??
        join(root, 'bench', 'results', EXPERIMENT ? 'router.json' : 'router-canary.json'),
      line + '\n',
    );
    console.log(line);
  } finally {
    for (const p of procs) p.kill('SIGTERM');
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
