/**
 * The stream job: a consumer in a Redis Streams consumer group on KEYS.events. It first
 * re-reads its own pending entries (a restart after a crash), then loops: claim entries that
 * another consumer left pending for longer than `claimIdleMs` (XAUTOCLAIM), read new entries
 * (XREADGROUP), apply each with the atomic script (effect + applied marker + XACK).
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { KEYS, type Catalog, type StoreInfo } from '../../../contracts/features.js';
import {
  APPLY_SCRIPT,
  buildApplyContext,
  computeApplyArgs,
  parseEventFields,
  type ApplyContext,
} from './apply.js';

export const DEFAULT_GROUP = 'crema-stream-job';
const APPLY_SHA = createHash('sha1').update(APPLY_SCRIPT).digest('hex');

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
}

export interface StreamJobStats {
  applied: number;
  duplicates: number;
  claimed: number;
  malformed: number;
}

type Entry = [id: string, fields: string[]];

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

/** Runs the consumer until the signal aborts (or, with untilIdle, until the group is drained). */
export async function runStreamJob(o: StreamJobOptions): Promise<StreamJobStats> {
  const { redis, consumer } = o;
  const group = o.group ?? DEFAULT_GROUP;
  const count = o.count ?? 200;
  const claimIdleMs = o.claimIdleMs ?? 30_000;
  const log = o.log ?? (() => {});
  const stats: StreamJobStats = { applied: 0, duplicates: 0, claimed: 0, malformed: 0 };
  await ensureGroup(redis, group);
  let ctx = o.context ?? (await fetchApplyContext(redis));
  let ctxAt = Date.now();

  const apply = async (entries: readonly Entry[]) => {
    if (entries.length === 0) return;
    const p = redis.pipeline();
    for (const [id, fields] of entries) {
      const e = fields ? parseEventFields(fields) : 'deleted entry';
      if (typeof e === 'string') {
        // A malformed entry can never succeed: acknowledge it so it does not block the group.
        log(`stream: entry ${id} skipped: ${e}`);
        stats.malformed++;
        p.xack(KEYS.events, group, id);
        continue;
      }
      const { keys, argv } = computeApplyArgs(group, id, e, ctx);
      p.evalsha(APPLY_SHA, keys.length, ...keys, ...argv);
    }
    const res = await p.exec();
    for (const [err, r] of res ?? []) {
      if (err) throw err;
      if (r === 1) stats.applied++;
      else if (r === 0) stats.duplicates++;
    }
  };
  await redis.script('LOAD', APPLY_SCRIPT);

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
    if (o.untilIdle && entries.length === 0) {
      const pending = (await redis.xpending(KEYS.events, group)) as [number, ...unknown[]];
      if (Number(pending[0]) === 0) break;
    }
  }
  return stats;
}
