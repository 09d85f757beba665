/**
 * A bounded traffic generator for the end-to-end tests: POST /v1/recommendations to a model's
 * Service (its ClusterIP from the host, through kube-proxy) for users picked at random from a
 * seeded pool, recording per request when it started and ended, the HTTP status, which serving
 * pod's variant and revision answered (the body's `variant` and `modelRevision`, written by the
 * serving process itself), and which router config routed it (`x-crema-router-config`).
 */
import { Pool } from 'undici';

export interface Sample {
  readonly userId: string;
  readonly start: number;
  readonly end: number;
  /** HTTP status; 0 when the request itself failed (connection refused, timeout). */
  readonly status: number;
  readonly variant?: string;
  readonly revision?: string;
  /** Answered by serving's popularity fallback (e.g. the feature deadline passed): no model revision. */
  readonly fallback?: boolean;
  /** The router config that routed it (absent when the Service sent it straight to stable pods). */
  readonly routerConfig?: string;
  readonly error?: string;
  /** The error code of a non-2xx answer (e.g. OVERLOADED). */
  readonly code?: string;
  /** The message of a non-2xx answer (a 503 names the admission check that refused it). */
  readonly message?: string;
}

export interface TrafficOptions {
  /** http://CLUSTER-IP of the model's Service. */
  readonly url: string;
  readonly users: readonly string[];
  /** Closed-loop workers (default 8). */
  readonly concurrency?: number;
  /** Open-loop rate instead: one request every 1000/rate ms (for "too little traffic"). */
  readonly ratePerSecond?: number;
  /** Hard stop, however the test goes (default 90 s). */
  readonly maxDurationMs?: number;
}

export interface Traffic {
  readonly samples: Sample[];
  stop(): Promise<void>;
}

const STORES = ['store-0', 'store-2'];

export function failed(s: Sample): boolean {
  return s.status < 200 || s.status >= 300;
}

/** Failed requests counted by what failed them ("503 server is overloaded (queue_time), ..."). */
export function failureSummary(samples: readonly Sample[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    if (!failed(s)) continue;
    const key = s.error ?? `${s.status} ${s.message ?? s.code ?? ''}`.trim();
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

export function startTraffic(o: TrafficOptions): Traffic {
  const pool = new Pool(o.url, { connections: (o.concurrency ?? 8) + 2, keepAliveTimeout: 10_000 });
  const samples: Sample[] = [];
  const deadline = Date.now() + (o.maxDurationMs ?? 90_000);
  let stopped = false;
  const one = async () => {
    const userId = o.users[Math.floor(Math.random() * o.users.length)]!;
    const start = Date.now();
    try {
      const res = await pool.request({
        path: '/v1/recommendations',
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          userId,
          storeId: STORES[Math.floor(Math.random() * STORES.length)]!,
          context: { time: new Date().toISOString(), channel: 'app' },
          limit: 5,
        }),
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      const text = await res.body.text();
      let body: {
        variant?: string;
        modelRevision?: string;
        fallback?: boolean;
        code?: string;
        message?: string;
      } = {};
      try {
        body = JSON.parse(text) as typeof body;
      } catch {
        /* not JSON: recorded by status */
      }
      const routerConfig = res.headers['x-crema-router-config'];
      samples.push({
        userId,
        start,
        end: Date.now(),
        status: res.statusCode,
        ...(typeof routerConfig === 'string' && routerConfig ? { routerConfig } : {}),
        ...(body.variant ? { variant: body.variant } : {}),
        ...(body.modelRevision ? { revision: body.modelRevision } : {}),
        ...(body.fallback ? { fallback: true } : {}),
        ...(typeof body.code === 'string' ? { code: body.code } : {}),
        ...(res.statusCode >= 300 && typeof body.message === 'string' ? { message: body.message } : {}),
      });
    } catch (err) {
      samples.push({ userId, start, end: Date.now(), status: 0, error: (err as Error).message });
    }
  };
  const running = () => !stopped && Date.now() < deadline;
  let loops: Promise<void>[];
  if (o.ratePerSecond) {
    const gap = 1000 / o.ratePerSecond;
    loops = [
      (async () => {
        while (running()) {
          void one();
          await new Promise((r) => setTimeout(r, gap));
        }
      })(),
    ];
  } else {
    loops = Array.from({ length: o.concurrency ?? 8 }, async () => {
      while (running()) await one();
    });
  }
  let closing: Promise<void> | undefined;
  return {
    samples,
    stop() {
      stopped = true;
      // Open-loop requests may still be in flight: close() waits for them (their timeout at most).
      closing ??= Promise.all(loops).then(() => pool.close());
      return closing;
    },
  };
}
