/** Sharding of users by a stable hash of the user id, as a Kubernetes Indexed Job runs it. */
import { fnv1a } from '../common/rng.js';

export interface Shard {
  readonly index: number;
  readonly count: number;
}

/** Shard (0..count-1) of a user id. */
export function shardOfUser(userId: string, count: number): number {
  return count <= 1 ? 0 : fnv1a(userId) % count;
}

/** Parses `i/N` (e.g. `2/8`); throws a message that quotes the input. */
export function parseShard(s: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(s.trim());
  if (!m) throw new RangeError(`--shard "${s}": expected i/N, e.g. 0/4`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1 || index >= count) throw new RangeError(`--shard "${s}": need 0 <= i < N and N >= 1`);
  return { index, count };
}
