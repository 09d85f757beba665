/**
 * The stream job: a consumer in a Redis Streams consumer group on KEYS.events. It first
 * re-reads its own pending entries (a restart after a crash), then loops: claim entries that
 * another consumer left pending for longer than `claimIdleMs` (XAUTOCLAIM), read new entries
 * (XREADGROUP), apply each with the scripts of apply.ts (each effect with its own applied
 * marker), acknowledge (XACK) only the entries whose effects all succeeded, confirmed by
 * `durability.replicas` replicas when set, and trim the entries every consumer group has
 * processed. An entry that breaks the event grammar is moved to the dead-letter stream (with the
 * reason) and counted as dead-lettered, never as applied. Redis failing (a failover, a restart)
 * is retried with backoff, re-reading its own pending entries, for up to `maxOutageMs`.
 */
import { decodeEventFields } from '../../../contracts/events.js';
import { KEYS, type Catalog, type StoreInfo } from '../../../contracts/features.js';
import { evalScripts, type Durability, type RedisClient, type ScriptCall } from '../../../contracts/redis.js';
import {
  buildApplyContext,
  computeApplyCalls,
  DEAD_LETTER_SCRIPT,
  TRIM_SCRIPT,
  type ApplyContext,
} from './apply.js';

export const DEFAULT_GROUP = 'crema-stream-job';

export interface StreamJobOptions {
  /** One instance or a cluster (contracts/redis.ts). */
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
  /** Trim processed entries at most this often (and when idle or stopping). Default 1000 ms. */
  readonly trimIntervalMs?: number;
  /** Replicas that must confirm an entry's effects before it is acknowledged (WAIT). Default none. */
  readonly durability?: Durability;
  /** How long Redis may keep failing before the job gives up (rejects). Default 60 s. */
  readonly maxOutageMs?: number;
}

/** What one run did, entry by entry; printed as the CLI's summary. */
export interface StreamJobStats {
  /** Entries whose event took effect now. */
  applied: number;
  /** Entries whose event id had taken effect before (a redelivery or re-append): no second effect. */
  duplicates: number;
  /** Entries taken over from consumers that left them pending (also counted in the outcomes). */
  claimed: number;
  /** Entries that break the event grammar: moved to KEYS.eventsDeadLetter with the reason, then acked. */
  deadLettered: number;
  /** Entries deleted from the stream (user erasure) before they were applied: acked, nothing to apply. */
  deleted: number;
  /** Processed entries removed from the stream (XTRIM MINID). */
  trimmed: number;
  /** Times Redis failed and the job retried. */
  retries: number;
}

type Entry = [id: string, fields: string[] | null];

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

/**
 * Removes the entries of the events stream that every consumer group has processed (TRIM_SCRIPT);
 * returns how many. Nothing is removed while no group exists.
 */
export async function trimProcessedEntries(redis: RedisClient): Promise<number> {
  const [r] = await evalScripts(redis, [{ script: TRIM_SCRIPT, keys: [KEYS.events], args: [] }]);
  if (r instanceof Error) throw r;
  return Number(r);
}

/** Runs the consumer until the signal aborts (or, with untilIdle, until the group is drained). */
export async function runStreamJob(o: StreamJobOptions): Promise<StreamJobStats> {
  const { redis, consumer } = o;
  const group = o.group ?? DEFAULT_GROUP;
  const count = o.count ?? 200;
  const claimIdleMs = o.claimIdleMs ?? 30_000;
  const maxOutageMs = o.maxOutageMs ?? 60_000;
  const log = o.log ?? (() => {});
  const trimIntervalMs = o.trimIntervalMs ?? 1000;
  const stats: StreamJobStats = {
    applied: 0,
    duplicates: 0,
    claimed: 0,
    deadLettered: 0,
    deleted: 0,
    trimmed: 0,
    retries: 0,
  };
  let ctx = o.context;
  let ctxAt = Date.now();

  const apply = async (entries: readonly (Entry | null)[]) => {
    if (entries.length === 0) return;
    const calls: ScriptCall[] = [];
    /** Per call, the entry it belongs to and what it is, so each reply counts as what it means. */
    const owner: { entry: number; kind: 'user' | 'store' | 'dead' }[] = [];
    const deleted: string[] = [];
    entries.forEach((entry, i) => {
      if (!entry) return;
      const [id, fields] = entry;
      if (!fields) {
        // Deleted (erased) after it was delivered: nothing to apply, but it must leave the PEL.
        deleted.push(id);
        return;
      }
      const e = decodeEventFields(fields);
      if ('field' in e) {
        // It can never succeed: keep it on the dead-letter stream, acknowledged so it does not block the group.
        log(`stream: entry ${id} dead-lettered: ${e.message}`);
        calls.push({
          script: DEAD_LETTER_SCRIPT,
          keys: [KEYS.events, KEYS.eventsDeadLetter],
          args: [group, id, e.message, JSON.stringify(fields)],
        });
        owner.push({ entry: i, kind: 'dead' });
        return;
      }
      const c = computeApplyCalls(e, ctx!);
      calls.push(c.user);
      owner.push({ entry: i, kind: 'user' });
      if (c.store) {
        calls.push(c.store);
        owner.push({ entry: i, kind: 'store' });
      }
    });
    const [res, acked] = await Promise.all([
      evalScripts(redis, calls, o.durability),
      Promise.all(deleted.map((id) => redis.xack(KEYS.events, group, id))),
    ]);
    stats.deleted += acked.filter((n) => n === 1).length;
    const failed = new Set<number>();
    let failure: Error | undefined;
    res.forEach((r, j) => {
      const { entry, kind } = owner[j]!;
      if (r instanceof Error) {
        failed.add(entry);
        failure ??= r;
      } else if (kind === 'user') {
        if (r === 1) stats.applied++;
        else stats.duplicates++;
      } else if (kind === 'dead' && r === 1) stats.deadLettered++;
    });
    // Applied entries are acknowledged here (dead letters by their script); the failed ones stay
    // pending and are applied again, their markers making that safe.
    const applied = new Set(owner.filter((c) => c.kind !== 'dead').map((c) => c.entry));
    const done = [...applied].filter((i) => !failed.has(i)).map((i) => entries[i]![0]);
    if (done.length > 0) await redis.xack(KEYS.events, group, ...done);
    if (failure) throw failure;
  };
  let lastTrim = 0;
  const trim = async (force = false) => {
    if (!force && Date.now() - lastTrim < trimIntervalMs) return;
    lastTrim = Date.now();
    stats.trimmed += await trimProcessedEntries(redis);
  };

  // 1. Our own pending entries: delivered to us before a crash or a failed apply, never acked.
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
    await trim(true);
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
        // Redis 7 drops deleted entries from the PEL itself and lists them third.
        const [next, claimed] = (await redis.xautoclaim(
          KEYS.events,
          group,
          consumer,
          claimIdleMs,
          cursor,
          'COUNT',
          count,
        )) as [string, (Entry | null)[]];
        cursor = next;
        if (claimed.length) log(`stream: claimed ${claimed.length} stale entries`);
        stats.claimed += claimed.length;
        await apply(claimed);
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
      // Idle: trim now, so a drained stream is empty rather than waiting for the next batch.
      await trim(entries.length === 0);
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
  // A last trim on the way out; a failing Redis does not fail a stop.
  await trim(true).catch(() => undefined);
  return stats;
}

/** The client gave up reconnecting: retrying cannot help. */
function isClosed(redis: RedisClient): boolean {
  return redis.status === 'end';
}
