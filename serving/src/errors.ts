/**
 * The one table of coded errors the serving tier answers with. Handlers throw ServingError;
 * only the app's error handler turns it into an HTTP answer `{ code, message, field? }`.
 */
export const ERRORS = {
  VALIDATION: { status: 400, message: 'request is invalid' },
  UNKNOWN_ITEM: { status: 400, message: 'unknown item' },
  UNAUTHORIZED: { status: 401, message: 'a valid bearer token is required' },
  UNKNOWN_STORE: { status: 404, message: 'unknown store' },
  NOT_FOUND: { status: 404, message: 'no such route' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'method not allowed on this path' },
  MODEL_LOAD_FAILED: { status: 422, message: 'model could not be loaded' },
  RATE_LIMITED: { status: 429, message: 'too many requests from this client' },
  INTERNAL: { status: 500, message: 'internal error' },
  UPSTREAM_UNAVAILABLE: { status: 502, message: 'no upstream could answer' },
  OVERLOADED: { status: 503, message: 'server is overloaded, retry later' },
  NOT_READY: { status: 503, message: 'no features or fallback data loaded yet' },
  STORE_UNAVAILABLE: { status: 503, message: 'the feature and event store is unavailable, retry later' },
  EVENTS_STREAM_FULL: {
    status: 503,
    message: 'the events stream is full (its consumers are behind); retry later',
  },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/**
 * A typed error carrying its code; `field` names the offending input, `retryAfterSeconds` sets
 * Retry-After, `allow` sets Allow (the methods of a 405).
 */
export class ServingError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message?: string,
    readonly extra: { field?: string; retryAfterSeconds?: number; allow?: string; cause?: unknown } = {},
  ) {
    super(message ?? ERRORS[code].message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'ServingError';
    this.status = ERRORS[code].status;
  }
}

/** The JSON body of every error answer. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  field?: string;
}
