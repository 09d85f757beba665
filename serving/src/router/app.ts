/**
 * Router mode: the same program started as a router. It assigns each request's user a variant
 * (sticky hash of user id and salt, weights from a watched config file) and forwards the
 * request over keep-alive HTTP to that variant's upstream. An unknown or unreachable upstream
 * sends the request to stable instead.
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
import { readRouterConfig, routeFor, type RouterConfig } from './config.js';

/** Options of buildRouter. */
export interface RouterOptions {
  /** Config file to read and watch; or */
  readonly configPath?: string;
  /** a fixed config (tests). */
  readonly config?: RouterConfig;
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
class UpstreamUnreachable extends Error {}

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
  if (!opts.config && !opts.configPath) throw new RangeError('buildRouter: configPath or config is required');
  const logger = opts.logger;
  const isInstance = typeof logger === 'object' && logger !== null && 'child' in logger;
  const app = Fastify({
    ...(isInstance
      ? { loggerInstance: logger as FastifyBaseLogger }
      : { logger: (logger as FastifyServerOptions['logger']) ?? false }),
    logController: new LogController({ disableRequestLogging: true }),
  });
  let config: RouterConfig = opts.config ?? (await readRouterConfig(opts.configPath!));
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
  ): Promise<Upstream> => {
    const out: Record<string, string> = { 'x-crema-variant': variant };
    for (const h of FORWARDED_REQUEST_HEADERS) {
      const v = headers[h];
      if (typeof v === 'string') out[h] = v;
    }
    let res;
    try {
      res = await poolFor(base).request({
        path: url,
        method: method as 'GET',
        headers: out,
        ...(body ? { body } : {}),
      });
    } catch (err) {
      throw new UpstreamUnreachable((err as Error).message);
    }
    try {
      const buf = Buffer.from(await res.body.arrayBuffer());
      return { status: res.statusCode, headers: res.headers as IncomingHttpHeaders, body: buf };
    } catch (err) {
      throw new UpstreamUnreachable((err as Error).message);
    }
  };

  // Bodies are forwarded as received; only the user id is read from them.
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async () => ({ ready: true, variants: config.variants.map((v) => v.name) }));
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));

  app.route({
    method: ['GET', 'POST', 'PUT', 'DELETE'],
    url: '/v1/*',
    handler: async (req, reply) => {
      const body = Buffer.isBuffer(req.body) ? req.body : undefined;
      const cfg = config;
      const route = routeFor(cfg, userIdOf(req.url, body));
      if (route.rerouted) fallbacks.inc({ variant: route.variant, reason: 'unknown_upstream' });
      const stable = cfg.variants.find((v) => v.name === cfg.stable)!;
      let served = route.rerouted ? stable.name : route.variant;
      let answer: Upstream;
      try {
        answer = await forward(route.upstream, req.method, req.url, req.headers, body, route.variant);
      } catch (err) {
        if (!(err instanceof UpstreamUnreachable) || served === stable.name) {
          req.log.error({ variant: served, err: (err as Error).message }, 'stable upstream unreachable');
          return reply.code(502).send({ code: 'UPSTREAM_UNAVAILABLE', message: 'no upstream could answer' });
        }
        fallbacks.inc({ variant: route.variant, reason: 'upstream_down' });
        served = stable.name;
        try {
          answer = await forward(stable.upstream!, req.method, req.url, req.headers, body, stable.name);
        } catch (err2) {
          req.log.error({ err: (err2 as Error).message }, 'stable upstream unreachable');
          return reply.code(502).send({ code: 'UPSTREAM_UNAVAILABLE', message: 'no upstream could answer' });
        }
      }
      requests.inc({ variant: route.variant, served_by: served });
      duration.observe({ variant: served }, reply.elapsedTime / 1000);
      void reply.code(answer.status).header('x-crema-variant', served);
      for (const h of RETURNED_HEADERS) {
        const v = answer.headers[h];
        if (typeof v === 'string') void reply.header(h, v);
      }
      return reply.send(answer.body);
    },
  });
  return app;
}
