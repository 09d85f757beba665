/**
 * `build(opts)` assembles the serving app from the dependencies it is given (Redis client,
 * model store, clock, logger); it never listens. `server.ts` listens.
 */
import { readFileSync } from 'node:fs';
import { maxHeaderSize } from 'node:http';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyServerOptions,
} from 'fastify';
import { USER_FEATURES } from '../../contracts/features.js';
import type { ModelTask } from '../../contracts/model-metadata.js';
import type { Durability, RedisClient } from '../../contracts/redis.js';
import { systemClock, type Clock } from './clock.js';
import type { RankingState, ServingContext } from './context.js';
import { DriftMonitor } from './drift/monitor.js';
import { ERRORS, ServingError, type ErrorBody } from './errors.js';
import { ScriptBatcher } from './features/scripts.js';
import { FeatureStore } from './features/store.js';
import { ServingMetrics } from './metrics.js';
import { ExperimentCounting } from './experiments/counting.js';
import { ExperimentTotalsGauges, redisTotalsSource } from './experiments/totals.js';
import type { LoadedModel } from './model/loader.js';
import { ModelStore, type ModelStoreOptions } from './model/store.js';
import { inferenceThread } from './model/thread.js';
import { checkPickupFeatures } from './pickup/estimate.js';
import { DrainState, registerDrain } from './plugins/drain.js';
import { trackDeclaredMethods } from './plugins/method-not-allowed.js';
import { protectionPlugin, type ProtectionOptions } from './plugins/protection.js';
import { LocalTimeResolver } from './ranking/context.js';
import { FULL_MENU, type RegionMenuSource } from './menu/region-menu.js';
import { compileAddonPlan } from './ranking/addons.js';
import { compileRankingPlan } from './ranking/plan.js';
import { eventRoutes } from './routes/events.js';
import { opsRoutes } from './routes/ops.js';
import { pickupRoutes } from './routes/pickup.js';
import { recommendationRoutes } from './routes/recommendations.js';
import { userRoutes } from './routes/users.js';

/** Options of build(); every default is documented in docs/serving.md. */
export interface BuildOptions {
  /** One instance or a cluster (contracts/redis.ts). */
  readonly redis: RedisClient;
  /**
   * Replicas that must confirm an event before it is answered 202 (WAIT), and how long to wait;
   * unconfirmed events are answered 503 (their retry is deduplicated). Default none.
   */
  readonly eventDurability?: Durability;
  /** The client event writes use; give WAIT its own connection. Default `redis`. */
  readonly eventRedis?: RedisClient;
  /** Models; create with createModelStore() so loads are checked against what serving computes. */
  readonly models: ModelStore;
  readonly clock?: Clock;
  /** A logger instance, or fastify logger options (default: no logging). */
  readonly logger?: FastifyBaseLogger | FastifyServerOptions['logger'];
  /** Variant name of this process. Default 'stable'. */
  readonly variant?: string;
  /**
   * The RecommenderModel this process serves (the operator renders CREMA_MODEL_NAME): the `model`
   * label of every metric the operator's analysis and rules select on. Default 'local'.
   */
  readonly modelName?: string;
  /** Its namespace (the operator renders POD_NAMESPACE): the `namespace` label. Default 'local'. */
  readonly namespace?: string;
  /**
   * The RecommenderModel's task: the sha256 of its model is the `revision` label of request
   * metrics (the model that answered each request). Default: the first of `requiredTasks`.
   */
  readonly servedTask?: ModelTask;
  /** Tasks whose model must be loaded before /readyz answers 200. Default ['drink-ranking']. */
  readonly requiredTasks?: readonly ModelTask[];
  /** Set when the process terminates: /readyz answers 503 and answers close their connection. */
  readonly drain?: DrainState;
  /** Close client connections older than this after their next answer (0 = never). Default 0. */
  readonly maxConnectionAgeMs?: number;
  /** Bearer token for erase and admin routes; without it they always answer 401. */
  readonly adminToken?: string;
  /** Per-request feature deadline, ms. Default 25. */
  readonly featureDeadlineMs?: number;
  /** Read the user features of one event-loop turn with one MGET. Default true. */
  readonly batchFeatureReads?: boolean;
  /** How often to look for a new feature version, ms. Default 1000. */
  readonly refreshIntervalMs?: number;
  /** File to save the feature snapshot to and start from when Redis is down at startup. */
  readonly snapshotPath?: string;
  /**
   * The admission proxy's refusal count (a file it rewrites every second, CREMA_PROXY_STATS_PATH),
   * published as crema_requests_rejected_total{reason="proxy"}.
   */
  readonly proxyStatsPath?: string;
  /** Overload and rate limit settings. */
  readonly protection?: Omit<ProtectionOptions, 'clock' | 'metrics'>;
  /**
   * Most entries the events stream may hold (unprocessed by some consumer group: the stream job
   * trims processed ones); at this length new events get 503 EVENTS_STREAM_FULL. Default 1,000,000.
   */
  readonly eventsMaxLen?: number;
  /** Event-id dedup window, seconds. Default 172800 (2 days). */
  readonly eventDedupTtlSeconds?: number;
  /**
   * Users this process remembers as exposed in a running experiment, so their next requests
   * ask Redis nothing (experiments/counting.ts ExposedUsers); 0 asks every time. Default 65536.
   */
  readonly exposedUsersRemembered?: number;
  /** Observations per feature in the drift window. Default 5000. */
  readonly driftWindow?: number;
  /** Observations before drift PSI is published. Default DRIFT_MIN_OBSERVATIONS (500). */
  readonly driftMinObservations?: number;
  /**
   * The regional menus and capacity (ADR 0014), e.g. a RegionMenuFile. Default: the full menu,
   * no capacity bound.
   */
  readonly regionMenu?: RegionMenuSource;
}

/**
 * A model store whose loads are refused unless serving can compute every feature the model
 * names. Inference runs inline on the event loop unless `inferenceThread` is true (the process's
 * inference thread).
 */
export function createModelStore(
  opts: Omit<ModelStoreOptions, 'checks' | 'thread'> & { inferenceThread?: boolean } = {},
): ModelStore {
  const { inferenceThread: useThread, ...rest } = opts;
  return new ModelStore({
    ...rest,
    ...(useThread === true ? { thread: inferenceThread } : {}),
    checks: {
      'drink-ranking': (meta) => void compileRankingPlan(meta.inputs[0]!.features),
      'pickup-time': (meta) => checkPickupFeatures(meta.inputs[0]!.features),
      'addon-attach': (meta) => void compileAddonPlan(meta.inputs[0]!.features),
      churn: (meta) => {
        for (const f of meta.inputs[0]!.features) {
          if (!(USER_FEATURES as readonly string[]).includes(f))
            throw new RangeError(`feature ${f} is not a user feature`);
        }
      },
    },
  });
}

/** Turns fastify/ajv validation details into the dotted name of the offending field. */
function fieldOf(err: FastifyError): string | undefined {
  const v = err.validation?.[0];
  if (!v) return undefined;
  const path = v.instancePath
    .split('/')
    .filter(Boolean)
    .map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`))
    .join('')
    .replace(/^\./, '');
  const params = v.params as { missingProperty?: string; additionalProperty?: string } | undefined;
  const named = params?.missingProperty ?? params?.additionalProperty;
  if (named) return path ? `${path}.${named}` : named;
  return path || undefined;
}

/** Builds the serving app. Resources it starts (feature refresh) stop in onClose. */
export async function build(opts: BuildOptions): Promise<FastifyInstance> {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger;
  const isInstance =
    typeof logger === 'object' && logger !== null && 'child' in logger && typeof logger.child === 'function';
  const app = Fastify({
    ...(isInstance
      ? { loggerInstance: logger as FastifyBaseLogger }
      : { logger: (logger as FastifyServerOptions['logger']) ?? false }),
    // Request logs would carry URLs with user ids; the app logs route templates instead.
    logController: new LogController({ disableRequestLogging: true }),
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
    // find-my-way answers 414 for a path param over maxParamLength (default 100) before any
    // schema runs, so ids of 101-128 characters (and shorter ones percent-encoded) could not be
    // used in /v1/users/{id}. No param can be longer than the request head Node accepts: with
    // that bound the route schemas alone decide, and refuse with a 400 naming the field.
    routerOptions: { maxParamLength: maxHeaderSize },
  }).withTypeProvider<TypeBoxTypeProvider>();

  for (const k of ['eventsMaxLen', 'eventDedupTtlSeconds'] as const) {
    const v = opts[k];
    if (v !== undefined && !(Number.isInteger(v) && v > 0))
      throw new RangeError(`${k} must be a positive integer, got ${v}`);
  }
  const requiredTasks: readonly ModelTask[] = opts.requiredTasks ?? ['drink-ranking'];
  const metrics = new ServingMetrics({
    ...(opts.modelName ? { model: opts.modelName } : {}),
    ...(opts.namespace ? { namespace: opts.namespace } : {}),
    task: opts.servedTask ?? requiredTasks[0] ?? 'drink-ranking',
  });
  if (opts.proxyStatsPath) {
    const path = opts.proxyStatsPath;
    metrics.publishProxyRefusals(() => {
      try {
        const n = Number(readFileSync(path, 'latin1').trim());
        return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
      } catch {
        return undefined; // no proxy (yet): nothing to publish
      }
    });
  }
  const features = new FeatureStore({
    redis: opts.redis,
    clock,
    log: app.log,
    refreshIntervalMs: opts.refreshIntervalMs,
    snapshotPath: opts.snapshotPath,
    batchUserReads: opts.batchFeatureReads,
  });
  const ranking = new WeakMap<LoadedModel, RankingState>();
  const eventRedis = opts.eventRedis ?? opts.redis;
  const eventWrites = ScriptBatcher.forClient(eventRedis, opts.eventDurability);
  // The index add and the totals reads go on the main connection: one kept for WAIT (events'
  // durability) would hold them behind a slow replica.
  const experiments = new ExperimentCounting(
    metrics.registry,
    metrics.model,
    eventWrites,
    opts.redis,
    opts.exposedUsersRemembered,
  );
  // Every process exports every experiment's Redis totals at scrape time (ADR 0012 amendment).
  new ExperimentTotalsGauges(metrics.registry, redisTotalsSource(opts.redis), experiments.failures);
  const ctx: ServingContext = {
    redis: opts.redis,
    eventWrites,
    experiments,
    clock,
    features,
    models: opts.models,
    metrics,
    localTime: new LocalTimeResolver(),
    variant: opts.variant ?? 'stable',
    featureDeadlineMs: opts.featureDeadlineMs ?? 25,
    adminToken: opts.adminToken,
    requiredTasks,
    drain: opts.drain ?? new DrainState(),
    eventsMaxLen: opts.eventsMaxLen ?? 1_000_000,
    eventDedupTtlSeconds: opts.eventDedupTtlSeconds ?? 172_800,
    ranking,
    regionMenu: opts.regionMenu ?? { current: FULL_MENU },
  };
  metrics.setRegionMenuState(opts.regionMenu?.state ?? 'missing');
  opts.regionMenu?.subscribe?.((state) => metrics.setRegionMenuState(state));

  const track = (m: LoadedModel) => {
    const plan = compileRankingPlan(m.meta.inputs[0]!.features);
    const names = m.meta.inputs[0]!.features;
    const monitored = plan.columns.flatMap((c, column) =>
      c.kind === 'user' || c.kind === 'context' ? [{ feature: names[column]!, column }] : [],
    );
    const drift = new DriftMonitor(
      m.meta,
      monitored.map((x) => x.feature),
      opts.driftWindow ?? 5000,
      ...(opts.driftMinObservations !== undefined ? [opts.driftMinObservations] : []),
    );
    if (!drift.perContext) {
      // A window of minutes is then compared with a whole day: time-of-day features read
      // PSI above any threshold with no drift (ADR 0010). Retraining writes the baselines.
      app.log.warn(
        { model: m.meta.name, revision: m.revision },
        'model metadata has no per-context drift baselines; drift PSI compares with the whole-day baseline (retrain to fix)',
      );
    }
    ranking.set(m, { plan, drift, monitored });
    metrics.setDriftMonitor(drift);
  };
  for (const m of opts.models.all()) {
    metrics.modelSwapped(m.meta.task, m.meta);
    if (m.meta.task === 'drink-ranking') track(m);
  }
  opts.models.onSwap((task, next, prev) => {
    metrics.modelSwapped(task, next.meta, prev?.meta);
    if (task === 'drink-ranking') track(next);
  });

  registerDrain(app, ctx.drain, opts.maxConnectionAgeMs ?? 0);

  app.setErrorHandler((err: FastifyError | ServingError, req, reply) => {
    let body: ErrorBody;
    let status: number;
    if (err instanceof ServingError) {
      status = err.status;
      body = { code: err.code, message: err.message, ...(err.extra.field ? { field: err.extra.field } : {}) };
      if (err.extra.retryAfterSeconds) void reply.header('retry-after', String(err.extra.retryAfterSeconds));
      if (err.extra.allow) void reply.header('allow', err.extra.allow);
    } else if (err.validation) {
      status = 400;
      const field = fieldOf(err);
      // ajv's "must NOT have additional properties" does not say which one.
      const extra = (err.validation[0]?.params as { additionalProperty?: string } | undefined)
        ?.additionalProperty;
      const message = extra ? `${err.message}: ${extra}` : err.message;
      body = { code: 'VALIDATION', message, ...(field ? { field } : {}) };
    } else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      status = err.statusCode;
      body = { code: status === 404 ? 'NOT_FOUND' : 'VALIDATION', message: err.message };
    } else {
      status = 500;
      body = { code: 'INTERNAL', message: ERRORS.INTERNAL.message };
    }
    // Only unexpected failures are logged: shed (503) and refused requests are counted in
    // metrics, and logging each one would add work exactly when the process is overloaded.
    if (body.code === 'INTERNAL') {
      req.log.error({ route: req.routeOptions.url, code: body.code, err: err.message }, 'request failed');
    }
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((_req, reply) =>
    reply.code(404).send({ code: 'NOT_FOUND', message: ERRORS.NOT_FOUND.message }),
  );

  app.addHook('onResponse', (req, reply, done) => {
    metrics.httpDuration.observe(
      {
        ...metrics.labelsFor(req),
        variant: ctx.variant,
        route: req.routeOptions.url ?? 'unmatched',
        method: req.method,
        status_code: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
    done();
  });

  const declareMethodNotAllowed = trackDeclaredMethods(app);
  await app.register(swagger, {
    openapi: {
      info: { title: 'Crema serving API', version: '1.0.0' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  await app.register(protectionPlugin, {
    ...opts.protection,
    // The adaptive concurrency limit and the queue-time check (ADR 0007) are opt-in: both act
    // only while the process is saturated (judged from its own CPU time, so a starved node does
    // not trip them), but at 10x offered load with 2,000 clients every request has waited in its
    // socket longer than any useful bound before it is read, so they refuse nearly everything:
    // bench:overload on a quiet machine admitted 56 req/s (42 % from the model) with them on and
    // 910 req/s (58 %) with them off. 50 and 25 (2x and 1x the feature deadline) are the values
    // to start from when turning them on.
    latencyTargetMs: opts.protection?.latencyTargetMs ?? 0,
    maxQueueMs: opts.protection?.maxQueueMs ?? 0,
    onRefusedEarly: (route, method, seconds) =>
      metrics.httpDuration.observe(
        { ...metrics.labelsFor(), variant: ctx.variant, route, method, status_code: '503' },
        seconds,
      ),
    shedPaceMs: opts.protection?.shedPaceMs ?? ctx.featureDeadlineMs,
    clock,
    metrics,
  });
  await app.register(opsRoutes, { ctx });
  await app.register(recommendationRoutes, { ctx });
  await app.register(pickupRoutes, { ctx });
  await app.register(eventRoutes, { ctx });
  await app.register(userRoutes, { ctx });
  // After the last route: 405 with Allow for the other methods of every declared path.
  declareMethodNotAllowed();

  app.addHook('onReady', async () => {
    await features.start();
  });
  app.addHook('onClose', async () => {
    features.stop();
  });
  return app;
}
