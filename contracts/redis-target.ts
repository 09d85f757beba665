/**
 * Where Redis is: the address grammar the operator renders and serving and the jobs read
 * (clients: contracts/redis.ts). Docs: docs/serving.md (Redis Cluster), ADR 0009.
 *
 * Address: one `redis://` or `rediss://` URL, or several separated by commas. Several URLs are
 * the seed nodes of a cluster (any reachable one is enough to discover the rest); a single URL
 * is a cluster only when the cluster flag says so. A cluster has no databases other than 0, and
 * every seed must use the same scheme; credentials may be given once, on any seed.
 */

/** Environment variables shared by serving (rendered by the operator) and the jobs. */
export const REDIS_ENV = {
  /** `1`/`true`: the address is a cluster even with one seed; `0`/`false`: never. Default: several seeds. */
  cluster: 'CREMA_REDIS_CLUSTER',
  /**
   * Replicas that must confirm a write (WAIT) before serving acknowledges an event and before
   * the stream job acknowledges an entry. Default 1 on a cluster, 0 on one instance.
   */
  waitReplicas: 'CREMA_REDIS_WAIT_REPLICAS',
  /** How long one WAIT may take, ms; a write not confirmed in time is answered as a failure. Default 100. */
  waitTimeoutMs: 'CREMA_REDIS_WAIT_TIMEOUT_MS',
} as const;

/** Where Redis is. */
export type RedisTarget =
  | { readonly kind: 'single'; readonly url: string; readonly display: string }
  | {
      readonly kind: 'cluster';
      readonly seeds: readonly { readonly host: string; readonly port: number }[];
      readonly username?: string;
      readonly password?: string;
      readonly tls: boolean;
      readonly display: string;
    };

/** An address that does not follow the grammar; the message names `name` (the setting). */
export class RedisTargetError extends Error {
  override readonly name = 'RedisTargetError';
}

function parseFlag(flag: string | boolean | undefined, name: string): boolean | undefined {
  if (flag === undefined || flag === '') return undefined;
  if (typeof flag === 'boolean') return flag;
  if (flag === '1' || flag === 'true') return true;
  if (flag === '0' || flag === 'false') return false;
  throw new RedisTargetError(`${name} must be 1, true, 0 or false, got ${JSON.stringify(flag)}`);
}

/**
 * Parses an address (`name` is the setting it came from, for messages) and the cluster flag.
 * Throws RedisTargetError on anything else.
 */
export function parseRedisTarget(
  value: string,
  opts: { readonly cluster?: string | boolean | undefined; readonly name?: string } = {},
): RedisTarget {
  const name = opts.name ?? 'the Redis address';
  const parts = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (parts.length === 0) throw new RedisTargetError(`${name} is empty`);
  const urls = parts.map((p) => {
    if (!/^rediss?:\/\//.test(p))
      throw new RedisTargetError(
        `${name}: ${JSON.stringify(redact(p))} must start with redis:// or rediss://`,
      );
    let u: URL;
    try {
      u = new URL(p);
    } catch {
      throw new RedisTargetError(`${name}: ${JSON.stringify(redact(p))} is not a URL`);
    }
    if (!u.hostname) throw new RedisTargetError(`${name}: ${JSON.stringify(redact(p))} has no host`);
    return u;
  });
  const flag = parseFlag(opts.cluster, REDIS_ENV.cluster);
  const cluster = flag ?? urls.length > 1;
  const display = urls.map((u) => redact(u.href)).join(',');
  if (!cluster) {
    if (urls.length > 1)
      throw new RedisTargetError(
        `${name} lists ${urls.length} seeds, but ${REDIS_ENV.cluster} says no cluster`,
      );
    return { kind: 'single', url: parts[0]!, display };
  }
  const schemes = new Set(urls.map((u) => u.protocol));
  if (schemes.size > 1) throw new RedisTargetError(`${name}: every seed must use the same scheme`);
  for (const u of urls) {
    const db = u.pathname.replace(/^\//, '');
    if (db !== '' && db !== '0')
      throw new RedisTargetError(
        `${name}: a Redis Cluster has only database 0, ${redact(u.href)} asks for ${db}`,
      );
  }
  const withAuth = urls.find((u) => u.username || u.password);
  const seeds = urls.map((u) => ({
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port ? Number(u.port) : 6379,
  }));
  return {
    kind: 'cluster',
    seeds,
    ...(withAuth?.username ? { username: decodeURIComponent(withAuth.username) } : {}),
    ...(withAuth?.password ? { password: decodeURIComponent(withAuth.password) } : {}),
    tls: urls[0]!.protocol === 'rediss:',
    display,
  };
}

function redact(url: string): string {
  return url.replace(
    /\/\/([^@/]*)@/,
    (_, auth: string) => `//${auth.includes(':') ? `${auth.split(':')[0]}:***` : '***'}@`,
  );
}
