/**
 * The admission proxy container's entry point (`/app/proxy.js` in the serving image): a small
 * bundle of its own, so the process that runs nginx does not load serving's code (a 32 MiB heap
 * is plenty). `server.ts --mode proxy` runs the same for local use. Settings: PORT,
 * CREMA_PROXY_UPSTREAM_PORT, CREMA_PROXY_MAX_CONCURRENCY, CREMA_PROXY_STATS_PATH,
 * CREMA_DRAIN_SECONDS, CREMA_NGINX, LOG_LEVEL (docs/serving.md).
 */
import { proxyOptionsFromEnv, runProxy, type ProxyRunOptions } from './run.js';

/** Runs the proxy from the environment; resolves with the process's exit code. */
export async function proxyMain(env: NodeJS.ProcessEnv): Promise<number> {
  const level = env['LOG_LEVEL'] ?? 'info';
  const log: ProxyRunOptions['log'] = (lvl, msg, extra) => {
    if (lvl === 'info' && (level === 'warn' || level === 'error')) return;
    console.error(JSON.stringify({ level: lvl, time: Date.now(), msg, ...extra }));
  };
  const opts = proxyOptionsFromEnv(env, log);
  return runProxy(opts);
}

if (process.argv[1] && /proxy(\/main)?\.[jt]s$/.test(process.argv[1])) {
  proxyMain(process.env).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
