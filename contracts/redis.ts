/**
 * Talking to Redis as one instance or as a Redis Cluster (address grammar: redis-target.ts):
 * creating the client, and the few operations whose cluster form differs from the
 * single-instance one: scripts sent per node and made durable with WAIT, multi-key deletes
 * split by slot, SCAN over every primary. Docs: docs/serving.md (Redis Cluster), ADR 0009.
 */
import { createHash } from 'node:crypto';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisTarget } from './redis-target.js';

export * from './redis-target.js';

/** A client of either kind. Commands are the same; pipelines and keyless commands are not. */
export type RedisClient = Redis | Cluster;

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}

/** Options for createRedisClient: `redis` applies to every connection, `cluster` to a Cluster. */
export interface RedisClientTuning {
  readonly redis?: RedisOptions;
  readonly cluster?: Omit<ClusterOptions, 'redisOptions'>;
}

/** Options a Cluster manages itself and refuses in its per-node `redisOptions`. */
const CLUSTER_OWNED = [
  'port',
  'host',
  'path',
  'sentinels',
  'retryStrategy',
  'enableOfflineQueue',
  'readOnly',
];

/** A Redis or Cluster client for `target`. */
export function createRedisClient(target: RedisTarget, tuning: RedisClientTuning = {}): RedisClient {
  if (target.kind === 'single') return new Redis(target.url, tuning.redis ?? {});
  const perNode = Object.fromEntries(
    Object.entries(tuning.redis ?? {}).filter(([k]) => !CLUSTER_OWNED.includes(k)),
  ) as ClusterOptions['redisOptions'];
  return new Cluster(target.seeds as { host: string; port: number }[], {
    ...tuning.cluster,
    redisOptions: {
      ...perNode,
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...(target.tls ? { tls: {} } : {}),
    },
  });
}

// CRC16/XMODEM, the checksum Redis Cluster maps keys to slots with.
const CRC16 = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

/**
 * The cluster slot (0..16383) of `key`. Only the hash tag is hashed when the key has one: the
 * part between the first `{` and the next `}`, if not empty. Keys with the same tag share a
 * slot, which is what lets one script or MGET touch them together.
 */
export function hashSlot(key: string | Buffer): number {
  let b = typeof key === 'string' ? Buffer.from(key) : key;
  const open = b.indexOf(0x7b);
  if (open >= 0) {
    const close = b.indexOf(0x7d, open + 1);
    if (close > open + 1) b = b.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of b) crc = ((crc << 8) & 0xffff) ^ CRC16[((crc >> 8) ^ byte) & 0xff]!;
  return crc & 0x3fff;
}

/** A Lua script with its sha1, called by EVALSHA first and EVAL when the server lacks it. */
export interface LuaScript {
  readonly source: string;
  readonly sha1: string;
}

export function defineScript(source: string): LuaScript {
  return { source, sha1: createHash('sha1').update(source).digest('hex') };
}

/** One script call. `keys` must share a slot on a cluster. */
export interface ScriptCall {
  readonly script: LuaScript;
  readonly keys: readonly string[];
  readonly args: readonly (string | Buffer | number)[];
}

/** How many replicas must confirm a write, and how long to wait for them. */
export interface Durability {
  readonly replicas: number;
  readonly timeoutMs: number;
}

/** The write happened on the primary, but fewer than the required replicas confirmed it in time. */
export class ReplicaAckError extends Error {
  override readonly name = 'ReplicaAckError';
  constructor(
    readonly confirmed: number,
    readonly required: number,
    timeoutMs: number,
  ) {
    super(`write confirmed by ${confirmed} of ${required} required replicas within ${timeoutMs} ms`);
  }
}

const REDIRECT = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /;

/**
 * Runs `calls` and returns each one's reply or Error, in order. Calls go out as one pipeline per
 * node (on a cluster, a pipeline must stay on one node); with `durability.replicas > 0` each
 * pipeline ends with WAIT, so its replies count only once that many replicas have every write
 * before it, otherwise each successful call's entry is a ReplicaAckError. WAIT waits for the
 * connection's latest write, so a call that wrote nothing itself is covered only by writes made
 * earlier on the same connection: scripts meant to be confirmed should write on every path.
 * Scripts unknown to a node are sent again with EVAL; calls a cluster redirected (not run) are
 * sent again once after the slot map is refreshed.
 */
export async function evalScripts(
  client: RedisClient,
  calls: readonly ScriptCall[],
  durability: Durability = { replicas: 0, timeoutMs: 0 },
): Promise<(unknown | Error)[]> {
  const out: (unknown | Error)[] = new Array(calls.length);
  let todo = calls.map((_, i) => i);
  const useEval = new Set<number>();
  for (let round = 0; todo.length > 0; round++) {
    const again: number[] = [];
    let redirected = false;
    await Promise.all(
      groupByNode(client, todo, (i) => calls[i]!.keys[0]).map(async (group) => {
        const p = client.pipeline();
        for (const i of group) {
          const c = calls[i]!;
          if (useEval.has(i)) p.eval(c.script.source, c.keys.length, ...c.keys, ...c.args);
          else p.evalsha(c.script.sha1, c.keys.length, ...c.keys, ...c.args);
        }
        if (durability.replicas > 0) p.wait(durability.replicas, durability.timeoutMs);
        let res: [Error | null, unknown][];
        try {
          res = (await p.exec()) ?? [];
        } catch (err) {
          for (const i of group) out[i] = err instanceof Error ? err : new Error(String(err));
          return;
        }
        let confirmError: Error | undefined;
        if (durability.replicas > 0) {
          const [werr, n] = res[group.length] ?? [new Error('no reply to WAIT'), 0];
          if (werr) confirmError = werr;
          else if (Number(n) < durability.replicas)
            confirmError = new ReplicaAckError(Number(n), durability.replicas, durability.timeoutMs);
        }
        group.forEach((i, j) => {
          const [err, value] = res[j] ?? [new Error('no reply'), undefined];
          if (err) {
            const m = err.message;
            if (m.includes('NOSCRIPT') && !useEval.has(i) && round < 3) {
              useEval.add(i);
              again.push(i);
            } else if (REDIRECT.test(m) && round < 2) {
              redirected = true;
              again.push(i);
            } else out[i] = err;
          } else out[i] = confirmError ?? value;
        });
      }),
    );
    if (redirected && isCluster(client)) await refreshSlots(client);
    todo = again;
  }
  return out;
}

function refreshSlots(cluster: Cluster): Promise<void> {
  return new Promise((resolve) => cluster.refreshSlotsCache(() => resolve()));
}

/** Indexes grouped so each group's keys are served by one node (everything in one group on one instance). */
function groupByNode<T>(
  client: RedisClient,
  items: readonly T[],
  keyOf: (item: T) => string | undefined,
): T[][] {
  if (!isCluster(client)) return items.length ? [[...items]] : [];
  const groups = new Map<string, T[]>();
  for (const it of items) {
    const k = keyOf(it);
    const slot = k === undefined ? 0 : hashSlot(k);
    const node = client.slots[slot]?.join(';') ?? `slot:${slot}`;
    let g = groups.get(node);
    if (!g) groups.set(node, (g = []));
    g.push(it);
  }
  return [...groups.values()];
}

/**
 * Deletes `keys` (UNLINK) and returns how many existed. On a cluster one UNLINK per slot, since
 * a multi-key command must stay in one slot.
 */
export async function unlinkKeys(client: RedisClient, keys: readonly string[]): Promise<number> {
  if (keys.length === 0) return 0;
  if (!isCluster(client)) return client.unlink(...keys);
  const bySlot = new Map<number, string[]>();
  for (const k of keys) {
    const s = hashSlot(k);
    let g = bySlot.get(s);
    if (!g) bySlot.set(s, (g = []));
    g.push(k);
  }
  const counts = await Promise.all([...bySlot.values()].map((g) => client.unlink(...g)));
  return counts.reduce((a, b) => a + b, 0);
}

/**
 * SCANs every primary for `pattern` and hands each page of keys to `onKeys`. On a cluster the
 * primaries are taken from a fresh slot map and must cover every slot; a primary that cannot
 * be scanned fails the whole call, so a caller never mistakes a partial scan for a complete one.
 */
export async function scanAllPrimaries(
  client: RedisClient,
  pattern: string,
  count: number,
  onKeys: (keys: string[]) => Promise<void>,
): Promise<void> {
  const scanOne = async (node: Redis) => {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      if (keys.length > 0) await onKeys(keys);
    } while (cursor !== '0');
  };
  if (!isCluster(client)) return scanOne(client);
  await refreshSlots(client);
  const primaries = client.nodes('master');
  const keyOf = (n: Redis) => `${n.options.host}:${n.options.port}`;
  const scanned = new Set(primaries.map(keyOf));
  for (let slot = 0; slot < 16384; slot++) {
    const owner = client.slots[slot]?.[0];
    if (!owner || !scanned.has(owner))
      throw new Error(
        `slot ${slot} has no reachable primary (${owner ?? 'none'}); not every key can be scanned`,
      );
  }
  for (const node of primaries) await scanOne(node);
}
