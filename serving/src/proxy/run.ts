/**
 * Proxy mode (`--mode proxy`, CREMA_MODE=proxy): runs nginx with the admission proxy's config
 * (nginx.ts), counts the requests it refused (the size of nginx's refusal log, rotated past
 * 16 MiB) and writes the count to a file serving publishes
 * (CREMA_PROXY_STATS_PATH), and on SIGTERM keeps proxying through serving's drain before nginx
 * quits gracefully (in-flight requests finish). If nginx exits, so does this process, with its
 * code, and the kubelet restarts the container.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { SERVING_ENV } from '../../../contracts/serving-env.js';
import { renderNginxConf } from './nginx.js';

/** How often the refusal count is written. */
const STATS_EVERY_MS = 1000;
/** The refusal log is rotated past this size (one byte per refusal). */
const ROTATE_BYTES = 16 * 2 ** 20;
/** A rotated log is final this long after nginx was told to reopen its logs (it flushes every 1 s). */
const ROTATED_FINAL_MS = 3000;

export interface ProxyRunOptions {
  readonly port: number;
  readonly upstreamPort: number;
  readonly maxConcurrency: number;
  readonly drainSeconds: number;
  readonly statsPath?: string;
  readonly nginx: string;
  readonly log: (level: 'info' | 'warn' | 'error', msg: string, extra?: object) => void;
}

/**
 * Reads proxy mode's settings (PORT default 8080, CREMA_DRAIN_SECONDS default 0); a missing or
 * bad one is an error that names the variable.
 */
export function proxyOptionsFromEnv(env: NodeJS.ProcessEnv, log: ProxyRunOptions['log']): ProxyRunOptions {
  const int = (name: string, dflt?: number) => {
    const v = env[name];
    if (v === undefined || v === '') {
      if (dflt === undefined) throw new Error(`proxy mode needs ${name}`);
      return dflt;
    }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number, got ${v}`);
    return n;
  };
  return {
    port: int(SERVING_ENV.port, 8080),
    upstreamPort: int(SERVING_ENV.proxyUpstreamPort),
    maxConcurrency: int(SERVING_ENV.proxyMaxConcurrency, 16),
    drainSeconds: int(SERVING_ENV.drainSeconds, 0),
    ...(env[SERVING_ENV.proxyStatsPath] ? { statsPath: env[SERVING_ENV.proxyStatsPath] } : {}),
    nginx: env[SERVING_ENV.nginxPath] || '/usr/sbin/nginx',
    log,
  };
}

/** Starts nginx; resolves with the exit code this process should end with. */
export async function runProxy(o: ProxyRunOptions): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'crema-proxy-'));
  // Started as root (a local run), nginx's worker runs as nobody and must reach its temp dirs.
  await chmod(dir, 0o755);
  const refusalLog = join(dir, 'refused.log');
  const conf = renderNginxConf({
    port: o.port,
    upstreamPort: o.upstreamPort,
    maxConcurrency: o.maxConcurrency,
    dir,
    refusalLog,
  });
  await writeFile(join(dir, 'nginx.conf'), conf);
  const nginx = spawn(o.nginx, ['-e', 'stderr', '-p', dir, '-c', join(dir, 'nginx.conf')], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  // The count is the refusal log's size (one byte per refusal) plus what rotated logs held.
  let refused = 0;
  let base = 0;
  let rotated: { path: string; at: number } | undefined;
  const sizeOf = async (p: string) => (await stat(p).catch(() => undefined))?.size ?? 0;
  const count = async () => {
    const cur = await sizeOf(refusalLog);
    const old = rotated ? await sizeOf(rotated.path) : 0;
    refused = base + cur + old;
    if (rotated && Date.now() - rotated.at > ROTATED_FINAL_MS) {
      base += old;
      await rm(rotated.path, { force: true });
      rotated = undefined;
    } else if (!rotated && cur > ROTATE_BYTES && nginx.pid !== undefined) {
      rotated = { path: `${refusalLog}.1`, at: Date.now() };
      await rename(refusalLog, rotated.path);
      nginx.kill('SIGUSR1'); // reopen: new refusals go to a new file
    }
  };
  let written = -1;
  const writeStats = async () => {
    await count();
    if (!o.statsPath || refused === written) return;
    const n = refused;
    const tmp = `${o.statsPath}.tmp`;
    await mkdir(dirname(o.statsPath), { recursive: true });
    await writeFile(tmp, `${n}\n`);
    await rename(tmp, o.statsPath);
    written = n;
  };
  await writeStats();
  const timer = setInterval(() => {
    writeStats().catch((err: unknown) =>
      o.log('warn', 'could not write the proxy stats', { err: String(err) }),
    );
  }, STATS_EVERY_MS);
  o.log('info', 'admission proxy started', {
    port: o.port,
    upstreamPort: o.upstreamPort,
    maxConcurrency: o.maxConcurrency,
  });
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    // Serving keeps answering through its drain (not ready, so the Service stops sending new
    // clients); the proxy keeps passing its requests until then, then lets nginx finish.
    o.log('info', 'draining before nginx quits', { seconds: o.drainSeconds, signal: sig });
    setTimeout(() => nginx.kill('SIGQUIT'), o.drainSeconds * 1000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  const code = await new Promise<number>((resolve) => {
    nginx.once('error', (err) => {
      o.log('error', `could not start nginx (${o.nginx}): ${err.message}`);
      resolve(1);
    });
    nginx.once('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
  });
  clearInterval(timer);
  await writeStats().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
  if (!stopping) o.log('error', 'nginx exited', { code });
  return stopping ? 0 : code === 0 ? 1 : code;
}
