/**
 * The stream job: a consumer in a Redis Streams consumer group on KEYS.events. It first
 * re-reads its own pending entries (a restart after a crash), then loops: claim entries that
 * another consumer left pending for longer than `claimIdleMs` (XAUTOCLAIM), read new entries
 * (XREADGROUP), apply each with the atomic script (effect + applied marker + XACK), and trim
 * the entries every consumer group has processed. An entry that breaks the event grammar is
 * moved to the dead-letter stream (with the reason) and counted as dead-lettered, never as applied.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { decodeEventFields } from '../../../contracts/events.js';
import { KEYS, type Catalog, type StoreInfo } from '../../../contracts/features.js';
import {
  APPLY_SCRIPT,
  buildApplyContext,
  computeApplyArgs,
  DEAD_LETTER_SCRIPT,
  TRIM_SCRIPT,
  type ApplyContext,
} from './apply.js';

export const DEFAULT_GROUP = 'crema-stream-job';
const sha1 = (s: string) => createHash('sha1').update(s).digest('hex');
const APPLY_SHA = sha1(APPLY_SCRIPT);
const DEAD_LETTER_SHA = sha1(DEAD_LETTER_SCRIPT);
const TRIM_SHA = sha1(TRIM_SCRIPT);

export interface StreamJobOptions {
  readonly redis: Redis;
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
}

type Entry = [id: string, fields: string[] | null];

/** Loads item and store lookups from the current batch feature version (empty when none). */
export async function fetchApplyContext(redis: Redis): Promise<ApplyContext> {
  const v = await redis.get(KEYS.current);
  if (!v) return buildApplyContext(undefined, []);
  const [catalog, stores] = await Promise.all([redis.get(KEYS.catalog(v)), redis.hgetall(KEYS.stores(v))]);
  return buildApplyContext(
    catalog ? (JSON.parse(catalog) as Catalog) : undefined,
    Object.values(stores).map((s) => JSON.parse(s) as StoreInfo),
  );
}

/** Creates the consumer group (from the start of the stream) unless it exists. */
export async function ensureGroup(redis: Redis, group: string): Promise<void> {
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
export async function trimProcessedEntries(redis: Redis): Promise<number> {
  return Number(await redis.eval(TRIM_SCRIPT, 1, KEYS.events));
}

/** Runs the consumer until the signal aborts (or, with untilIdle, until the group is drained). */
export async function runStreamJob(o: StreamJobOptions): Promise<StreamJobStats> {
  const { redis, consumer } = o;
  const group = o.group ?? DEFAULT_GROUP;
  const count = o.count ?? 200;
  const claimIdleMs = o.claimIdleMs ?? 30_000;
  const log = o.log ?? (() => {});
  const trimIntervalMs = o.trimIntervalMs ?? 1000;
  const stats: StreamJobStats = {
    applied: 0,
    duplicates: 0,
    claimed: 0,
    deadLettered: 0,
    deleted: 0,
    trimmed: 0,
  };
  await ensureGroup(redis, group);
  let ctx = o.context ?? (await fetchApplyContext(redis));
  let ctxAt = Date.now();

  const apply = async (entries: readonly (Entry | null)[]) => {
    if (entries.length === 0) return;
    const p = redis.pipeline();
    // What each pipelined command was, so each reply is counted as what it means.
    const kinds: ('apply' | 'dead' | 'deleted')[] = [];
    for (const entry of entries) {
      if (!entry) continue;
      const [id, fields] = entry;
      if (!fields) {
        // Deleted (erased) after it was delivered: nothing to apply, but it must leave the PEL.
        kinds.push('deleted');
        p.xack(KEYS.events, group, id);
        continue;
      }
      const e = decodeEventFields(fields);
      if ('field' in e) {
        // It can never succeed: keep it on the dead-letter stream, acknowledged so it does not block the group.
        log(`stream: entry ${id} dead-lettered: ${e.message}`);
        kinds.push('dead');
        p.evalsha(
          DEAD_LETTER_SHA,
          2,
          KEYS.events,
          KEYS.eventsDeadLetter,
          group,
          id,
          e.message,
          JSON.stringify(fields),
        );
        continue;
      }
      const { keys, argv } = computeApplyArgs(group, id, e, ctx);
      kinds.push('apply');
      p.evalsha(APPLY_SHA, keys.length, ...keys, ...argv);
    }
    const res = (await p.exec()) ?? [];
    res.forEach(([err, r], i) => {
      if (err) throw err;
      const kind = kinds[i];
      if (kind === 'apply') {
        if (r === 1) stats.applied++;
        else stats.duplicates++;
      } else if (kind === 'dead') {
        if (r === 1) stats.deadLettered++;
      } else if (r === 1) stats.deleted++;
    });
  };
  let lastTrim = 0;
  const trim = async (force = false) => {
    if (!force && Date.now() - lastTrim < trimIntervalMs) return;
    lastTrim = Date.now();
    stats.trimmed += Number(await redis.evalsha(TRIM_SHA, 1, KEYS.events));
  };
  for (const script of [APPLY_SCRIPT, DEAD_LETTER_SCRIPT, TRIM_SCRIPT]) await redis.script('LOAD', script);

  // 1. Our own pending entries: delivered to us before a crash, maybe applied, never acked.
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

  let cursor = '0-0';
  let lastClaim = 0;
  while (!o.signal?.aborted) {
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
    if (o.untilIdle && entries.length === 0) {
      const pending = (await redis.xpending(KEYS.events, group)) as [number, ...unknown[]];
      if (Number(pending[0]) === 0) break;
    }
  }
  await trim(true);
  return stats;
}
