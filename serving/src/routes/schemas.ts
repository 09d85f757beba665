/** TypeBox schemas shared by several routes. */
import { timingSafeEqual } from 'node:crypto';
import { Type } from '@fastify/type-provider-typebox';
import { EVENT_FIELDS, TIMESTAMP_PATTERN } from '../../../contracts/events.js';
import { ServingError } from '../errors.js';

export const ErrorSchema = Type.Object(
  {
    code: Type.String(),
    message: Type.String(),
    field: Type.Optional(Type.String()),
  },
  { $id: 'Error' },
);

// The id and timestamp grammars are the event contract's (contracts/events.ts), so an id or time
// one route accepts is one the event pipeline can apply. The router accepts path params of any
// length (app.ts), so an id these refuse is a 400 naming the field, never a 414.
/** The one user id grammar of every route (path, query and body). */
export const UserId = Type.String({
  pattern: EVENT_FIELDS.userId,
  description: 'User id: 1-128 of A-Z a-z 0-9 _ . : @ -',
});
export const StoreId = Type.String({ pattern: EVENT_FIELDS.storeId, description: 'Store id' });
export const ItemId = Type.String({ pattern: EVENT_FIELDS.itemId, description: 'Catalog item id' });
/** Read with parseTimestampMs (contracts/events.ts), never Date.parse (which refuses leap seconds). */
export const Timestamp = Type.String({
  format: 'date-time',
  pattern: TIMESTAMP_PATTERN,
  description: 'RFC 3339 timestamp',
});

export const errorResponses = {
  400: ErrorSchema,
  401: ErrorSchema,
  404: ErrorSchema,
  429: ErrorSchema,
  503: ErrorSchema,
} as const;

/** The bearer token check of erase and admin routes. */
export function bearerMatches(header: string | undefined, token: string | undefined): boolean {
  if (!token || !header) return false;
  const m = /^Bearer\s+(.+)$/i.exec(header);
  if (!m) return false;
  const given = Buffer.from(m[1]!);
  const want = Buffer.from(token);
  // Constant-time compare so the token cannot be guessed byte by byte.
  return given.length === want.length && timingSafeEqual(given, want);
}

/** A string schema limited to `values`, typed as their union. */
export function stringEnum<const T extends string>(values: readonly T[], description?: string) {
  return Type.Unsafe<T>({ type: 'string', enum: [...values], ...(description ? { description } : {}) });
}

/** A preValidation hook refusing requests without the admin bearer token (before any parsing of input). */
export function requireBearer(token: string | undefined) {
  return async (req: { headers: { authorization?: string } }) => {
    if (!bearerMatches(req.headers.authorization, token)) throw new ServingError('UNAUTHORIZED');
  };
}
