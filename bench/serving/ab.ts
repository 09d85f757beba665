/**
 * bench:serving-ab — two settings of the compiled serving program side by side: paired rounds
 * that alternate which goes first, each a closed loop of 50 connections on
 * POST /v1/recommendations, with the shipped drink-ranking and add-on models and bench:serving's
 * data (users with and without stored features). Reports per round throughput, p99 and CPU
 * microseconds per request of each side, and B's ratio to A; with `BENCH_PROFILE=1` one profiled
 * round per side lists the functions with the most self time on the main thread.
 *
 * The two settings are environment variables of the server: `BENCH_A` and `BENCH_B`, each
 * "NAME=value NAME=value" (default: A the shipped defaults, B `CREMA_INFERENCE_THREAD=1`, the
 * last decision taken with it). `BENCH_A_HEADERS` / `BENCH_B_HEADERS` ("name=value ...") add
 * request headers on one side, e.g. the experiment router's headers (`x-crema-experiment=bench/ab
 * x-crema-experiment-run=0a1b2c3d4e5f x-crema-experiment-variant=b x-crema-experiment-ttl=3600`)
 * to price what serving does for a request of a running experiment. Both servers are pinned to
 * `BENCH_SERVER_CPUS` (default core 0: a pod at its CPU request; "" unpins), the client and
 * Redis run on the other cores; only one server has load at a time.
 *
 * Env: BENCH_ROUNDS (4), BENCH_SECONDS (8), BENCH_USERS (200000), BENCH_CONNECTIONS (50).
 * Result: bench/results/serving-ab.json (BENCH_OUT overrides).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { startRedis } from '../../hack/testenv/environment.js';
import * as compiled from './compiled.js';
import { bundleModules, mainThreadProfile, topFunctions } from './stages.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 4);
const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 8);
const USERS = Number(process.env['BENCH_USERS'] ?? 200_000);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 50);
const STORES = 20;
const SERVER_CPUS = process.env['BENCH_SERVER_CPUS'] ?? (cpus().length >= 2 ? '0' : '');

/** "A=1 B=2" → { A: '1', B: '2' }; a malformed word is an error, not a silent default. */
function parseSetting(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const word of s.split(/\s+/).filter(Boolean)) {
    const eq = word.indexOf('=');
    if (eq <= 0) throw new Error(`setting "${word}" is not NAME=value`);
    out[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return out;
}

async function main(): Promise<void> {
  const sides = {
    A: parseSetting(process.env['BENCH_A'] ?? ''),
    B: parseSetting(process.env['BENCH_B'] ?? 'CREMA_INFERENCE_THREAD=1'),
  };
  const headers = {
    A: parseSetting(process.env['BENCH_A_HEADERS'] ?? ''),
    B: parseSetting(process.env['BENCH_B_HEADERS'] ?? ''),
  };
  const dir = await mkdtemp(join(tmpdir(), 'crema-bench-ab-'));
  const procs: ChildProcess[] = [];
  const { redis: server } = await startRedis(dir, () => undefined);
  const redis = new Redis(server.url);
  try {
    await compiled.seedBenchFeatures(redis, USERS, STORES);
    const entry = await compiled.bundleServing(join(dir, 'app'));
    const modelEnv = await compiled.shippedModelEnv(['drink-ranking', 'addon-attach']);
    const body = compiled.requestBodies(4096, { users: USERS, stores: STORES, withoutFeatures: 0.049 });
    const start = async (side: 'A' | 'B', port: number, nodeArgs: string[] = []) => {
      const proc = compiled.startCompiledServing({
        entry,
        nodeArgs,
        ...(SERVER_CPUS ? { cpus: SERVER_CPUS } : {}),
        env: { ...modelEnv, HOST: '127.0.0.1', PORT: String(port), REDIS_URL: server.url, ...sides[side] },
      });
      procs.push(proc);
      const url = `http://127.0.0.1:${port}`;
      await compiled.waitHttp(`${url}/readyz`);
      return { proc, url, side };
    };
    let next = 0;
    const load = (url: string, duration: number, extra: Record<string, string>) =>
      autocannon({
        url,
        connections: CONNECTIONS,
        duration,
        requests: [
          {
            method: 'POST',
            path: '/v1/recommendations',
            headers: { 'content-type': 'application/json', ...extra },
            setupRequest: (req) => ({ ...req, body: body[next++ % body.length] }),
          },
        ],
      });
    const measure = async (s: { proc: ChildProcess; url: string; side: 'A' | 'B' }) => {
      await load(s.url, 2, headers[s.side]); // warm-up
      const c0 = await compiled.cpuSeconds(s.proc.pid!);
      const r = await load(s.url, SECONDS, headers[s.side]);
      const cpu = (await compiled.cpuSeconds(s.proc.pid!)) - c0;
      return {
        rps: Math.round(r.requests.average),
        p99ms: r.latency.p99,
        cpuUsPerRequest: Math.round((cpu * 1e6) / Math.max(1, r.requests.total)),
        non2xx: r.non2xx,
        errors: r.errors,
      };
    };
    const base = 18000 + Math.floor(Math.random() * 1000);
    const servers = { A: await start('A', base), B: await start('B', base + 1) };
    const rounds: {
      first: 'A' | 'B';
      A: Awaited<ReturnType<typeof measure>>;
      B: Awaited<ReturnType<typeof measure>>;
      ratioB: number;
    }[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const order = i % 2 === 0 ? (['A', 'B'] as const) : (['B', 'A'] as const);
      const got: Partial<Record<'A' | 'B', Awaited<ReturnType<typeof measure>>>> = {};
      for (const side of order) got[side] = await measure(servers[side]);
      const round = {
        first: order[0],
        A: got.A!,
        B: got.B!,
        ratioB: Math.round((got.B!.rps / got.A!.rps) * 1000) / 1000,
      };
      rounds.push(round);
      console.error(`round ${i + 1}: ${JSON.stringify(round)}`);
    }
    let profiles: Record<'A' | 'B', { fn: string; share: number }[]> | undefined;
    if (process.env['BENCH_PROFILE'] === '1') {
      const map = bundleModules(await readFile(entry, 'utf8'));
      profiles = { A: [], B: [] };
      for (const side of ['A', 'B'] as const) {
        const profDir = join(dir, `prof-${side}`);
        const s = await start(side, base + 2 + (side === 'A' ? 0 : 1), [
          '--cpu-prof',
          `--cpu-prof-dir=${profDir}`,
        ]);
        await measure(s);
        const exited = new Promise((r) => s.proc.once('exit', r));
        s.proc.kill('SIGTERM');
        await exited;
        const p = await mainThreadProfile(profDir);
        profiles[side] = p ? topFunctions(p, map, 30) : [];
      }
    }
    const result = {
      bench: 'serving-ab',
      at: new Date().toISOString(),
      node: process.version,
      cpus: cpus().length,
      loadAvg: Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]),
      serverCpus: SERVER_CPUS || 'unpinned',
      connections: CONNECTIONS,
      seconds: SECONDS,
      users: USERS,
      A: sides.A,
      B: sides.B,
      headers,
      rounds,
      ratioBPerRound: rounds.map((r) => r.ratioB),
      cpuUsPerRequest: {
        A: rounds.map((r) => r.A.cpuUsPerRequest),
        B: rounds.map((r) => r.B.cpuUsPerRequest),
      },
      ...(profiles ? { topFunctions: profiles } : {}),
    };
    const line = JSON.stringify(result);
    await writeFile(
      process.env['BENCH_OUT'] ?? join(import.meta.dirname, '..', 'results', 'serving-ab.json'),
      line + '\n',
    );
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
