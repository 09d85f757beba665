/**
 * Router mode: the same program started as a router. It assigns each request's user a variant
 * (sticky hash of user id and salt, weights from a watched ConfigMap or config file) and
 * forwards the request over keep-alive HTTP to that variant's upstream. A connection that
 * fails before any answer is retried once; an unknown or unreachable upstream sends the
 * request to stable instead.
 */
import { unwatchFile, watchFile } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyServerOptions,
} from 'fastify';
import { Counter, Histogram, Registry } from 'prom-client';
import { Pool } from 'undici';
import type { KubeConfig } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import { DrainState, registerDrain } from '../plugins/drain.js';
import { parseRouterConfig, readRouterConfig, routeFor, type RouterConfig } from './config.js';
import { watchRouterConfigMap } from './configmap-source.js';
import { EXPERIMENT_HEADERS } from '../../../contracts/experiments.js';

/** Options of buildRouter. */
export interface RouterOptions {
  /** Config file to read and watch; or */
  readonly configPath?: string;
  /** a ConfigMap to watch through the API (in a cluster; router.json key); or */
  readonly configMap?: {
    readonly namespace: string;
    readonly name: string;
    readonly kubeConfig?: KubeConfig;
  };
  /** a fixed config (tests). */
  readonly config?: RouterConfig;
  /** Set when the process terminates: /readyz answers 503 and answers close their connection. */
  readonly drain?: DrainState;
  /** Close client connections older than this after their next answer (0 = never). Default 0. */
  readonly maxConnectionAgeMs?: number;
  readonly logger?: FastifyBaseLogger | FastifyServerOptions['logger'];
  /** Upstream timeout, ms. Default 2000. */
  readonly upstreamTimeoutMs?: number;
  /** How often the config file is checked for changes, ms. Default 500. */
  readonly watchIntervalMs?: number;
}

/** An upstream answer. */
interface Upstream {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

const FORWARDED_REQUEST_HEADERS = ['content-type', 'accept', 'authorization', 'x-client-id', 'x-request-id'];
const RETURNED_HEADERS = ['content-type', 'retry-after'];

/** An error reaching the upstream (as opposed to an answer from it). */
class UpstreamUnreachable extends Error {
  constructor(
    message: string,
    /** The connection failed or was closed before an answer: safe to try once more. */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** undici's errors for a connection that was refused, reset or closed under the request. */
const CONNECTION_LOST = /ECONNRESET|ECONNREFUSED|EPIPE|other side closed|socket hang up|SocketError/i;

/** The user a request is about: the `/v1/users/{id}` path segment or the JSON body's userId. */
export function userIdOf(url: string, body: Buffer | undefined): string | undefined {
  const m = /^\/v1\/users\/([^/?]+)/.exec(url);
  if (m) {
    try {
      return decodeURIComponent(m[1]!);
    } catch {
      return undefined;
    }
  }
  if (!body || body.length === 0) return undefined;
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { userId?: unknown };
    return typeof parsed.userId === 'string' ? parsed.userId : undefined;
  } catch {
    return undefined;
  }
}

/** Builds the router app; it never listens. */
export async function buildRouter(opts: RouterOptions): Promise<FastifyInstance> {
  if (!opts.config && !opts.configPath && !opts.configMap)
    throw new RangeError('buildRouter: configPath, configMap or config is required');
  const logger = opts.logger;
  const isInstance = typeof logger === 'object' && logger !== null && 'child' in logger;
  const app = Fastify({
    ...(isInstance
      ? { loggerInstance: logger as FastifyBaseLogger }
      : { logger: (logger as FastifyServerOptions['logger']) ?? false }),
    logController: new LogController({ disableRequestLogging: true }),
  });
  // Undefined only while a watched ConfigMap has not been read yet (the router is not ready then).
  let config: RouterConfig | undefined =
    opts.config ?? (opts.configPath ? await readRouterConfig(opts.configPath) : undefined);
  // Which config routed a request (x-crema-router-config): 12 hex of the config's sha256, so a
  // client or test can tell the answers of one weight setting from the next.
  const idOf = (c: RouterConfig | undefined) =>
    c ? createHash('sha256').update(JSON.stringify(c)).digest('hex').slice(0, 12) : '';
  let configId = idOf(config);
  const drain = opts.drain ?? new DrainState();
  registerDrain(app, drain, opts.maxConnectionAgeMs ?? 0);
  const timeoutMs = opts.upstreamTimeoutMs ?? 2000;
  // One keep-alive connection pool per upstream (undici's Pool does less work per request than
  // node:http's Agent; the router's cost is pure overhead on every request).
  const pools = new Map<string, Pool>();
  const poolFor = (upstream: string) => {
    let p = pools.get(upstream);
    if (!p) {
      p = new Pool(new URL(upstream).origin, {
        connections: 128,
        keepAliveTimeout: 10_000,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        connectTimeout: timeoutMs,
      });
      pools.set(upstream, p);
    }
    return p;
  };

  const registry = new Registry();
  const requests = new Counter({
    name: 'crema_router_requests_total',
    help: 'Requests forwarded, by assigned variant and the variant that served them.',
    labelNames: ['variant', 'served_by'],
    registers: [registry],
  });
  const fallbacks = new Counter({
    name: 'crema_router_fallbacks_total',
    help: 'Requests sent to stable instead of their variant, by reason (unknown_upstream, upstream_down).',
    labelNames: ['variant', 'reason'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'crema_router_request_duration_seconds',
    help: 'Time from request to forwarded answer, by served variant.',
    labelNames: ['variant'],
    buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  const configReloads = new Counter({
    name: 'crema_router_config_reloads_total',
    help: 'Config file reloads by outcome (applied, rejected).',
    labelNames: ['outcome'],
    registers: [registry],
  });

  if (opts.configPath && !opts.config) {
    const path = opts.configPath;
    watchFile(path, { interval: opts.watchIntervalMs ?? 500, persistent: false }, () => {
      readRouterConfig(path).then(
        (c) => {
          config = c;
          configId = idOf(c);
          configReloads.inc({ outcome: 'applied' });
          app.log.info({ variants: c.variants.map((v) => `${v.name}=${v.weight}`) }, 'router config applied');
        },
        (err: unknown) => {
          configReloads.inc({ outcome: 'rejected' });
          app.log.error({ err: (err as Error).message }, 'router config rejected; keeping the previous one');
        },
      );
    });
    app.addHook('onClose', async () => unwatchFile(path));
  }
  if (opts.configMap) {
    const { namespace, name, kubeConfig } = opts.configMap;
    let lastText = '';
    const source = watchRouterConfigMap({
      namespace,
      name,
      ...(kubeConfig ? { kubeConfig } : {}),
      onText: (text) => {
        if (text === lastText) return;
        lastText = text;
        try {
          const c = parseRouterConfig(text);
          config = c;
          configId = idOf(c);
          configReloads.inc({ outcome: 'applied' });
          app.log.info({ variants: c.variants.map((v) => `${v.name}=${v.weight}`) }, 'router config applied');
        } catch (err) {
          configReloads.inc({ outcome: 'rejected' });
          app.log.error({ err: (err as Error).message }, 'router config rejected; keeping the previous one');
        }
      },
      onMissing: () =>
        app.log.warn(`ConfigMap ${namespace}/${name} has no router.json; keeping the current config`),
      onError: (err) => app.log.warn({ err: String(err) }, 'router config watch failed; retrying'),
    });
    source.first.catch((err: unknown) => app.log.warn({ err: String(err) }, 'router config list failed'));
    app.addHook('onClose', () => source.stop());
  }
  app.addHook('onClose', async () => {
    await Promise.all([...pools.values()].map((p) => p.destroy()));
  });

  const forward = async (
    base: string,
    method: string,
    url: string,
    headers: IncomingHttpHeaders,
    body: Buffer | undefined,
    variant: string,
    experiment: RouterConfig['experiment'],
    /** The user's assigned variant is served: serving may count the request as its exposure. */
    exposes: boolean,
  ): Promise<Upstream> => {
    const out: Record<string, string> = { 'x-crema-variant': variant };
    for (const h of FORWARDED_REQUEST_HEADERS) {
      const v = headers[h];
      if (typeof v === 'string') out[h] = v;
    }
    // The experiment headers come from the config only, never from the client. A request of a
    // user sent to stable instead of their variant carries no variant: serving must not expose
    // the user under a treatment they did not get (an order of an exposed user still counts,
    // for the variant recorded at exposure).
    if (experiment) {
      out[EXPERIMENT_HEADERS.experiment] = experiment.id;
      out[EXPERIMENT_HEADERS.run] = experiment.run;
      if (exposes) out[EXPERIMENT_HEADERS.variant] = variant;
      out[EXPERIMENT_HEADERS.ttlSeconds] = String(experiment.ttlSeconds);
    }
    const once = async (): Promise<Upstream> => {
      let res;
      try {
        res = await poolFor(base).request({
          path: url,
          method: method as 'GET',
          headers: out,
          ...(body ? { body } : {}),
        });
      } catch (err) {
        const e = err as Error & { code?: string };
        throw new UpstreamUnreachable(
          e.message,
          CONNECTION_LOST.test(`${e.code ?? ''} ${e.name} ${e.message}`),
        );
      }
      try {
        const buf = Buffer.from(await res.body.arrayBuffer());
        return { status: res.statusCode, headers: res.headers as IncomingHttpHeaders, body: buf };
      } catch (err) {
        throw new UpstreamUnreachable((err as Error).message, false);
      }
    };
    try {
      return await once();
    } catch (err) {
      // A pooled connection the upstream closed as we sent (a pod going away): one new try.
      if (err instanceof UpstreamUnreachable && err.retryable) return once();
      throw err;
    }
  };

  // Bodies are forwarded as received; only the user id is read from them.
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const ready = config !== undefined && !drain.active;
    return reply
      .code(ready ? 200 : 503)
      .send({ ready, draining: drain.active, variants: config?.variants.map((v) => v.name) ?? [] });
  });
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  app.route({
    method: ['GET', 'POST', 'PUT', 'DELETE'],
    url: '/v1/*',
    handler: async (req, reply) => {
      const body = Buffer.isBuffer(req.body) ? req.body : undefined;
      // This request is routed by the config in effect now, whatever changes while it is forwarded.
      const cfg = config;
      const cfgId = configId;
      if (!cfg) return reply.code(503).send({ code: 'NOT_READY', message: 'router config not loaded yet' });
      const route = routeFor(cfg, userIdOf(req.url, body));
      if (route.rerouted) fallbacks.inc({ variant: route.variant, reason: 'unknown_upstream' });
      const stable = cfg.variants.find((v) => v.name === cfg.stable)!;
      let served = route.rerouted ? stable.name : route.variant;
      let answer: Upstream;
      try {
        answer = await forward(
          route.upstream,
          req.method,
          req.url,
          req.headers,
          body,
          served,
          cfg.experiment,
          // An unknown upstream sends the assigned variant's user to stable (route.upstream).
          !route.rerouted,
        );
      } catch (err) {
        if (!(err instanceof UpstreamUnreachable) || served === stable.name) {
          req.log.error({ variant: served, err: (err as Error).message }, 'stable upstream unreachable');
          return reply.code(502).send({ code: 'UPSTREAM_UNAVAILABLE', message: 'no upstream could answer' });
        }
        fallbacks.inc({ variant: route.variant, reason: 'upstream_down' });
        served = stable.name;
        try {
          answer = await forward(
            stable.upstream!,
            req.method,
            req.url,
            req.headers,
            body,
            stable.name,
            cfg.experiment,
            false,
          );
        } catch (err2) {
          req.log.error({ err: (err2 as Error).message }, 'stable upstream unreachable');
          return reply.code(502).send({ code: 'UPSTREAM_UNAVAILABLE', message: 'no upstream could answer' });
        }
      }
      requests.inc({ variant: route.variant, served_by: served });
      duration.observe({ variant: served }, reply.elapsedTime / 1000);
      void reply.code(answer.status).header('x-crema-variant', served).header('x-crema-router-config', cfgId);
      for (const h of RETURNED_HEADERS) {
        const v = answer.headers[h];
        if (typeof v === 'string') void reply.header(h, v);
      }
      return reply.send(answer.body);
    },
  });
  return app;
}
