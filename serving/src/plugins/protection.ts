/**
 * Load shedding and per-client rate limiting, checked before any work is done for a request:
 * too many requests in flight or a lagging event loop → 503 with Retry-After; a client over
 * its token bucket → 429 with Retry-After. Probes and metrics are never refused.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ServingError } from '../errors.js';
import type { Clock } from '../clock.js';
import type { ServingMetrics } from '../metrics.js';

/** Options of the protection plugin. */
export interface ProtectionOptions {
  readonly clock: Clock;
  readonly metrics?: ServingMetrics;
  /** Requests handled at once before new ones get 503. Default 512; 0 disables. */
  readonly maxInFlight?: number;
  /**
   * Mean event loop delay (ms, over a 1 s window) above which new requests get 503. Default 100;
   * 0 disables. The mean, not a high percentile: one stall (a GC, a busy node descheduling the
   * process, a pod's first requests) is over by the time it is measured, and shedding every
   * request of the next window for it fails answers a healthy process would have given. A
   * sustained lag (real overload) moves the mean.
   */
  readonly maxEventLoopDelayMs?: number;
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

async function protection(app: FastifyInstance, opts: ProtectionOptions): Promise<void> {
  const maxInFlight = opts.maxInFlight ?? 512;
  const maxDelay = opts.maxEventLoopDelayMs ?? 100;
  const exempt = new Set(opts.exempt ?? ['/healthz', '/readyz', '/metrics']);
  const rl = opts.rateLimit;
  if (rl && (!(rl.perSecond > 0) || !(rl.burst >= 1))) {
    throw new RangeError('protection: rateLimit.perSecond must be > 0 and rateLimit.burst >= 1');
  }
  if (maxInFlight < 0) throw new RangeError('protection: maxInFlight must be >= 0');
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

  // Callback-style hooks: no promise per request on the hot path.
  app.addHook('onRequest', (req, reply, done) => {
    const path = req.url.split('?', 1)[0]!;
    if (exempt.has(path)) return done();
    const overloaded =
      maxInFlight > 0 && inFlight >= maxInFlight ? 'in_flight' : lagging ? 'event_loop_delay' : '';
    if (overloaded) {
      opts.metrics?.shed.inc({ ...opts.metrics.labelsFor(), reason: overloaded });
      return done(new ServingError('OVERLOADED', undefined, { retryAfterSeconds: 1 }));
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
        opts.metrics?.shed.inc({ ...opts.metrics.labelsFor(), reason: 'rate_limit' });
        return done(new ServingError('RATE_LIMITED', undefined, { retryAfterSeconds: wait }));
      }
    }
    inFlight++;
    reply.raw.once('close', () => inFlight--);
    done();
  });

  app.addHook('onClose', async () => {
    if (sampler) clearInterval(sampler);
    histogram?.disable();
    clearInterval(sweeper);
  });
}

/** Shared infrastructure, so it is wrapped with fastify-plugin and applies to every route. */
export const protectionPlugin = fp(protection, { name: 'crema-protection', fastify: '5.x' });
