/**
 * Erasure of one user's data from everything the serving tier keeps in Redis: batch feature
 * blobs under every version still alive, the online feature hash, their events on the stream
 * and those events' dedup markers, and their entries on the dead-letter stream. Serving holds no per-user state in memory.
 */
import { KEYS, PREFIX } from '../../../contracts/features.js';
import { scanAllPrimaries, unlinkKeys, type RedisClient } from '../../../contracts/redis.js';

/** Counts of what was erased. */
export interface EraseReport {
  featureKeys: number;
  onlineKeys: number;
  streamEntries: number;
  eventMarkers: number;
  /** Entries of the dead-letter stream (events the stream job could not apply). */
  deadLetters: number;
}

/** The user id inside a dead-letter entry's `fields` (the original entry's fields, as JSON). */
export function userOfDeadLetter(fields: string[]): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] !== 'fields') continue;
    try {
      const original: unknown = JSON.parse(fields[i + 1]!);
      if (!Array.isArray(original)) return undefined;
      for (let j = 0; j + 1 < original.length; j += 2)
        if (original[j] === 'userId' && typeof original[j + 1] === 'string') return original[j + 1] as string;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** Characters with meaning in a Redis MATCH pattern. */
function escapeGlob(s: string): string {
  return s.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}

/** A batch feature blob key: KEYS.user(version, userId); a version id never contains ':'. */
const FEATURE_KEY = new RegExp(`^${PREFIX}:features:[^:]+:user:(.+)$`);

/** The user id of a batch feature blob key (KEYS.user), or undefined for any other key. */
export function userOfFeatureKey(key: string): string | undefined {
  return FEATURE_KEY.exec(key)?.[1];
}

/** Erases every key and stream entry of `userId`; safe to repeat. */
export async function eraseUser(redis: RedisClient, userId: string, scanCount = 5000): Promise<EraseReport> {
  const report: EraseReport = {
    featureKeys: 0,
    onlineKeys: 0,
    streamEntries: 0,
    eventMarkers: 0,
    deadLetters: 0,
  };
  // 1. Batch feature blobs of every version (old versions live until their TTL).
  const pattern = `${PREFIX}:features:*:user:${escapeGlob(userId)}`;
  // On a cluster every primary is scanned (contracts/redis.ts).
  await scanAllPrimaries(redis, pattern, scanCount, async (keys) => {
    // The pattern's * also spans ':', so it matches another user whose id ends with
    // `:user:<ours>` (v1:user:y1:user:x1 for x1); keep the keys whose own id is ours.
    const exact = keys.filter((k) => userOfFeatureKey(k) === userId);
    if (exact.length > 0) report.featureKeys += await unlinkKeys(redis, exact);
  });
  // 2. Online features.
  report.onlineKeys += await redis.unlink(KEYS.onlineUser(userId));
  // 3. Their events on the stream, and the markers of those events.
  let start = '-';
  for (;;) {
    const entries = await redis.xrange(KEYS.events, start, '+', 'COUNT', 1000);
    if (entries.length === 0) break;
    const mine: string[] = [];
    const markers: string[] = [];
    for (const [id, fields] of entries) {
      let uid: string | undefined;
      let eid: string | undefined;
      let sid: string | undefined;
      for (let i = 0; i + 1 < fields.length; i += 2) {
        if (fields[i] === 'userId') uid = fields[i + 1];
        else if (fields[i] === 'eventId') eid = fields[i + 1];
        else if (fields[i] === 'storeId') sid = fields[i + 1];
      }
      if (uid === userId) {
        mine.push(id);
        if (eid) markers.push(KEYS.eventSeen(eid), KEYS.eventApplied(userId, eid));
        if (eid && sid) markers.push(KEYS.storeEventApplied(sid, eid));
      }
    }
    if (mine.length > 0) report.streamEntries += await redis.xdel(KEYS.events, ...mine);
    if (markers.length > 0) report.eventMarkers += await unlinkKeys(redis, markers);
    if (entries.length < 1000) break;
    start = `(${entries[entries.length - 1]![0]}`;
  }
  // 4. Their events the stream job could not apply (kept for an operator to look at).
  start = '-';
  for (;;) {
    const entries = await redis.xrange(KEYS.eventsDeadLetter, start, '+', 'COUNT', 1000);
    if (entries.length === 0) break;
    const mine = entries.filter(([, fields]) => userOfDeadLetter(fields) === userId).map(([id]) => id);
    if (mine.length > 0) report.deadLetters += await redis.xdel(KEYS.eventsDeadLetter, ...mine);
    if (entries.length < 1000) break;
    start = `(${entries[entries.length - 1]![0]}`;
  }
  return report;
}
