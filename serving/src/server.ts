/**
 * Starts a serving process (default) or a router (`--mode router` or CREMA_MODE=router) and
 * listens; SIGTERM/SIGINT close the server gracefully (in-flight requests finish). Every
 * setting comes from the environment, see docs/serving.md.
 */
import { build, createModelStore } from './app.js';
import { createServingRedis } from './features/redis.js';
import { inferenceThread } from './model/thread.js';
import { buildRouter } from './router/app.js';
import { MODEL_TASKS, modelEnvNames } from '../../contracts/serving-env.js';

function modeOf(argv: readonly string[], env: NodeJS.ProcessEnv): 'serving' | 'router' {
  const i = argv.indexOf('--mode');
  const m = (i >= 0 ? argv[i + 1] : undefined) ?? env['CREMA_MODE'] ?? 'serving';
  if (m !== 'serving' && m !== 'router') throw new Error(`--mode must be serving or router, got ${m}`);
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
  const port = num(env, 'PORT') ?? (mode === 'router' ? 8081 : 8080);
  const host = env['HOST'] ?? '0.0.0.0';
  let close: () => Promise<void>;
  if (mode === 'router') {
    const configPath = env['CREMA_ROUTER_CONFIG'];
    if (!configPath)
      throw new Error('CREMA_ROUTER_CONFIG (path of the router config file) is required in router mode');
    const app = await buildRouter({ configPath, logger });
    await app.listen({ port, host });
    close = () => app.close();
  } else {
    const redis = createServingRedis(env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', {
      autoPipelining: env['CREMA_REDIS_AUTOPIPELINE'] !== '0',
    });
    const models = createModelStore({ inferenceThread: env['CREMA_INFERENCE_THREAD'] !== '0' });
    const rateLimit = num(env, 'CREMA_RATE_LIMIT_PER_SECOND');
    const app = await build({
      redis,
      models,
      logger,
      variant: env['CREMA_VARIANT'] ?? 'stable',
      adminToken: env['CREMA_ADMIN_TOKEN'] || undefined,
      featureDeadlineMs: num(env, 'CREMA_FEATURE_DEADLINE_MS'),
      batchFeatureReads: env['CREMA_BATCH_FEATURE_READS'] !== '0',
      snapshotPath: env['CREMA_SNAPSHOT_PATH'] || undefined,
      protection: {
        maxInFlight: num(env, 'CREMA_MAX_IN_FLIGHT'),
        maxEventLoopDelayMs: num(env, 'CREMA_MAX_EVENT_LOOP_DELAY_MS'),
        rateLimit: rateLimit
          ? { perSecond: rateLimit, burst: num(env, 'CREMA_RATE_LIMIT_BURST') ?? rateLimit * 2 }
          : false,
      },
    });
    inferenceThread.onLoss = (why) =>
      app.log.error({ err: why }, 'inference thread lost; running inference inline until it restarts');
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
        // A broken model must not keep the fallback from answering; readyz reports it.
        app.log.error({ task, err: (err as Error).message }, 'model load failed');
      }
    }
    await app.listen({ port, host });
    close = async () => {
      await app.close();
      models.close();
      // Wait for the inference thread to end: a process exiting while onnxruntime's worker is
      // being torn down can abort.
      await inferenceThread.stop();
      redis.disconnect();
    };
  }
  let closing = false;
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      if (closing) return;
      closing = true;
      close().then(
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
