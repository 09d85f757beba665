/**
 * Load shedding and per-client rate limiting, checked before any work is done for a request
 * (ADR 0007): a request that waited too long in a standing queue, more requests in flight than
 * the adaptive limit (or the hard cap), or a lagging event loop → 503 with Retry-After; a
 * client over its token bucket → 429 with Retry-After. Probes and metrics are never refused.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { availableParallelism } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ServingError } from '../errors.js';
import type { Clock } from '../clock.js';
import type { ServingMetrics } from '../metrics.js';
import {
  availableCores,
  ConcurrencyLimit,
  LoopSaturation,
  QueueDelayCheck,
  QueueDelayEstimator,
  readLoopThreadTimes,
  type ThreadTimes,
} from './admission.js';

/** Why a request was refused: the `reason` label of crema_requests_rejected_total. */
export type ShedReason = 'queue_time' | 'concurrency_limit' | 'in_flight' | 'event_loop_delay' | 'rate_limit';

/** Options of the protection plugin. */
export interface ProtectionOptions {
  readonly clock: Clock;
  readonly metrics?: ServingMetrics;
  /**
   * Hard cap of requests handled at once (and of the adaptive limit). Default 512; 0 disables
   * the cap (the adaptive limit then has no ceiling but 512).
   */
  readonly maxInFlight?: number;
  /**
   * Latency target (ms, from admission to the answer) of the adaptive concurrency limit: the
   * limit shrinks while more than 10 % of admitted requests take longer or miss their feature
   * deadline (markDeadlineMissed), and grows while they do not. Default 50 (serving: twice the
   * feature deadline). 0 disables the adaptive limit.
   */
  readonly latencyTargetMs?: number;
  /**
   * Longest time (ms) a request may have waited, unread, while a queue stands (the smallest
   * wait of the last 100 ms above half of it); older ones get 503 before any work is done.
   * Default: the feature deadline (25). 0 disables.
   */
  readonly maxQueueMs?: number;
  /**
   * Mean event loop delay (ms, over a 1 s window) above which new requests get 503. Default 100;
   * 0 disables. The mean, not a high percentile: one stall (a GC, a busy node descheduling the
   * process, a pod's first requests) is over by the time it is measured, and shedding every
   * request of the next window for it fails answers a healthy process would have given. A
   * sustained lag (real overload) moves the mean.
   */
  readonly maxEventLoopDelayMs?: number;
  /**
   * A 503 is answered no sooner than this (ms) after it was decided. Default 25 (serving: the
   * feature deadline); 0 answers at once. Clients that
   * resend a refused request at once (closed loops, proxies and scripts that ignore
   * Retry-After) otherwise turn shedding into a busy loop: refusals take the CPU, admitted
   * requests slow down, the adaptive limit shrinks, more are refused — measured: a closed loop of
   * 50 such clients got 104 answers/s from a process that serves 2,392/s. A held refusal costs a
   * socket and a queue slot, not CPU, and its client cannot resend sooner.
   */
  readonly shedPaceMs?: number;
  /**
   * The adaptive limit, the queue-time check and the event-loop check refuse only while the
   * process is saturated: over the last 500 ms, of the time its event loop's thread was not
   * waiting for a CPU, it ran at least this share (LoopSaturation; event loop utilization where
   * the kernel gives no scheduler times). Below it the process has CPU to spare, so slow answers
   * come from stalls (a GC, the node descheduling the process, a new pod's first requests), not
   * from admitting too much, and a 503 would fail a request that a moment's patience serves.
   * Default 0.9; 0 makes the checks act at any load.
   */
  readonly saturationUtilization?: number;
  /** The loop thread's scheduler times (tests inject them); default /proc/thread-self/schedstat. */
  readonly loopThreadTimes?: () => ThreadTimes | undefined;
  /**
   * Records a request refused before the framework saw it (see `gate` below) in the request
   * metrics, as the framework's own answers are: route template, method, seconds.
   */
  readonly onRefusedEarly?: (route: string, method: string, seconds: number) => void;
  /** Token bucket per client (x-client-id header, else remote address); false disables. */
  readonly rateLimit?: { readonly perSecond: number; readonly burst: number } | false;
  /** Paths never refused. */
  readonly exempt?: readonly string[];
}

interface Bucket {
  tokens: number;
  last: number;
}

/** Takes one token from `b` at time `now`; returns 0 when allowed, else seconds until a token is back. */
export function takeToken(b: Bucket, now: number, perSecond: number, burst: number): number {
  b.tokens = Math.min(burst, b.tokens + ((now - b.last) / 1000) * perSecond);
  b.last = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return Math.max(1, Math.ceil((1 - b.tokens) / perSecond));
}

/** When a connection was accepted or last answered (ms, performance.now()). */
const kSince = Symbol('crema.connection.since');
type MarkedSocket = Socket & { [kSince]?: number };

/** Set on a request whose answer fell back because its features missed the deadline. */
const kMissed = Symbol('crema.request.deadlineMissed');
type MarkedRequest = { [kMissed]?: boolean; [kAdmitted]?: boolean };

/**
 * Routes call this when a request's features missed the deadline: the adaptive limit counts
 * the request as slow whatever its latency, since the answer it got is the fallback.
 */
export function markDeadlineMissed(req: FastifyRequest): void {
  (req.raw as MarkedRequest)[kMissed] = true;
}

/** Set on a request the early gate admitted: onRequest does not check it again. */
const kAdmitted = Symbol('crema.request.admitted');

/**
 * One error object per reason, made once: a shed request costs no stack trace. The message
 * names the check that refused it, so a client (and an SRE reading its logs) can tell.
 */
const OVERLOADED: Readonly<Record<Exclude<ShedReason, 'rate_limit'>, ServingError>> = Object.fromEntries(
  (['queue_time', 'concurrency_limit', 'in_flight', 'event_loop_delay'] as const).map((r) => [
    r,
    new ServingError('OVERLOADED', `server is overloaded (${r}), retry later`, { retryAfterSeconds: 1 }),
  ]),
) as Record<Exclude<ShedReason, 'rate_limit'>, ServingError>;

/** The early gate's 503 bodies, as the error handler writes them for OVERLOADED. */
const REFUSAL_BODY = Object.fromEntries(
  Object.entries(OVERLOADED).map(([r, e]) => [
    r,
    Buffer.from(JSON.stringify({ code: e.code, message: e.message })),
  ]),
) as Record<Exclude<ShedReason, 'rate_limit'>, Buffer>;

async function protection(app: FastifyInstance, opts: ProtectionOptions): Promise<void> {
  const maxInFlight = opts.maxInFlight ?? 512;
  const latencyTargetMs = opts.latencyTargetMs ?? 50;
  const maxQueueMs = opts.maxQueueMs ?? 25;
  const maxDelay = opts.maxEventLoopDelayMs ?? 100;
  const exempt = new Set(opts.exempt ?? ['/healthz', '/readyz', '/metrics']);
  const rl = opts.rateLimit;
  if (rl && (!(rl.perSecond > 0) || !(rl.burst >= 1))) {
    throw new RangeError('protection: rateLimit.perSecond must be > 0 and rateLimit.burst >= 1');
  }
  if (maxInFlight < 0) throw new RangeError('protection: maxInFlight must be >= 0');
  if (!(latencyTargetMs >= 0)) throw new RangeError('protection: latencyTargetMs must be >= 0');
  if (!(maxQueueMs >= 0)) throw new RangeError('protection: maxQueueMs must be >= 0');
  const shedPaceMs = opts.shedPaceMs ?? 25;
  if (!(shedPaceMs >= 0)) throw new RangeError('protection: shedPaceMs must be >= 0');
  const saturationUtilization = opts.saturationUtilization ?? 0.9;
  if (!(saturationUtilization >= 0 && saturationUtilization <= 1))
    throw new RangeError('protection: saturationUtilization must be in [0, 1]');
  // Monotonic: latencies and waits must not jump with the wall clock.
  const now = () => performance.now();
  const limit =
    latencyTargetMs > 0
      ? new ConcurrencyLimit({ targetMs: latencyTargetMs, max: maxInFlight > 0 ? maxInFlight : 512 }, now)
      : undefined;
  const queue =
    maxQueueMs > 0
      ? {
          estimator: new QueueDelayEstimator(now, () => performance.nodeTiming.idleTime),
          check: new QueueDelayCheck({ maxMs: maxQueueMs }, now),
        }
      : undefined;
  if (queue) {
    app.server.on('connection', (socket: MarkedSocket) => (socket[kSince] = now()));
  }
  let inFlight = 0;
  let lagging = false;
  const histogram = maxDelay > 0 ? monitorEventLoopDelay({ resolution: 10 }) : undefined;
  let sampler: NodeJS.Timeout | undefined;
  if (histogram) {
    histogram.enable();
    sampler = setInterval(() => {
      // No sample yet (count 0, mean NaN) is not lag.
      lagging = histogram.count > 0 && histogram.mean / 1e6 > maxDelay;
      histogram.reset();
    }, 1000);
    sampler.unref();
  }
  // Saturation over the last 500 ms, from 250 ms samples: long enough that a stall is not
  // saturation, short enough to act early in a spike.
  const saturation = new LoopSaturation(
    saturationUtilization,
    now,
    opts.loopThreadTimes ??
      (() => readLoopThreadTimes(() => readFileSync('/proc/thread-self/schedstat', 'latin1'))),
    () => {
      const e = performance.eventLoopUtilization();
      return { idle: e.idle, active: e.active };
    },
    () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    },
    availableCores(availableParallelism(), (path) => {
      try {
        return readFileSync(path, 'latin1');
      } catch {
        return undefined;
      }
    }),
  );
  let utilizationSampler: NodeJS.Timeout | undefined;
  if ((limit || queue || histogram) && saturationUtilization > 0) {
    utilizationSampler = setInterval(() => saturation.sample(), 250);
    utilizationSampler.unref();
  }
  const buckets = new Map<string, Bucket>();
  const sweeper = setInterval(() => {
    const cutoff = opts.clock.now() - 60_000;
    for (const [k, b] of buckets) if (b.last < cutoff) buckets.delete(k);
  }, 30_000);
  sweeper.unref();

  const clientKey = (req: FastifyRequest) => {
    const h = req.headers['x-client-id'];
    return typeof h === 'string' && h.length > 0 ? `c:${h.slice(0, 128)}` : `ip:${req.ip}`;
  };

  const shed = (reason: ShedReason) => {
    opts.metrics?.shed.inc({ ...opts.metrics.labelsFor(), reason });
  };

  // Refusals held until shedPaceMs after they were decided, in decision order: one timer for
  // the queue's head, whatever the number held.
  const held: { at: number; send: () => void }[] = [];
  let heldHead = 0;
  let pacer: NodeJS.Timeout | undefined;
  const release = () => {
    pacer = undefined;
    const t = now();
    while (heldHead < held.length && held[heldHead]!.at <= t) held[heldHead++]!.send();
    if (heldHead === held.length) {
      held.length = 0;
      heldHead = 0;
    } else {
      pacer = setTimeout(release, Math.max(1, held[heldHead]!.at - t));
    }
  };
  const hold = (send: () => void) => {
    if (shedPaceMs === 0) return send();
    held.push({ at: now() + shedPaceMs, send });
    pacer ??= setTimeout(release, shedPaceMs);
  };

  /**
   * The 503 checks, in order; '' admits the request, which is then counted in flight until its
   * answer is closed (and in the adaptive limit's window).
   */
  const admit = (raw: IncomingMessage, res: ServerResponse): Exclude<ShedReason, 'rate_limit'> | '' => {
    if (queue) {
      queue.estimator.look();
      // Every request is recorded (CoDel needs the luckiest wait of the interval).
      const waited = queue.estimator.delay((raw.socket as MarkedSocket | null)?.[kSince]);
      // Old requests are refused only while the limit has work in hand (half used): clients
      // that resend at once (closed loops, many connections) keep every request old, and
      // refusing them all would leave the process idle behind its own queue.
      if (
        queue.check.shouldShed(waited) &&
        saturation.saturated &&
        (!limit || limit.inFlight * 2 >= limit.limit)
      )
        return 'queue_time';
    }
    if (maxInFlight > 0 && inFlight >= maxInFlight) return 'in_flight';
    if (lagging && saturation.saturated) return 'event_loop_delay';
    if (limit && !limit.tryAcquire(!saturation.saturated)) return 'concurrency_limit';
    inFlight++;
    const admitted = now();
    res.once('close', () => {
      inFlight--;
      limit?.release(now() - admitted, (raw as MarkedRequest)[kMissed] === true, saturation.saturated);
    });
    return '';
  };

  // The early gate: requests to the static routes (every hot route: no path parameters, so the
  // route is known from the path) pass the 503 checks before the framework sees them, and a
  // refusal is a pre-serialized 503 written to the socket: no request and reply objects, no
  // routing, hooks, error handler or serializer. At 10x the sustainable rate nine requests in
  // ten are refused, and refusals that go through the framework take the CPU the admitted ones
  // need. Requests to other routes are checked in onRequest below.
  const gated = new Set<string>();
  app.addHook('onRoute', (route) => {
    if (exempt.has(route.url) || /[:*]/.test(route.url)) return;
    for (const m of Array.isArray(route.method) ? route.method : [route.method])
      gated.add(`${m} ${route.url}`);
  });
  const listeners = app.server.listeners('request') as ((
    req: IncomingMessage,
    res: ServerResponse,
  ) => void)[];
  if (listeners.length === 1) {
    const framework = listeners[0]!;
    app.server.removeListener('request', framework);
    app.server.on('request', (raw: IncomingMessage, res: ServerResponse) => {
      const url = raw.url ?? '/';
      const q = url.indexOf('?');
      const path = q < 0 ? url : url.slice(0, q);
      if (!gated.has(`${raw.method} ${path}`)) return framework(raw, res);
      const decided = now();
      const reason = admit(raw, res);
      if (reason === '') {
        (raw as MarkedRequest)[kAdmitted] = true;
        return framework(raw, res);
      }
      shed(reason);
      hold(() => {
        const body = REFUSAL_BODY[reason];
        res.writeHead(503, {
          'content-type': 'application/json; charset=utf-8',
          'content-length': body.length,
          'retry-after': '1',
        });
        res.end(body);
        const socket = raw.socket as MarkedSocket | null;
        if (socket) socket[kSince] = now();
        opts.onRefusedEarly?.(path, raw.method ?? 'GET', (now() - decided) / 1000);
      });
    });
  }

  // Callback-style hooks: no promise per request on the hot path.
  app.addHook('onRequest', (req, reply, done) => {
    const path = req.url.split('?', 1)[0]!;
    if (exempt.has(path)) return done();
    if ((req.raw as MarkedRequest)[kAdmitted] !== true) {
      const reason = admit(req.raw, reply.raw);
      if (reason !== '') {
        shed(reason);
        return hold(() => done(OVERLOADED[reason]));
      }
    }
    if (rl) {
      const key = clientKey(req);
      let b = buckets.get(key);
      if (!b) {
        b = { tokens: rl.burst, last: opts.clock.now() };
        buckets.set(key, b);
      }
      const wait = takeToken(b, opts.clock.now(), rl.perSecond, rl.burst);
      if (wait > 0) {
        shed('rate_limit');
        return done(new ServingError('RATE_LIMITED', undefined, { retryAfterSeconds: wait }));
      }
    }
    done();
  });

  if (queue) {
    // The next request on a keep-alive connection was sent after this answer.
    app.addHook('onResponse', (req, _reply, done) => {
      const socket = req.raw.socket as MarkedSocket | null;
      if (socket) socket[kSince] = now();
      done();
    });
  }

  app.addHook('onClose', async () => {
    if (pacer) clearTimeout(pacer);
    for (let i = heldHead; i < held.length; i++) held[i]!.send();
    held.length = 0;
    if (sampler) clearInterval(sampler);
    if (utilizationSampler) clearInterval(utilizationSampler);
    histogram?.disable();
    clearInterval(sweeper);
  });
}

/** Shared infrastructure, so it is wrapped with fastify-plugin and applies to every route. */
export const protectionPlugin = fp(protection, { name: 'crema-protection', fastify: '5.x' });
