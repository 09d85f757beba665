/**
 * A minimal Prometheus HTTP API client: instant queries only (GET /api/v1/query), with a timeout
 * and typed errors that name the query, so a failed analysis says which PromQL went wrong.
 */

/** One element of an instant vector. NaN and ±Inf are kept as numbers. */
export interface PromSample {
  labels: Record<string, string>;
  value: number;
}

export interface PrometheusClient {
  readonly baseUrl: string;
  /** Runs an instant query; a scalar result comes back as one sample with no labels. */
  query(promql: string): Promise<PromSample[]>;
}

export interface PrometheusClientOptions {
  /** Per-request timeout. Default 10 000 ms. */
  readonly timeoutMs?: number;
  /** Default globalThis.fetch. */
  readonly fetch?: typeof fetch;
}

/** Why a query failed: `unreachable` (network/timeout), `http` (non-JSON answer), `api` (Prometheus said error), `result` (unexpected shape). */
export type PrometheusErrorKind = 'unreachable' | 'http' | 'api' | 'result';

/** A failed query; the message names the query and the server's answer. */
export class PrometheusQueryError extends Error {
  override readonly name = 'PrometheusQueryError';
  constructor(
    readonly kind: PrometheusErrorKind,
    readonly query: string,
    readonly detail: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(
      `prometheus query ${JSON.stringify(query)} failed (${kind}${status ? ` ${status}` : ''}): ${detail}`,
      options,
    );
  }
}

/** Prometheus encodes sample values as strings, including "NaN", "+Inf" and "-Inf". */
export function parseSampleValue(s: string): number {
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  return Number(s);
}

interface ApiAnswer {
  status?: string;
  errorType?: string;
  error?: string;
  data?: { resultType?: string; result?: unknown };
}

/** Creates a client for the Prometheus at `baseUrl` (e.g. http://prometheus:9090). */
export function createPrometheusClient(
  baseUrl: string,
  opts: PrometheusClientOptions = {},
): PrometheusClient {
  const root = baseUrl.replace(/\/+$/, '');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const doFetch = opts.fetch ?? fetch;
  return {
    baseUrl: root,
    async query(promql) {
      const url = `${root}/api/v1/query?${new URLSearchParams({ query: promql })}`;
      let res: Response;
      let text: string;
      try {
        res = await doFetch(url, {
          signal: AbortSignal.timeout(timeoutMs),
          headers: { accept: 'application/json' },
        });
        text = await res.text();
      } catch (err) {
        const why =
          (err as Error).name === 'TimeoutError'
            ? `no answer within ${timeoutMs} ms`
            : (err as Error).message;
        throw new PrometheusQueryError('unreachable', promql, `${root}: ${why}`, undefined, { cause: err });
      }
      let body: ApiAnswer;
      try {
        body = JSON.parse(text) as ApiAnswer;
      } catch {
        throw new PrometheusQueryError('http', promql, text.slice(0, 200) || 'empty body', res.status);
      }
      if (body.status !== 'success') {
        throw new PrometheusQueryError(
          'api',
          promql,
          `${body.errorType ?? 'error'}: ${body.error ?? text.slice(0, 200)}`,
          res.status,
        );
      }
      const { resultType, result } = body.data ?? {};
      if (resultType === 'scalar' && Array.isArray(result)) {
        return [{ labels: {}, value: parseSampleValue(String(result[1])) }];
      }
      if (resultType !== 'vector' || !Array.isArray(result)) {
        throw new PrometheusQueryError(
          'result',
          promql,
          `expected an instant vector, got ${resultType ?? 'nothing'}`,
        );
      }
      return result.map((r: { metric?: Record<string, string>; value?: [number, string] }) => ({
        labels: r.metric ?? {},
        value: parseSampleValue(String(r.value?.[1])),
      }));
    },
  };
}
