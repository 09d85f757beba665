/**
 * Starts a serving process (default), a router (`--mode router` or CREMA_MODE=router) or the
 * admission proxy (`--mode proxy`: nginx in front of serving, serving/src/proxy/run.ts) and
 * listens. SIGTERM/SIGINT drain first (CREMA_DRAIN_SECONDS, default 0 outside a pod: not ready,
 * every answer closes its connection), then close the server (in-flight requests finish).
 * Every setting comes from the environment, see docs/serving.md (names: contracts/serving-env.ts).
 */
import { build, createModelStore } from './app.js';
import { createServingClient } from './features/redis.js';
import { inferenceThread } from './model/thread.js';
import { RegionMenuFile } from './menu/region-menu.js';
import type { FastifyBaseLogger } from 'fastify';
import { buildRouter } from './router/app.js';
import { MODEL_TASKS, SERVING_ENV, modelEnvNames } from '../../contracts/serving-env.js';
import { REDIS_ENV, parseRedisTarget, type Durability, type RedisClient } from '../../contracts/redis.js';
import type { ModelTask } from '../../contracts/model-metadata.js';
import { DrainState } from './plugins/drain.js';
import { proxyMain } from './proxy/main.js';

function modeOf(argv: readonly string[], env: NodeJS.ProcessEnv): 'serving' | 'router' | 'proxy' {
  const i = argv.indexOf('--mode');
  const m = (i >= 0 ? argv[i + 1] : undefined) ?? env[SERVING_ENV.mode] ?? 'serving';
  if (m !== 'serving' && m !== 'router' && m !== 'proxy')
    throw new Error(`--mode must be serving, router or proxy, got ${m}`);
  return m;
}

function num(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got ${v}`);
  return n;
}

async function main(): Promise<void> {
  const env = process.env;
  const mode = modeOf(process.argv, env);
  const logger = { level: env['LOG_LEVEL'] ?? 'info' };
  const port = num(env, SERVING_ENV.port) ?? (mode === 'router' ? 8081 : 8080);
  const host = env['HOST'] ?? '0.0.0.0';
  const drain = new DrainState();
  const drainSeconds = num(env, SERVING_ENV.drainSeconds) ?? 0;
  const maxConnectionAgeMs = (num(env, SERVING_ENV.maxConnectionAgeSeconds) ?? 0) * 1000;
  const closeTimeoutSeconds = num(env, SERVING_ENV.closeTimeoutSeconds) ?? 5;
  if (mode === 'proxy') process.exit(await proxyMain(env));
  let close: () => Promise<void>;
  let log: { info(o: object, m: string): void; warn(o: object, m: string): void };
  /** Destroys every client connection still open (closing stops waiting for them). */
  let closeConnections: () => void;
  if (mode === 'router') {
    const configPath = env[SERVING_ENV.routerConfigPath];
    const configMap = env[SERVING_ENV.routerConfigMap];
    const namespace = env[SERVING_ENV.podNamespace];
    if (!configPath && !(configMap && namespace))
      throw new Error(
        `router mode needs ${SERVING_ENV.routerConfigMap} and ${SERVING_ENV.podNamespace} (a ConfigMap to watch) or ${SERVING_ENV.routerConfigPath} (a file)`,
      );
    const app = await buildRouter({
      ...(configPath ? { configPath } : { configMap: { namespace: namespace!, name: configMap! } }),
      logger,
      drain,
      maxConnectionAgeMs,
    });
    await app.listen({ port, host });
    log = app.log;
    close = () => app.close();
    closeConnections = () => app.server.closeAllConnections();
  } else {
    const target = parseRedisTarget(env[SERVING_ENV.redisUrl] ?? 'redis://127.0.0.1:6379', {
      cluster: env[REDIS_ENV.cluster],
      name: SERVING_ENV.redisUrl,
    });
    const redis = createServingClient(target, { autoPipelining: env['CREMA_REDIS_AUTOPIPELINE'] !== '0' });
    const eventDurability: Durability = {
      replicas: num(env, REDIS_ENV.waitReplicas) ?? (target.kind === 'cluster' ? 1 : 0),
      timeoutMs: num(env, REDIS_ENV.waitTimeoutMs) ?? 100,
    };
    // WAIT blocks the connection it is sent on until the replicas answer: event writes get
    // their own, so a slow replica never holds up feature reads.
    const eventRedis: RedisClient | undefined =
      eventDurability.replicas > 0
        ? createServingClient(target, { commandTimeoutMs: eventDurability.timeoutMs + 2000 })
        : undefined;
    eventRedis?.on('error', () => {}); // failures surface as 503 answers
    const models = createModelStore({ inferenceThread: env['CREMA_INFERENCE_THREAD'] === '1' });
    const rateLimit = num(env, 'CREMA_RATE_LIMIT_PER_SECOND');
    // The tasks this process was given a model for must be loaded before it is ready; with none
    // configured (a local run), drink ranking is what recommendations need.
    const configured = MODEL_TASKS.filter((t) => env[modelEnvNames(t).uri]);
    const requiredTasks: ModelTask[] = configured.length > 0 ? configured : ['drink-ranking'];
    // The regional menus the operator projects into the pod (ADR 0014); read once the app's
    // logger exists, before listening. Without the setting: the full menu.
    const menuPath = env[SERVING_ENV.regionMenuPath];
    let menuLog: FastifyBaseLogger | undefined;
    const regionMenu = menuPath
      ? new RegionMenuFile({
          path: menuPath,
          log: { warn: (o, m) => menuLog?.warn(o, m), info: (o, m) => menuLog?.info(o, m) },
        })
      : undefined;
    const app = await build({
      ...(regionMenu ? { regionMenu } : {}),
      redis,
      eventDurability,
      ...(eventRedis ? { eventRedis } : {}),
      models,
      logger,
      drain,
      maxConnectionAgeMs,
      requiredTasks,
      // The identity labels of the metrics; the served task (the `revision` label) is the first
      // of requiredTasks: a pod the operator renders has exactly one.
      ...(env[SERVING_ENV.modelName] ? { modelName: env[SERVING_ENV.modelName] } : {}),
      ...(env[SERVING_ENV.podNamespace] ? { namespace: env[SERVING_ENV.podNamespace] } : {}),
      variant: env[SERVING_ENV.variant] ?? 'stable',
      adminToken: env[SERVING_ENV.adminToken] || undefined,
      featureDeadlineMs: num(env, 'CREMA_FEATURE_DEADLINE_MS'),
      eventsMaxLen: num(env, 'CREMA_EVENTS_MAX_LEN'),
      eventDedupTtlSeconds: num(env, 'CREMA_EVENT_DEDUP_TTL_SECONDS'),
      exposedUsersRemembered: num(env, 'CREMA_EXPOSED_USERS_REMEMBERED'),
      batchFeatureReads: env['CREMA_BATCH_FEATURE_READS'] !== '0',
      snapshotPath: env[SERVING_ENV.snapshotPath] || undefined,
      proxyStatsPath: env[SERVING_ENV.proxyStatsPath] || undefined,
      protection: {
        maxInFlight: num(env, 'CREMA_MAX_IN_FLIGHT'),
        latencyTargetMs: num(env, 'CREMA_LATENCY_TARGET_MS'),
        maxQueueMs: num(env, 'CREMA_MAX_QUEUE_MS'),
        saturationUtilization: num(env, 'CREMA_SATURATION_UTILIZATION'),
        shedPaceMs: num(env, 'CREMA_SHED_PACE_MS'),
        maxEventLoopDelayMs: num(env, 'CREMA_MAX_EVENT_LOOP_DELAY_MS'),
        rateLimit: rateLimit
          ? { perSecond: rateLimit, burst: num(env, 'CREMA_RATE_LIMIT_BURST') ?? rateLimit * 2 }
          : false,
      },
    });
    if (regionMenu) {
      menuLog = app.log;
      await regionMenu.start();
      app.addHook('onClose', async () => regionMenu.stop());
    }
    inferenceThread.onLoss = (why) =>
      app.log.error({ err: why }, 'inference thread lost; running inference inline until it restarts');
    app.log.info(
      { redis: target.display, kind: target.kind, eventReplicas: eventDurability.replicas },
      'redis target',
    );
    // Log each distinct Redis error once per outage, not once per reconnect attempt.
    let lastRedisError = '';
    redis.on('error', (err: Error) => {
      if (err.message !== lastRedisError)
        app.log.warn({ err: err.message }, 'redis error; answering from fallback');
      lastRedisError = err.message;
    });
    redis.on('ready', () => {
      if (lastRedisError) app.log.info('redis reachable again');
      lastRedisError = '';
    });
    // Models are loaded and warmed before the port opens, so no request meets a cold session.
    for (const task of MODEL_TASKS) {
      const names = modelEnvNames(task);
      const uri = env[names.uri];
      if (!uri) continue;
      try {
        await models.load(task, uri, env[names.sha256] || undefined);
      } catch (err) {
        // A broken model must not keep the fallback from answering; readyz reports it, and a
        // model can still be put in place through PUT /v1/admin/models/{task}.
        app.log.error({ task, env: names.uri, err: (err as Error).message }, 'model load failed');
      }
    }
    await app.listen({ port, host });
    log = app.log;
    closeConnections = () => app.server.closeAllConnections();
    close = async () => {
      await app.close();
      models.close();
      // Wait for the inference thread to end: a process exiting while onnxruntime's worker is
      // being torn down can abort.
      await inferenceThread.stop();
      redis.disconnect();
      eventRedis?.disconnect();
    };
  }
  // Closing waits for open connections: requests in flight, but also a client that stopped
  // mid-request or never sent a byte, which it would wait for forever (the process then lived
  // on after SIGTERM until the kubelet's SIGKILL). After closeTimeoutSeconds they are closed.
  const closeWithin = () => {
    const timer = setTimeout(() => {
      log.warn(
        { seconds: closeTimeoutSeconds },
        'connections still open after the close timeout; closing them',
      );
      closeConnections();
    }, closeTimeoutSeconds * 1000);
    return close().finally(() => clearTimeout(timer));
  };
  let closing = false;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      if (closing) return;
      closing = true;
      drain.begin();
      if (drainSeconds > 0) log.info({ seconds: drainSeconds, signal: sig }, 'draining before close');
      new Promise((r) => setTimeout(r, drainSeconds * 1000)).then(closeWithin).then(
        () => process.exit(0),
        (err: unknown) => {
          console.error(err);
          process.exit(1);
        },
      );
    });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
