/**
 * Router mode: the same program started as a router. It assigns each request's user a variant
 * (sticky hash of user id and salt, weights from a watched ConfigMap or config file) and
 * forwards the request over keep-alive HTTP to that variant's upstream. A connection that
 * fails before any answer is retried once; an unknown or unreachable upstream sends the
 * request to stable instead.
 *
 * Every routed request pays for the router, so the forwarding path is kept to the bare minimum
 * (ADR 0018): `/v1/*` is answered by a node:http handler ahead of fastify (fastify keeps
 * /healthz, /readyz, /metrics, and `inject` for tests, which reaches the same handler through a
 * hijacked route), the user id is scanned out of the body instead of JSON.parse
 * (`user-id.ts`), upstream answers are read with a raw undici dispatch handler instead of a
 * body stream, and everything derived from a config (its id, stable, the experiment headers,
 * the metric label sets) is computed once per config, not per request.
 */
import { unwatchFile, watchFile } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyServerOptions,
} from 'fastify';
import { Counter, Histogram, Registry } from 'prom-client';
import { Pool, type Dispatcher } from 'undici';
import type { KubeConfig } from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import { DrainState, registerDrain } from '../plugins/drain.js';
import {
  parseRouterConfig,
  readRouterConfig,
  routeFor,
  type RouterConfig,
  type RouterVariant,
} from './config.js';
import { watchRouterConfigMap } from './configmap-source.js';
import { userIdOf } from './user-id.js';
import { EXPERIMENT_HEADERS } from '../../../contracts/experiments.js';

export { userIdOf };

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

/** An upstream answer: what the router passes on of it. */
interface Upstream {
  status: number;
  contentType: string | undefined;
  retryAfter: string | undefined;
  body: Buffer;
}

/** Request headers passed on to the upstream (lower case: node:http's header names). */
const FORWARDED_REQUEST_HEADERS = ['content-type', 'accept', 'authorization', 'x-client-id', 'x-request-id'];
/** fastify's default body limit, which the router had before it read bodies itself. */
const BODY_LIMIT = 1 << 20;
const ROUTED_METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE']);

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

/** One request to `pool`, its answer collected into one buffer (no body stream per request). */
function dispatchOnce(pool: Pool, opts: Dispatcher.DispatchOptions): Promise<Upstream> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let status = 0;
    let contentType: string | undefined;
    let retryAfter: string | undefined;
    let answered = false;
    pool.dispatch(opts, {
      onConnect() {},
      onHeaders(statusCode, raw) {
        if (statusCode < 200) return true; // 1xx: the answer is still to come
        answered = true;
        status = statusCode;
        for (let i = 0; i < raw.length; i += 2) {
          const k = raw[i]!;
          // content-type (12) and retry-after (11); case-insensitive as HTTP header names are
          if (k.length === 12 && k.toString('latin1').toLowerCase() === 'content-type')
            contentType = raw[i + 1]!.toString('latin1');
          else if (k.length === 11 && k.toString('latin1').toLowerCase() === 'retry-after')
            retryAfter = raw[i + 1]!.toString('latin1');
        }
        return true;
      },
      onData(chunk) {
        chunks.push(chunk);
        return true;
      },
      onComplete() {
        resolve({
          status,
          contentType,
          retryAfter,
          body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks),
        });
      },
      onError(err) {
        const e = err as Error & { code?: string };
        reject(
          new UpstreamUnreachable(
            e.message,
            !answered && CONNECTION_LOST.test(`${e.code ?? ''} ${e.name} ${e.message}`),
          ),
        );
      },
    });
  });
}

/** Everything a request needs from the config in effect, computed once per config. */
interface Active {
  readonly config: RouterConfig;
  /** x-crema-router-config: 12 hex of the config's sha256. */
  readonly id: string;
  readonly stable: RouterVariant & { readonly upstream: string };
  /** Experiment headers without the variant (name, value, ...). */
  readonly experiment: readonly string[];
}

function activate(config: RouterConfig): Active {
  const stable = config.variants.find((v) => v.name === config.stable)!;
  const e = config.experiment;
  return {
    config,
    // Which config routed a request, so a client or test can tell the answers of one weight
    // setting from the next.
    id: createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 12),
    stable: stable as Active['stable'],
    experiment: e
      ? [
          EXPERIMENT_HEADERS.experiment,
          e.id,
          EXPERIMENT_HEADERS.run,
          e.run,
          EXPERIMENT_HEADERS.ttlSeconds,
          String(e.ttlSeconds),
        ]
      : [],
  };
}

/** A JSON error answer of the router. */
function sendError(res: ServerResponse, status: number, code: string, message: string, close: boolean): void {
  const body = JSON.stringify({ code, message });
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  };
  if (close) headers['connection'] = 'close';
  res.writeHead(status, headers);
  res.end(body);
}

/** Builds the router app; it never listens. */
export async function buildRouter(opts: RouterOptions): Promise<FastifyInstance> {
  if (!opts.config && !opts.configPath && !opts.configMap)
    throw new RangeError('buildRouter: configPath, configMap or config is required');
  const logger = opts.logger;
  const isInstance = typeof logger === 'object' && logger !== null && 'child' in logger;
  // /v1/* bypasses fastify on a listening server (see the file comment); `routed` is set below.
  let routed: (req: IncomingMessage, res: ServerResponse) => void = () => undefined;
  const app = Fastify({
    ...(isInstance
      ? { loggerInstance: logger as FastifyBaseLogger }
      : { logger: (logger as FastifyServerOptions['logger']) ?? false }),
    logController: new LogController({ disableRequestLogging: true }),
    serverFactory: (handler, o) => {
      const server = createServer((req, res) => {
        const url = req.url!;
        if (url.charCodeAt(3) === 0x2f && url.startsWith('/v1/') && ROUTED_METHODS.has(req.method!))
          routed(req, res);
        else handler(req, res);
      });
      // what fastify sets on a server it creates (keep-alive 72 s: longer than clients' idle pools)
      const n = (x: unknown) => (typeof x === 'number' ? x : undefined);
      const { keepAliveTimeout, requestTimeout, connectionTimeout } = o as Record<string, unknown>;
      if (n(keepAliveTimeout) !== undefined) server.keepAliveTimeout = n(keepAliveTimeout)!;
      if (n(requestTimeout) !== undefined) server.requestTimeout = n(requestTimeout)!;
      if (n(connectionTimeout) !== undefined) server.setTimeout(n(connectionTimeout));
      return server;
    },
  });
  // Undefined only while a watched ConfigMap has not been read yet (the router is not ready then).
  const first = opts.config ?? (opts.configPath ? await readRouterConfig(opts.configPath) : undefined);
  let active: Active | undefined = first ? activate(first) : undefined;
  const drain = opts.drain ?? new DrainState();
  const closes = registerDrain(app, drain, opts.maxConnectionAgeMs ?? 0);
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

  const apply = (c: RouterConfig) => {
    active = activate(c);
    configReloads.inc({ outcome: 'applied' });
    app.log.info({ variants: c.variants.map((v) => `${v.name}=${v.weight}`) }, 'router config applied');
  };
  const reject = (err: unknown) => {
    configReloads.inc({ outcome: 'rejected' });
    app.log.error({ err: (err as Error).message }, 'router config rejected; keeping the previous one');
  };
  if (opts.configPath && !opts.config) {
    const path = opts.configPath;
    watchFile(path, { interval: opts.watchIntervalMs ?? 500, persistent: false }, () => {
      readRouterConfig(path).then(apply, reject);
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
        let c: RouterConfig;
        try {
          c = parseRouterConfig(text);
        } catch (err) {
          reject(err);
          return;
        }
        apply(c);
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
    req: IncomingMessage,
    body: Buffer | undefined,
    variant: string,
    a: Active,
    /** The user's assigned variant is served: serving may count the request as its exposure. */
    exposes: boolean,
  ): Promise<Upstream> => {
    const headers: string[] = ['x-crema-variant', variant];
    const inHeaders = req.headers;
    for (const h of FORWARDED_REQUEST_HEADERS) {
      const v = inHeaders[h];
      if (typeof v === 'string') headers.push(h, v);
    }
    // The experiment headers come from the config only, never from the client. A request of a
    // user sent to stable instead of their variant carries no variant: serving must not expose
    // the user under a treatment they did not get (an order of an exposed user still counts,
    // for the variant recorded at exposure).
    if (a.experiment.length > 0) {
      headers.push(...a.experiment);
      if (exposes) headers.push(EXPERIMENT_HEADERS.variant, variant);
    }
    const opts: Dispatcher.DispatchOptions = {
      path: url,
      method: method as Dispatcher.HttpMethod,
      headers,
      ...(body ? { body } : {}),
    };
    const pool = poolFor(base);
    try {
      return await dispatchOnce(pool, opts);
    } catch (err) {
      // A pooled connection the upstream closed as we sent (a pod going away): one new try.
      if (err instanceof UpstreamUnreachable && err.retryable) return dispatchOnce(pool, opts);
      throw err;
    }
  };

  /**
   * Routes and forwards one request whose body has been read. `progressive` writes the answer's
   * headers one by one (light-my-request's inject only sees headers set that way).
   */
  const handle = async (
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer | undefined,
    startedAt: number,
    progressive: boolean,
  ): Promise<void> => {
    // This request is routed by the config in effect now, whatever changes while it is forwarded.
    const a = active;
    const socket = req.socket as Socket;
    if (!a) return sendError(res, 503, 'NOT_READY', 'router config not loaded yet', closes(socket));
    const url = req.url!;
    const route = routeFor(a.config, userIdOf(url, body));
    if (route.rerouted) fallbacks.inc({ variant: route.variant, reason: 'unknown_upstream' });
    const stable = a.stable;
    let served = route.rerouted ? stable.name : route.variant;
    let answer: Upstream;
    try {
      // An unknown upstream sends the assigned variant's user to stable (route.upstream).
      answer = await forward(route.upstream, req.method!, url, req, body, served, a, !route.rerouted);
    } catch (err) {
      if (!(err instanceof UpstreamUnreachable) || served === stable.name) {
        app.log.error({ variant: served, err: (err as Error).message }, 'stable upstream unreachable');
        return sendError(res, 502, 'UPSTREAM_UNAVAILABLE', 'no upstream could answer', closes(socket));
      }
      fallbacks.inc({ variant: route.variant, reason: 'upstream_down' });
      served = stable.name;
      try {
        answer = await forward(stable.upstream, req.method!, url, req, body, stable.name, a, false);
      } catch (err2) {
        app.log.error({ err: (err2 as Error).message }, 'stable upstream unreachable');
        return sendError(res, 502, 'UPSTREAM_UNAVAILABLE', 'no upstream could answer', closes(socket));
      }
    }
    requests.inc({ variant: route.variant, served_by: served });
    duration.observe({ variant: served }, (performance.now() - startedAt) / 1000);
    const headers = [
      'x-crema-variant',
      served,
      'x-crema-router-config',
      a.id,
      'content-type',
      answer.contentType ?? 'application/octet-stream',
      'content-length',
      String(answer.body.length),
    ];
    if (answer.retryAfter !== undefined) headers.push('retry-after', answer.retryAfter);
    if (closes(socket)) headers.push('connection', 'close');
    if (progressive) for (let i = 0; i < headers.length; i += 2) res.setHeader(headers[i]!, headers[i + 1]!);
    res.writeHead(answer.status, progressive ? undefined : headers);
    res.end(answer.body);
  };
  const failed = (res: ServerResponse) => (err: unknown) => {
    app.log.error({ err: (err as Error).message }, 'router failed to answer');
    if (!res.headersSent) sendError(res, 500, 'INTERNAL', 'router error', true);
    else res.destroy();
  };

  routed = (req, res) => {
    const startedAt = performance.now();
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > BODY_LIMIT) {
      sendError(res, 413, 'BODY_TOO_LARGE', `request body over ${BODY_LIMIT} bytes`, true);
      req.resume();
      return;
    }
    let first: Buffer | undefined;
    let more: Buffer[] | undefined;
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > BODY_LIMIT) return;
      if (first === undefined) first = chunk;
      else (more ??= [first]).push(chunk);
    });
    req.on('end', () => {
      if (size > BODY_LIMIT) {
        sendError(res, 413, 'BODY_TOO_LARGE', `request body over ${BODY_LIMIT} bytes`, true);
        return;
      }
      const body = more ? Buffer.concat(more) : first;
      handle(req, res, body, startedAt, false).catch(failed(res));
    });
  };

  // The same routing for app.inject (tests): fastify has read the body already.
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.route({
    method: ['GET', 'POST', 'PUT', 'DELETE'],
    url: '/v1/*',
    handler: (req, reply) => {
      reply.hijack();
      const raw: unknown = req.body;
      const body =
        typeof raw === 'string' ? Buffer.from(raw) : Buffer.isBuffer(raw) && raw.length > 0 ? raw : undefined;
      handle(req.raw, reply.raw, body, performance.now(), true).catch(failed(reply.raw));
    },
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const ready = active !== undefined && !drain.active;
    return reply.code(ready ? 200 : 503).send({
      ready,
      draining: drain.active,
      variants: active?.config.variants.map((v) => v.name) ?? [],
    });
  });
  app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  return app;
}
