/**
 * 405 Method Not Allowed for a path that exists under another method (RFC 9110 §15.5.6): an
 * `Allow` header listing the declared methods and the coded error body. Without it fastify
 * answers such a request as an unknown route (404), or parses and validates its body first.
 * Unknown paths stay 404.
 */
import type { FastifyInstance, RouteOptions } from 'fastify';
import { ServingError } from '../errors.js';

/** Marks the routes this module adds, so they are not counted as declared. */
const MARK = 'crema405';

/**
 * Starts recording the methods declared for each route URL. Call before any route is
 * registered; call the function it returns after the last one, to add, for each URL, one
 * hidden route answering 405 for every other method fastify supports.
 */
export function trackDeclaredMethods(app: FastifyInstance): () => void {
  const declared = new Map<string, Set<string>>();
  app.addHook('onRoute', (route: RouteOptions) => {
    if ((route.config as Record<string, unknown> | undefined)?.[MARK]) return;
    const methods = declared.get(route.url) ?? new Set<string>();
    for (const m of [route.method].flat()) methods.add(m.toUpperCase());
    declared.set(route.url, methods);
  });
  return () => {
    const supported = app.supportedMethods;
    for (const [url, methods] of declared) {
      const others = supported.filter((m) => !methods.has(m));
      if (others.length === 0) continue;
      const allow = supported.filter((m) => methods.has(m)).join(', ');
      const refuse = async (req: { method: string }) => {
        throw new ServingError(
          'METHOD_NOT_ALLOWED',
          `${req.method} is not allowed on ${url}; allowed: ${allow}`,
          {
            allow,
          },
        );
      };
      app.route({
        method: others,
        url,
        config: { [MARK]: true },
        schema: { hide: true },
        // Refused before the body is read or validated.
        onRequest: refuse,
        handler: refuse,
      });
    }
  };
}
