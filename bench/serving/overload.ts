/**
 * Overload benchmark (not a test): what serving does with ten times the traffic it can serve.
 *
 * Against the compiled serving program (the image's esbuild bundle, hack/images/bundle.ts) with
 * the shipped drink-ranking model (manifests/models/artifacts), a private redis-server and 1M
 * synthetic users, with the memory settings a pod gets (NODE_OPTIONS as the operator renders
 * it for a 512Mi limit):
 *
 *   1. the sustainable rate: a closed loop of 50 keep-alive clients (the rate it answers at);
 *   2. a spike: an open loop offering 10x that rate (`BENCH_FACTOR`) for `BENCH_SECONDS` (20):
 *      arrivals on a fixed schedule whatever the answers do, each on a free connection of a pool
 *      of up to `BENCH_CONNECTIONS` (2000), the way many independent clients arrive, offered by
 *      vegeta (Go, built from the module proxy: hack/testenv/vegeta.ts);
 *   3. recovery: the process is alive, /healthz answers and a request is answered from the model.
 *
 * Reports the admitted (200) answers' p99 (from the request leaving on its connection to the
 * last byte of the answer), the share of them answered from the model (`fallback: false`), the
 * 503 share, errors, whether the process survived, its peak RSS (VmHWM) and RSS over time. The
 * server runs on core 0 (`BENCH_SERVER_CPUS`), the generators, Redis and the bench on the
 * others (`BENCH_GENERATOR_CPUS`); `lateShare` says how many arrivals vegeta sent late.
 *
 *   npm run bench:overload   # ~1.5 min; BENCH_USERS=1000000 BENCH_FACTOR=10 BENCH_SECONDS=20
 *                            # BENCH_RATE=<req/s> offers a fixed rate instead (before/after runs)
 *
 *   BENCH_FRONT=nginx npm run bench:overload   # the spike through nginx on the server's core,
 *                            # at most BENCH_FRONT_MAX_CONNS (16) requests at once to serving, the
 *                            # rest answered 503 by nginx; also reports the admitted answers'
 *                            # latency inside the pod (nginx's $request_time), which the client's
 *                            # cannot show once the generator's own core is saturated
 *
 * The last line printed is the JSON result, also written to bench/results/overload.json
 * (overload-front-nginx.json with the front; `BENCH_OUT` to write elsewhere, e.g. a before/after
 * comparison).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Pool, type Dispatcher } from 'undici';
import { Redis } from 'ioredis';
import { SERVING_METRICS } from '../../contracts/metrics.js';
import { nodeOptionsForMemoryLimit } from '../../contracts/serving-env.js';
import { ensureDebianPackages } from '../../hack/testenv/debian.js';
import { startRedis } from '../../hack/testenv/environment.js';
import { ensureVegeta, readVegetaVersion } from '../../hack/testenv/vegeta.js';
import {
  bundleServing,
  cpuSeconds,
  requestBodies,
  seedBenchFeatures,
  shippedModelEnv,
  startCompiledServing,
  waitHttp,
} from './compiled.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const USERS = Number(process.env['BENCH_USERS'] ?? 1_000_000);
const FACTOR = Number(process.env['BENCH_FACTOR'] ?? 10);
const SPIKE_SECONDS = Number(process.env['BENCH_SECONDS'] ?? 20);
const MAX_CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 2000);
const CLOSED_CONNECTIONS = Number(process.env['BENCH_CLOSED_CONNECTIONS'] ?? 50);
const STORES = 20;
const SERVER_CPUS = process.env['BENCH_SERVER_CPUS'] ?? (cpus().length >= 2 ? '0' : '');
const GENERATOR_CPUS = SERVER_CPUS ? (process.env['BENCH_GENERATOR_CPUS'] ?? `1-${cpus().length - 1}`) : '';
/**
 * BENCH_FRONT=nginx: the spike goes through nginx on the server's CPUs (a proxy in the pod, the
 * experiment of ADR 0007 amendment 4), which passes at most BENCH_FRONT_MAX_CONNS (16) requests
 * at once to serving and answers the rest 503 itself. The sustainable rate is still serving's own.
 */
const FRONT = process.env['BENCH_FRONT'] ?? '';
const FRONT_MAX_CONNS = Number(process.env['BENCH_FRONT_MAX_CONNS'] ?? 16);
/** The pod memory limit the operator renders by default (DEFAULT_RESOURCES in desired.ts). */
const POD_MEMORY_LIMIT_MIB = 512;

/** Request bodies for random users (1 in 11 unknown → cold start) at random stores. */
function bodies(n: number): Buffer[] {
  return requestBodies(n, { users: USERS, stores: STORES, withoutFeatures: 1 / 11 }).map((b) =>
    Buffer.from(b),
  );
}

/** What one load phase saw. */
interface Tally {
  sent: number;
  /** Arrivals sent more than 5 ms after their scheduled time (the generator fell behind). */
  late: number;
  /** 200 answers from the model / from the fallback. */
  model: number;
  fallback: number;
  /** Other statuses by code. */
  status: Record<string, number>;
  /** Connection errors, resets. */
  errors: number;
  errorCodes: Record<string, number>;
  /** Latency (µs) of 200 answers: from the request leaving on a connection to its last byte. */
  okLatencyUs: number[];
  /** Latency (µs) of 503 answers. */
  shedLatencyUs: number[];
  /** Arrivals still unanswered when the phase ended (after a 5 s grace). */
  unanswered: number;
  retryAfterMissing: number;
}

const newTally = (): Tally => ({
  sent: 0,
  late: 0,
  model: 0,
  fallback: 0,
  status: {},
  errors: 0,
  errorCodes: {},
  okLatencyUs: [],
  shedLatencyUs: [],
  unanswered: 0,
  retryAfterMissing: 0,
});

const FALLBACK_FALSE = Buffer.from('"fallback":false');

/**
 * Sends one POST through `pool` with a bare dispatch handler (no streams, no promise per
 * chunk: the generator must stay cheap to offer a high rate on a shared machine).
 */
function send(pool: Pool, body: Buffer, t: Tally, done: () => void): void {
  let t0 = 0;
  let status = 0;
  let retryAfter = false;
  const chunks: Buffer[] = [];
  const handler: Dispatcher.DispatchHandler = {
    onConnect: () => {
      t0 = performance.now();
    },
    onHeaders: (code, headers) => {
      status = code;
      if (code === 503) {
        for (let i = 0; i < headers.length; i += 2) {
          if (String(headers[i]).toLowerCase() === 'retry-after') retryAfter = true;
        }
      }
      return true;
    },
    onData: (chunk) => {
      if (status === 200) chunks.push(chunk);
      return true;
    },
    onComplete: () => {
      const us = (performance.now() - t0) * 1000;
      if (status === 200) {
        t.okLatencyUs.push(us);
        if (Buffer.concat(chunks).includes(FALLBACK_FALSE)) t.model++;
        else t.fallback++;
      } else {
        t.status[status] = (t.status[status] ?? 0) + 1;
        if (status === 503) {
          t.shedLatencyUs.push(us);
          if (!retryAfter) t.retryAfterMissing++;
        }
      }
      done();
    },
    onError: (err: Error & { code?: string }) => {
      t.errors++;
      const c = err.code ?? err.name;
      t.errorCodes[c] = (t.errorCodes[c] ?? 0) + 1;
      done();
    },
  } as Dispatcher.DispatchHandler;
  pool.dispatch(
    {
      origin: pool as unknown as string,
      path: '/v1/recommendations',
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    },
    handler,
  );
}

/** `connections` clients each sending its next request when the last one is answered. */
async function closedLoop(url: string, body: Buffer[], connections: number, seconds: number) {
  const pool = new Pool(url, { connections, pipelining: 1 });
  const t = newTally();
  let i = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from(
      { length: connections },
      () =>
        new Promise<void>((resolve) => {
          const next = () => {
            if (performance.now() >= end) return resolve();
            t.sent++;
            send(pool, body[i++ % body.length]!, t, next);
          };
          next();
        }),
    ),
  );
  await pool.close();
  // The rate of 200 answers: refused requests are not served.
  return { tally: t, rps: Math.round((t.model + t.fallback) / seconds) };
}

/**
 * Arrivals at `rate` per second for `seconds`, on schedule whatever the answers do, offered by
 * vegeta (a Go constant-rate open loop, hack/testenv/vegeta.ts) over up to `connections`
 * keep-alive connections. The Node generator this replaced took a core of its own at 10x and
 * sent 98 % of arrivals late; vegeta costs a fraction of that, and runs on the generator's CPUs.
 * Latency is vegeta's: from the arrival's start (including any wait for a free connection) to
 * the last byte of the answer.
 */
async function openLoop(
  url: string,
  body: Buffer[],
  rate: number,
  seconds: number,
  connections: number,
  dir: string,
) {
  const vegeta = await ensureVegeta();
  const targets = join(dir, 'targets.jsonl');
  await writeFile(
    targets,
    body
      .map((b) =>
        JSON.stringify({
          method: 'POST',
          url: `${url}/v1/recommendations`,
          header: { 'Content-Type': ['application/json'] },
          body: b.toString('base64'),
        }),
      )
      .join('\n') + '\n',
  );
  const results = join(dir, 'results.bin');
  const start = performance.now();
  const attack = await runTool(vegeta, [
    'attack',
    '-format=json',
    `-targets=${targets}`,
    `-rate=${rate}/1s`,
    `-duration=${seconds}s`,
    // One worker per client: at most `connections` requests outstanding, each on its own
    // connection; when all are busy the next arrival starts late (counted in lateShare) rather
    // than queueing inside the generator, so latency starts when the request leaves.
    `-workers=${connections}`,
    `-max-workers=${connections}`,
    '-timeout=10s',
    '-http2=false',
    `-output=${results}`,
  ]);
  if (attack.code !== 0) throw new Error(`vegeta attack exited ${attack.code}: ${attack.stderr}`);
  const elapsed = (performance.now() - start) / 1000;
  const t = newTally();
  const enc = spawn(vegeta, ['encode', '--to', 'json', results], { stdio: ['ignore', 'pipe', 'inherit'] });
  let first: number | undefined;
  const gapNs = 1e9 / rate;
  for await (const line of createInterface({ input: enc.stdout! })) {
    if (!line) continue;
    const r = JSON.parse(line) as VegetaResult;
    t.sent++;
    const at = timestampNs(r.timestamp);
    first ??= at - r.seq * gapNs;
    // Arrival seq was due at first + seq / rate: more than 5 ms after it is late.
    if (at - (first + r.seq * gapNs) > 5e6) t.late++;
    const us = r.latency / 1000;
    if (r.code === 200) {
      t.okLatencyUs.push(us);
      if (Buffer.from(r.body ?? '', 'base64').includes(FALLBACK_FALSE)) t.model++;
      else t.fallback++;
    } else if (r.code === 0) {
      // No answer: a connection error or the 10 s timeout.
      if (/timeout|deadline exceeded/i.test(r.error)) t.unanswered++;
      else {
        t.errors++;
        const c =
          /(ECONNRESET|connection reset|EOF|refused|too many open files)/i.exec(r.error)?.[1] ??
          r.error.slice(0, 60);
        t.errorCodes[c] = (t.errorCodes[c] ?? 0) + 1;
      }
    } else {
      t.status[r.code] = (t.status[r.code] ?? 0) + 1;
      if (r.code === 503) {
        t.shedLatencyUs.push(us);
        if (!r.headers?.['Retry-After']) t.retryAfterMissing++;
      }
    }
  }
  await new Promise((r) => (enc.exitCode !== null ? r(undefined) : enc.once('exit', r)));
  return { tally: t, seconds: elapsed };
}

/** ns since the epoch of an RFC 3339 timestamp with up to 9 fractional digits. */
function timestampNs(ts: string): number {
  const m = /^(.*?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(ts);
  if (!m) throw new Error(`bad vegeta timestamp ${ts}`);
  return Date.parse(m[1]! + m[3]!) * 1e6 + Number((m[2] ?? '').padEnd(9, '0').slice(0, 9));
}

/** One line of `vegeta encode --to json`. */
interface VegetaResult {
  seq: number;
  code: number;
  /** RFC 3339 with nanoseconds. */
  timestamp: string;
  /** ns */
  latency: number;
  error: string;
  /** base64 */
  body?: string;
  headers?: Record<string, string[]>;
}

function runTool(cmd: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stderr }));
  });
}

function pct(xs: number[], q: number): number {
  if (xs.length === 0) return 0;
  const s = Float64Array.from(xs).sort();
  return Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! / 10) / 100;
}

async function procStatus(pid: number): Promise<{ rssMiB: number; hwmMiB: number } | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/status`, 'utf8');
    const kib = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0);
    return { rssMiB: Math.round(kib('VmRSS') / 1024), hwmMiB: Math.round(kib('VmHWM') / 1024) };
  } catch {
    return undefined;
  }
}

/** Sums of a counter's series by one label, from a /metrics page. */
async function countsBy(url: string, metric: string, label: string): Promise<Record<string, number>> {
  const text = await (await fetch(url)).text();
  const out: Record<string, number> = {};
  const line = new RegExp(`^${metric}\\{[^}]*${label}="([^"]+)"[^}]*\\} (\\d+)`, 'gm');
  for (const m of text.matchAll(line)) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  return out;
}

function diff(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) > 0) out[k] = v - (before[k] ?? 0);
  return out;
}

const loadAvg = async () => Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]);

async function main(): Promise<void> {
  if (GENERATOR_CPUS) {
    // Every thread of this process; redis-server and vegeta inherit it.
    const r = spawnSync('taskset', ['-a', '-p', '-c', GENERATOR_CPUS, String(process.pid)]);
    if (r.status !== 0) throw new Error(`taskset ${GENERATOR_CPUS}: ${r.stderr.toString()}`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'crema-bench-overload-'));
  const loadBefore = await loadAvg();
  const { redis: server } = await startRedis(dir, () => undefined);
  const redis = new Redis(server.url);
  let serving: ChildProcess | undefined;
  let front: ChildProcess | undefined;
  try {
    // 1. Data: the menu and stores the fixtures build, USERS users as binary blobs.
    await seedBenchFeatures(redis, USERS, STORES);

    // 2. The compiled program and the shipped model, with the pod's memory settings.
    const entry = await bundleServing(join(dir, 'app'));
    const podEnv = podMemoryEnv(POD_MEMORY_LIMIT_MIB);
    const port = 19000 + Math.floor(Math.random() * 1000);
    // The server on its own core(s) (BENCH_SERVER_CPUS, default "0"), the generators, Redis and
    // this process on the others (pinned in main's first lines): the result is about the server,
    // not about a load generator taking its CPU. "" leaves everything unpinned.
    // BENCH_SERVER_NODE_ARGS: extra node flags for the server, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p".
    const nodeArgs = (process.env['BENCH_SERVER_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
    serving = startCompiledServing({
      entry,
      nodeArgs,
      ...(SERVER_CPUS ? { cpus: SERVER_CPUS } : {}),
      env: {
        ...podEnv,
        ...(await shippedModelEnv(['drink-ranking'])),
        // The shipped defaults unless set (CREMA_LATENCY_TARGET_MS=50 CREMA_MAX_QUEUE_MS=25 turns the
        // opt-in admission checks on, to compare).
        CREMA_LATENCY_TARGET_MS: process.env['CREMA_LATENCY_TARGET_MS'] ?? '0',
        CREMA_MAX_QUEUE_MS: process.env['CREMA_MAX_QUEUE_MS'] ?? '0',
        HOST: '127.0.0.1',
        PORT: String(port),
        REDIS_URL: server.url,
      },
    });
    let exit: { code: number | null; signal: string | null } | undefined;
    serving.once('exit', (code, signal) => (exit = { code, signal }));
    const pid = serving.pid!;
    const url = `http://127.0.0.1:${port}`;
    await waitHttp(`${url}/readyz`);

    // RSS over the whole run, every 100 ms.
    const rssSamples: { t: number; rssMiB: number }[] = [];
    const t0 = performance.now();
    const sampler = setInterval(() => {
      void procStatus(pid).then((s) => {
        if (s) rssSamples.push({ t: Math.round(performance.now() - t0), rssMiB: s.rssMiB });
      });
    }, 100);
    const rssAtReady = (await procStatus(pid))!.rssMiB;

    // Sanity: answers come from the model.
    const body = bodies(8192);
    const check = (await (
      await fetch(`${url}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body[0]!.toString(),
      })
    ).json()) as { fallback?: boolean };
    if (check.fallback !== false) throw new Error(`serving answered ${JSON.stringify(check)}`);

    // 3. Sustainable rate: a closed loop (warm-up first).
    await closedLoop(url, body, CLOSED_CONNECTIONS, 2);
    const closed = await closedLoop(url, body, CLOSED_CONNECTIONS, 5);
    const sustainable = closed.rps;
    let spikeUrl = url;
    let normal: Record<string, unknown> | undefined;
    if (FRONT === 'nginx') {
      front = await startNginxFront(dir, port, port + 1);
      spikeUrl = `http://127.0.0.1:${port + 1}`;
      await waitHttp(`${spikeUrl}/healthz`);
      // What the front costs when nothing is refused: closed loops of as many clients as it
      // lets through, direct and through it, with the CPU of serving and of nginx per answer.
      const loop = async (u: string) => {
        const c0 = await cpuSeconds(pid);
        const f0 = await cpuSeconds(front!.pid!);
        const r = await closedLoop(u, body, FRONT_MAX_CONNS, 5);
        const n = Math.max(1, r.tally.model + r.tally.fallback);
        return {
          rps: r.rps,
          p99ms: pct(r.tally.okLatencyUs, 0.99),
          servingCpuUs: Math.round((((await cpuSeconds(pid)) - c0) * 1e6) / n),
          frontCpuUs: Math.round((((await cpuSeconds(front!.pid!)) - f0) * 1e6) / n),
          refused: Object.values(r.tally.status).reduce((a, b) => a + b, 0),
        };
      };
      await closedLoop(spikeUrl, body, FRONT_MAX_CONNS, 2);
      const direct = await loop(url);
      const viaFront = await loop(spikeUrl);
      normal = { connections: FRONT_MAX_CONNS, direct, viaFront };
      console.log(
        `without overload, ${FRONT_MAX_CONNS} clients: direct ${JSON.stringify(direct)}; via ${FRONT} ${JSON.stringify(viaFront)}`,
      );
    } else if (FRONT) throw new Error(`BENCH_FRONT=${FRONT}: only "nginx" is known`);
    const rssBeforeSpike = (await procStatus(pid))!.rssMiB;
    console.log(
      `closed loop (${CLOSED_CONNECTIONS} connections): ${sustainable} req/s, p99 ${pct(closed.tally.okLatencyUs, 0.99)} ms, from the model ${closed.tally.model}/${closed.tally.model + closed.tally.fallback}`,
    );

    // 4. The spike, open loop.
    const shedBefore = await countsBy(`${url}/metrics`, SERVING_METRICS.requestsRejected.name, 'reason');
    const fbBefore = await countsBy(`${url}/metrics`, SERVING_METRICS.fallbacks.name, 'reason');
    const rate = process.env['BENCH_RATE'] ? Number(process.env['BENCH_RATE']) : sustainable * FACTOR;
    const frontCpu0 = front ? await cpuSeconds(front.pid!) : 0;
    const spikeStart = Math.round(performance.now() - t0);
    const open = await openLoop(spikeUrl, body, rate, SPIKE_SECONDS, MAX_CONNECTIONS, dir);
    // taskset execs nginx in place (one process: master_process off), so the pid is nginx's.
    const frontCpuSeconds = front ? (await cpuSeconds(front.pid!)) - frontCpu0 : 0;
    const frontLatency = front ? await admittedInFront(dir, front) : undefined;
    const spikeEnd = Math.round(performance.now() - t0);
    const o = open.tally;
    const memoryAtSpikeEnd =
      exit === undefined ? await memoryBreakdown(`${url}/metrics`).catch(() => ({})) : {};

    // 5. After the spike: alive, healthy, answering from the model (within 10 s).
    const recoveryStart = performance.now();
    let recovered = false;
    let recoverySeconds: number | null = null;
    while (exit === undefined && !recovered && performance.now() - recoveryStart < 10_000) {
      const h = await fetch(`${url}/healthz`).catch(() => undefined);
      const rec = (await fetch(`${url}/v1/recommendations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: body[1]!.toString(),
      })
        .then((x) => x.json())
        .catch(() => undefined)) as { fallback?: boolean } | undefined;
      recovered = h?.status === 200 && rec?.fallback === false;
      if (recovered) recoverySeconds = Math.round(performance.now() - recoveryStart) / 1000;
      else await new Promise((res) => setTimeout(res, 200));
    }
    const alive = exit === undefined;
    const shed = alive
      ? diff(await countsBy(`${url}/metrics`, SERVING_METRICS.requestsRejected.name, 'reason'), shedBefore)
      : {};
    const fallbacks = alive
      ? diff(await countsBy(`${url}/metrics`, SERVING_METRICS.fallbacks.name, 'reason'), fbBefore)
      : {};
    clearInterval(sampler);
    const status = await procStatus(pid);
    const admitted = o.model + o.fallback;
    const answered = admitted + Object.values(o.status).reduce((s, v) => s + v, 0);
    const spikeRss = rssSamples.filter((s) => s.t >= spikeStart && s.t <= spikeEnd);
    const result = {
      bench: 'overload',
      at: new Date().toISOString(),
      node: process.version,
      cpus: cpus().length,
      // The machine is shared: the 1-minute load average before and after says how noisy it was.
      loadAvg: { before: loadBefore, after: await loadAvg() },
      users: USERS,
      generator: `vegeta ${await readVegetaVersion()}`,
      cpusServer: SERVER_CPUS || 'unpinned',
      ...(front
        ? {
            front: {
              kind: FRONT,
              maxConns: FRONT_MAX_CONNS,
              cpuSecondsDuringSpike: Math.round(frontCpuSeconds * 100) / 100,
              ...frontLatency,
              withoutOverload: normal,
            },
          }
        : {}),
      cpusGenerator: GENERATOR_CPUS || 'unpinned',
      nodeOptions: podEnv['NODE_OPTIONS'] ?? '',
      sustainable: {
        connections: CLOSED_CONNECTIONS,
        rps: sustainable,
        p99ms: pct(closed.tally.okLatencyUs, 0.99),
        modelShare: share(closed.tally.model, closed.tally.model + closed.tally.fallback),
      },
      spike: {
        factor: FACTOR,
        offeredRps: rate,
        seconds: SPIKE_SECONDS,
        maxConnections: MAX_CONNECTIONS,
        sent: o.sent,
        // Arrivals the generator sent late (it shares the CPU): how far from a true open loop.
        lateShare: share(o.late, o.sent),
        answered,
        admitted,
        admittedRps: Math.round(admitted / SPIKE_SECONDS),
        admittedP50ms: pct(o.okLatencyUs, 0.5),
        admittedP99ms: pct(o.okLatencyUs, 0.99),
        modelShareOfAdmitted: share(o.model, admitted),
        shedShare: share(o.status['503'] ?? 0, o.sent),
        shedP99ms: pct(o.shedLatencyUs, 0.99),
        shedWithoutRetryAfter: o.retryAfterMissing,
        otherStatus: Object.fromEntries(Object.entries(o.status).filter(([k]) => k !== '503')),
        errors: o.errors,
        errorCodes: o.errorCodes,
        unanswered: o.unanswered,
        shedByReason: shed,
        fallbacksByReason: fallbacks,
      },
      process: {
        crashed: !alive,
        exit: exit ?? null,
        recovered,
        recoverySeconds,
        rssAtReadyMiB: rssAtReady,
        rssBeforeSpikeMiB: rssBeforeSpike,
        peakRssDuringSpikeMiB: Math.max(0, ...spikeRss.map((s) => s.rssMiB)),
        peakRssMiB: status?.hwmMiB ?? null,
        rssAfterMiB: status?.rssMiB ?? null,
        podMemoryLimitMiB: POD_MEMORY_LIMIT_MIB,
        memoryAtSpikeEnd,
        // RSS every second of the spike.
        rssDuringSpikeMiB: spikeRss.filter((_, k) => k % 10 === 0).map((s) => s.rssMiB),
      },
      goals: {
        'admittedP99<=50ms': pct(o.okLatencyUs, 0.99) <= 50,
        'modelShareOfAdmitted>=0.9': share(o.model, admitted) >= 0.9,
        noCrash: alive && recovered,
        'peakRss<512Mi': (status?.hwmMiB ?? Infinity) < POD_MEMORY_LIMIT_MIB,
      },
    };
    const s = result.spike;
    console.log(
      [
        `spike: offered ${rate} req/s for ${SPIKE_SECONDS} s (sent ${o.sent}, ${Math.round(s.lateShare * 100)} % late), answered ${answered}, unanswered ${o.unanswered}, errors ${o.errors}`,
        `admitted ${admitted} (${s.admittedRps} req/s): p50 ${s.admittedP50ms} ms, p99 ${s.admittedP99ms} ms, from the model ${Math.round(s.modelShareOfAdmitted * 1000) / 10} %`,
        `503 ${Math.round(s.shedShare * 1000) / 10} % (p99 ${s.shedP99ms} ms; by reason ${JSON.stringify(shed)}); fallbacks ${JSON.stringify(fallbacks)}`,
        `process: ${alive ? 'alive' : `exited ${JSON.stringify(exit)}`}, recovered ${recovered}; RSS ready ${rssAtReady} MiB, before spike ${rssBeforeSpike}, peak during spike ${result.process.peakRssDuringSpikeMiB}, VmHWM ${result.process.peakRssMiB}, after ${result.process.rssAfterMiB}`,
      ].join('\n'),
    );
    const line = JSON.stringify(result);
    await writeFile(
      process.env['BENCH_OUT'] ??
        join(root, 'bench', 'results', FRONT ? `overload-front-${FRONT}.json` : 'overload.json'),
      line + '\n',
    );
    console.log(line);
  } finally {
    front?.kill('SIGTERM');
    serving?.kill('SIGTERM');
    redis.disconnect();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * nginx in front of serving on the server's CPUs: at most FRONT_MAX_CONNS requests at once go to
 * serving (upstream max_conns); with all taken nginx finds no live upstream (502), answered as a
 * 503 with Retry-After and a body that names the proxy as the reason.
 */
async function startNginxFront(dir: string, servingPort: number, port: number): Promise<ChildProcess> {
  await ensureDebianPackages([{ command: 'nginx', pkg: 'nginx' }], console.error, 'the nginx front');
  const ndir = join(dir, 'nginx');
  await mkdir(join(ndir, 'logs'), { recursive: true });
  await writeFile(
    join(ndir, 'nginx.conf'),
    `worker_processes 1;
daemon off;
master_process off;
pid ${ndir}/nginx.pid;
error_log ${ndir}/logs/error.log crit;
events { worker_connections 8192; }
http {
  # Admitted answers only (a few thousand a second): how long each took inside the pod, from
  # nginx reading the request to its last byte, whatever the client's own queueing.
  map $status $admitted { 200 1; default 0; }
  log_format admitted '$request_time';
  access_log ${ndir}/logs/admitted.log admitted buffer=256k flush=1s if=$admitted;
  client_body_temp_path ${ndir};
  proxy_temp_path ${ndir};
  upstream serving {
    server 127.0.0.1:${servingPort} max_conns=${FRONT_MAX_CONNS};
    keepalive ${FRONT_MAX_CONNS};
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://serving;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream off;
      error_page 502 = @overloaded;
    }
    location @overloaded {
      default_type application/json;
      add_header Retry-After 1 always;
      return 503 '{"code":"OVERLOADED","message":"server is overloaded (proxy), retry later"}';
    }
  }
}
`,
  );
  const args = ['-c', join(ndir, 'nginx.conf'), '-p', ndir];
  // BENCH_FRONT_NICE: nginx's nice value (e.g. -10: refusals before serving's work on a shared core).
  const nice = process.env['BENCH_FRONT_NICE'];
  const cmd = [
    ...(nice ? ['nice', '-n', nice] : []),
    ...(SERVER_CPUS ? ['taskset', '-c', SERVER_CPUS] : []),
    'nginx',
    ...args,
  ];
  return spawn(cmd[0]!, cmd.slice(1), { stdio: 'inherit' });
}

/**
 * Latency of the admitted answers as nginx saw them (after its log buffer is flushed): p50/p99
 * in ms, at nginx's millisecond resolution. Read after the spike, while nginx still runs.
 */
async function admittedInFront(dir: string, front: ChildProcess) {
  front.kill('SIGUSR1'); // reopen logs: flushes the buffer
  await new Promise((r) => setTimeout(r, 1500));
  const ms = (await readFile(join(dir, 'nginx', 'logs', 'admitted.log'), 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((x) => Number(x) * 1000)
    .sort((a, b) => a - b);
  const at = (q: number) => (ms.length ? ms[Math.min(ms.length - 1, Math.floor(q * ms.length))]! : null);
  return { admittedLogged: ms.length, admittedInPodP50ms: at(0.5), admittedInPodP99ms: at(0.99) };
}

function share(n: number, of: number): number {
  return of > 0 ? Math.round((n / of) * 1000) / 1000 : 0;
}

/** The memory environment the operator renders for a serving container with this limit. */
function podMemoryEnv(limitMiB: number): Record<string, string> {
  return { NODE_OPTIONS: nodeOptionsForMemoryLimit(limitMiB * 2 ** 20) };
}

/** What holds the memory: V8 heap (total, used), external and array buffers, from /metrics. */
async function memoryBreakdown(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(url)).text();
  const out: Record<string, number> = {};
  for (const name of [
    'nodejs_heap_size_total_bytes',
    'nodejs_heap_size_used_bytes',
    'nodejs_external_memory_bytes',
    'process_resident_memory_bytes',
  ]) {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(text);
    if (m) out[name.replace(/^nodejs_|^process_|_bytes$/g, '') + 'MiB'] = Math.round(Number(m[1]) / 2 ** 20);
  }
  return out;
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
