/**
 * The stream job: a consumer in a Redis Streams consumer group on KEYS.events. It first
 * re-reads its own pending entries (a restart after a crash), then loops: claim entries that
 * another consumer left pending for longer than `claimIdleMs` (XAUTOCLAIM), read new entries
 * (XREADGROUP), apply each with the scripts of apply.ts (each effect with its own applied
 * marker), and acknowledge (XACK) only the entries whose effects all succeeded, confirmed by
 * `durability.replicas` replicas when set. Redis failing (a failover, a restart) is retried
 * with backoff, re-reading its own pending entries, for up to `maxOutageMs`.
 */
import { KEYS, type Catalog, type StoreInfo } from '../../../contracts/features.js';
import { evalScripts, type Durability, type RedisClient, type ScriptCall } from '../../../contracts/redis.js';
import { buildApplyContext, computeApplyCalls, parseEventFields, type ApplyContext } from './apply.js';

export const DEFAULT_GROUP = 'crema-stream-job';

export interface StreamJobOptions {
  readonly redis: RedisClient;
  readonly consumer: string;
  readonly group?: string;
  readonly count?: number;
  readonly blockMs?: number;
  /** Pending entries idle this long belong to a dead consumer and are claimed. */
  readonly claimIdleMs?: number;
  /** Stop when aborted (SIGTERM in the CLI). */
  readonly signal?: AbortSignal;
  /** Stop once nothing is new and nothing is pending anywhere in the group (batch replays, tests). */
  readonly untilIdle?: boolean;
  readonly log?: (line: string) => void;
  /** Lookups; loaded from the current feature version when absent. */
  readonly context?: ApplyContext;
  /** Replicas that must confirm an entry's effects before it is acknowledged (WAIT). Default none. */
  readonly durability?: Durability;
  /** How long Redis may keep failing before the job gives up (rejects). Default 60 s. */
  readonly maxOutageMs?: number;
}

export interface StreamJobStats {
  applied: number;
  duplicates: number;
  claimed: number;
  malformed: number;
  /** Times Redis failed and the job retried. */
  retries: number;
}

type Entry = [id: string, fields: string[]];

/** Loads item and store lookups from the current batch feature version (empty when none). */
export async function fetchApplyContext(redis: RedisClient): Promise<ApplyContext> {
  const v = await redis.get(KEYS.current);
  if (!v) return buildApplyContext(undefined, []);
  const [catalog, stores] = await Promise.all([redis.get(KEYS.catalog(v)), redis.hgetall(KEYS.stores(v))]);
  return buildApplyContext(
    catalog ? (JSON.parse(catalog) as Catalog) : undefined,
    Object.values(stores).map((s) => JSON.parse(s) as StoreInfo),
  );
}

/** Creates the consumer group (from the start of the stream) unless it exists. */
export async function ensureGroup(redis: RedisClient, group: string): Promise<void> {
  try {
    await redis.xgroup('CREATE', KEYS.events, group, '0', 'MKSTREAM');
  } catch (err) {
    if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
  }
}

/** Runs the consumer until the signal aborts (or, with untilIdle, until the group is drained). */
export async function runStreamJob(o: StreamJobOptions): Promise<StreamJobStats> {
  const { redis, consumer } = o;
  const group = o.group ?? DEFAULT_GROUP;
  const count = o.count ?? 200;
  const claimIdleMs = o.claimIdleMs ?? 30_000;
  const maxOutageMs = o.maxOutageMs ?? 60_000;
  const log = o.log ?? (() => {});
  const stats: StreamJobStats = { applied: 0, duplicates: 0, claimed: 0, malformed: 0, retries: 0 };
  let ctx = o.context;
  let ctxAt = Date.now();

  const apply = async (entries: readonly Entry[]) => {
    if (entries.length === 0) return;
    const calls: ScriptCall[] = [];
    /** Per call, the entry it belongs to; per entry, the index of its user call (-1: malformed). */
    const entryOf: number[] = [];
    const userCall: number[] = [];
    entries.forEach(([id, fields], i) => {
      const e = fields ? parseEventFields(fields) : 'deleted entry';
      if (typeof e === 'string') {
        // A malformed entry can never succeed: acknowledge it so it does not block the group.
        log(`stream: entry ${id} skipped: ${e}`);
        stats.malformed++;
        userCall.push(-1);
        return;
      }
      const c = computeApplyCalls(e, ctx!);
      userCall.push(calls.length);
      calls.push(c.user);
      entryOf.push(i);
      if (c.store) {
        calls.push(c.store);
        entryOf.push(i);
      }
    });
    const res = await evalScripts(redis, calls, o.durability);
    const done = entries.map(() => true);
    let failure: Error | undefined;
    res.forEach((r, j) => {
      if (r instanceof Error) {
        done[entryOf[j]!] = false;
        failure ??= r;
      }
    });
    for (const u of userCall) {
      if (u < 0 || res[u] instanceof Error) continue;
      if (res[u] === 1) stats.applied++;
      else stats.duplicates++;
    }
    const ids = entries.filter((_, i) => done[i]).map(([id]) => id);
    if (ids.length > 0) await redis.xack(KEYS.events, group, ...ids);
    // The rest stay pending and are applied again (their markers make that safe).
    if (failure) throw failure;
  };

  // Our own pending entries: delivered to us before a crash or a failed apply, never acked.
  const recover = async () => {
    await ensureGroup(redis, group);
    ctx ??= await fetchApplyContext(redis);
    for (;;) {
      const r = (await redis.xreadgroup(
        'GROUP',
        group,
        consumer,
        'COUNT',
        count,
        'STREAMS',
        KEYS.events,
        '0',
      )) as [string, Entry[]][] | null;
      const entries = r?.[0]?.[1] ?? [];
      await apply(entries);
      if (entries.length < count) break;
    }
  };

  let cursor = '0-0';
  let lastClaim = 0;
  let recovering = true;
  let failingSince: number | undefined;
  let failures = 0;
  let lastError = '';
  while (!o.signal?.aborted) {
    try {
      if (recovering) {
        await recover();
        recovering = false;
      }
      // Pick up a new batch version's catalog and store capacities without a restart.
      if (!o.context && Date.now() - ctxAt > 60_000) {
        ctx = await fetchApplyContext(redis);
        ctxAt = Date.now();
      }
      // 2. Entries a dead consumer left behind.
      if (Date.now() - lastClaim >= Math.min(claimIdleMs, 5_000)) {
        const [next, claimed] = (await redis.xautoclaim(
          KEYS.events,
          group,
          consumer,
          claimIdleMs,
          cursor,
          'COUNT',
          count,
        )) as [string, Entry[]];
        cursor = next;
        if (claimed.length) log(`stream: claimed ${claimed.length} stale entries`);
        stats.claimed += claimed.length;
        await apply(claimed.filter((c) => c !== null));
        if (next === '0-0') lastClaim = Date.now();
        if (claimed.length) continue;
      }
      // 3. New entries.
      const r = (await redis.xreadgroup(
        'GROUP',
        group,
        consumer,
        'COUNT',
        count,
        'BLOCK',
        o.untilIdle ? 100 : (o.blockMs ?? 2_000),
        'STREAMS',
        KEYS.events,
        '>',
      )) as [string, Entry[]][] | null;
      const entries = r?.[0]?.[1] ?? [];
      await apply(entries);
      if (failingSince !== undefined)
        log(`stream: Redis answers again after ${Date.now() - failingSince} ms`);
      failingSince = undefined;
      failures = 0;
      lastError = '';
      if (o.untilIdle && entries.length === 0) {
        const pending = (await redis.xpending(KEYS.events, group)) as [number, ...unknown[]];
        if (Number(pending[0]) === 0) break;
      }
    } catch (err) {
      if (o.signal?.aborted) break;
      const now = Date.now();
      failingSince ??= now;
      if (now - failingSince > maxOutageMs || isClosed(redis)) throw err;
      const message = (err as Error).message;
      if (message !== lastError) log(`stream: ${message}; retrying`);
      lastError = message;
      stats.retries++;
      failures++;
      await new Promise((r) => setTimeout(r, Math.min(2_000, 50 * 2 ** Math.min(6, failures))));
      recovering = true;
    }
  }
  return stats;
}

/** The client gave up reconnecting: retrying cannot help. */
function isClosed(redis: RedisClient): boolean {
  return redis.status === 'end';
}
