/** TypeBox schemas shared by several routes. */
import { timingSafeEqual } from 'node:crypto';
import { Type } from '@fastify/type-provider-typebox';
import { ServingError } from '../errors.js';

export const ErrorSchema = Type.Object(
  {
    code: Type.String(),
    message: Type.String(),
    field: Type.Optional(Type.String()),
  },
  { $id: 'Error' },
);

/** The longest user id any route accepts. */
export const USER_ID_MAX_LENGTH = 128;

/**
 * The one user id grammar of every route (path, query and body): no glob or whitespace
 * characters, so ids are safe inside Redis key patterns. The router accepts path params of any
 * length (app.ts), so an id this refuses is a 400 naming the field, never a 414.
 */
export const UserId = Type.String({
  pattern: `^[A-Za-z0-9_.:@-]{1,${USER_ID_MAX_LENGTH}}$`,
  description: `User id: 1-${USER_ID_MAX_LENGTH} of A-Z a-z 0-9 _ . : @ -`,
});
export const StoreId = Type.String({ pattern: '^[A-Za-z0-9_.:-]{1,64}$', description: 'Store id' });
export const ItemId = Type.String({ minLength: 1, maxLength: 64 });
export const Timestamp = Type.String({ format: 'date-time', description: 'RFC 3339 timestamp' });

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
