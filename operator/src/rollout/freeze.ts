/**
 * StoreRegion freeze windows: while a region that serves the model is in one (e.g. the morning
 * rush) its canary holds where it is — no weight increase, no step advance, no promotion
 * (rollout/machine.ts, ADR 0014). Pure, evaluated in each region's own time zone, exact across
 * DST changes: a window's end is the first instant whose local wall time reaches `end`.
 */
import type { StoreRegion } from '../api/v1alpha1/index.js';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
const MINUTE = 60_000;

/** One formatter per time zone: creating one costs ~50 µs, using one ~2 µs. */
const formatters = new Map<string, Intl.DateTimeFormat>();
function formatterOf(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    // Throws RangeError on an unknown zone (the caller decides what that means).
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Local wall clock of an instant: its calendar date, weekday and minute. */
interface Wall {
  readonly y: number;
  readonly mo: number;
  readonly d: number;
  readonly day: string;
  readonly hhmm: string;
  /** The wall time read as if it were UTC, in ms (for arithmetic on wall times). */
  readonly ms: number;
}

function wallOf(instant: number, timeZone: string): Wall {
  const parts = formatterOf(timeZone).formatToParts(instant);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
  const [y, mo, d, h, mi] = [get('year'), get('month'), get('day'), get('hour'), get('minute')].map(
    Number,
  ) as [number, number, number, number, number];
  return {
    y,
    mo,
    d,
    day: get('weekday').slice(0, 3),
    hhmm: `${String(h).padStart(2, '0')}:${String(mi).padStart(2, '0')}`,
    ms: Date.UTC(y, mo - 1, d, h, mi),
  };
}

/** Weekday ("Mon") and "HH:MM" of `now` in `timeZone`. */
export function localClock(now: Date, timeZone: string): { day: string; hhmm: string } {
  const w = wallOf(now.getTime(), timeZone);
  return { day: w.day, hhmm: w.hhmm };
}

/**
 * The first instant (on a minute) whose wall time in `timeZone` is at or after `target` (a wall
 * time as UTC ms), searched near `hint`. A wall time skipped by a spring-forward change maps to
 * the instant the clock jumps past it.
 */
export function instantOfWall(target: number, timeZone: string, hint: number): number {
  const h = Math.floor(hint / MINUTE) * MINUTE;
  let g = target - (wallOf(h, timeZone).ms - h);
  for (let i = 0; i < 3; i++) {
    const w = wallOf(g, timeZone).ms;
    if (w === target) {
      // In a repeated (fall-back) hour the earlier of the two instants is the first.
      const hourBefore = g - 60 * MINUTE;
      return wallOf(hourBefore, timeZone).ms === target ? hourBefore : g;
    }
    g += target - w;
  }
  // Skipped wall time: the first minute whose wall time passes it (offsets move by ≤ 2 h).
  let lo = g - 3 * 60 * MINUTE;
  let hi = g + 3 * 60 * MINUTE;
  while (hi - lo > MINUTE) {
    const mid = lo + Math.floor((hi - lo) / 2 / MINUTE) * MINUTE;
    if (wallOf(mid, timeZone).ms >= target) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** `HH:MM` on the wall date of `w` (plus `days`), as wall ms. */
function wallAt(w: Wall, hhmm: string, days = 0): number {
  const [h, m] = hhmm.split(':').map(Number) as [number, number];
  return Date.UTC(w.y, w.mo - 1, w.d + days, h, m);
}

/** A freeze window of a region that serves the model, active at an instant. */
interface ActiveWindow {
  readonly name: string;
  /** When it ends (its `end`, on the local date it is active on). */
  readonly end: number;
}

/** The regions serving `modelName` whose time zone can be read. */
function servingRegions(regions: readonly StoreRegion[], modelName: string) {
  return regions.flatMap((r) => {
    if (r.spec.serving?.modelRef !== modelName) return [];
    try {
      formatterOf(r.spec.timezone);
      return [r];
    } catch {
      return []; // an unknown time zone cannot be evaluated; the region's own status reports it
    }
  });
}

function activeWindows(regions: readonly StoreRegion[], at: number): ActiveWindow[] {
  const out: ActiveWindow[] = [];
  for (const r of regions) {
    const tz = r.spec.timezone;
    const w = wallOf(at, tz);
    for (const [i, fw] of (r.spec.freezeWindows ?? []).entries()) {
      const days = fw.days?.length ? fw.days : DAYS;
      if (!(days as readonly string[]).includes(w.day)) continue;
      if (w.hhmm >= fw.start && w.hhmm < fw.end) {
        out.push({
          name: `${r.metadata?.name}/freezeWindows[${i}] ${fw.start}-${fw.end} ${tz}`,
          end: instantOfWall(wallAt(w, fw.end), tz, at),
        });
      }
    }
  }
  return out;
}

/** The first active freeze window among the regions serving `modelName`, or undefined. */
export function activeFreezeWindow(
  regions: readonly StoreRegion[],
  modelName: string,
  now: Date,
): { name: string } | undefined {
  const first = activeWindows(servingRegions(regions, modelName), now.getTime())[0];
  return first ? { name: first.name } : undefined;
}

/** Whether a model is frozen now, until when, and when the next freeze starts. */
export interface FreezeState {
  /**
   * The freeze in effect: the window that holds it now, and the first instant no window of a
   * region serving the model holds it (windows that overlap or follow each other without a
   * gap count as one freeze).
   */
  readonly active?: { readonly name: string; readonly until: Date };
  /** With no freeze in effect: when the next one starts (within a week), if any. */
  readonly nextStart?: Date;
}

/** Overlapping or back-to-back windows chained into one freeze: at most this many links. */
const CHAIN_LIMIT = 64;

/** The freeze state of model `modelName` at `now`. Pure (the clock is an argument). */
export function computeFreeze(regions: readonly StoreRegion[], modelName: string, now: Date): FreezeState {
  const serving = servingRegions(regions, modelName);
  const t = now.getTime();
  const active = activeWindows(serving, t);
  if (active.length > 0) {
    let until = Math.max(...active.map((a) => a.end));
    for (let i = 0; i < CHAIN_LIMIT; i++) {
      const next = activeWindows(serving, until);
      if (next.length === 0) break;
      until = Math.max(...next.map((a) => a.end));
    }
    return { active: { name: active[0]!.name, until: new Date(until) } };
  }
  let nextStart: number | undefined;
  for (const r of serving) {
    const tz = r.spec.timezone;
    const w = wallOf(t, tz);
    for (const fw of r.spec.freezeWindows ?? []) {
      const days = fw.days?.length ? fw.days : DAYS;
      for (let k = 0; k <= 7; k++) {
        const wall = wallAt(w, fw.start, k);
        if (!(days as readonly string[]).includes(DAYS[new Date(wall).getUTCDay()]!)) continue;
        const s = instantOfWall(wall, tz, t + k * 86_400_000);
        if (s > t) {
          if (nextStart === undefined || s < nextStart) nextStart = s;
          break;
        }
      }
    }
  }
  return nextStart !== undefined ? { nextStart: new Date(nextStart) } : {};
}
