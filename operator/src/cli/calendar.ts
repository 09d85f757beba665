/**
 * What a StoreRegion has scheduled in the next 24 hours, in the region's own time: peak windows,
 * promotions and freeze windows (pure). This is a calendar, not the floor arithmetic: the floor a
 * window causes (lead time, step-down, how peaks and promotions combine) is the StoreRegion
 * controller's decision and is read from its status, never recomputed here.
 */
import type { StoreRegionSpec } from '../api/v1alpha1/index.js';

export interface CalendarEntry {
  readonly kind: 'peak' | 'promotion' | 'freeze';
  readonly name?: string;
  readonly start: Date;
  readonly end: Date;
  /** "Tue 06:00" in the region's timezone. */
  readonly startLocal: string;
  readonly endLocal: string;
  readonly multiplier?: number;
  /** In effect at `now`. */
  readonly active: boolean;
}

export interface RegionCalendar {
  /** "Tue 07:42" in the region's timezone (absent when the timezone is unknown). */
  readonly localNow?: string;
  readonly entries: readonly CalendarEntry[];
  /** Why there is no calendar (an unknown timezone). */
  readonly error?: string;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
const DAY_MS = 86_400_000;

interface Wall {
  y: number;
  mo: number;
  d: number;
  h: number;
  mi: number;
  wd: string;
}

function wallClock(fmt: Intl.DateTimeFormat, t: number): Wall {
  const p = Object.fromEntries(fmt.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  return {
    y: Number(p['year']),
    mo: Number(p['month']),
    d: Number(p['day']),
    h: Number(p['hour']) % 24,
    mi: Number(p['minute']),
    wd: p['weekday'] ?? '',
  };
}

/** The zone's offset from UTC at instant t, in ms. */
function offsetAt(fmt: Intl.DateTimeFormat, t: number): number {
  const w = wallClock(fmt, t);
  return Date.UTC(w.y, w.mo - 1, w.d, w.h, w.mi) - Math.floor(t / 60_000) * 60_000;
}

/** The instant a wall-clock time happens in the zone (on a DST gap, just after it). */
function wallToInstant(fmt: Intl.DateTimeFormat, y: number, mo: number, d: number, hhmm: string): number {
  const [h, mi] = hhmm.split(':').map(Number) as [number, number];
  const guess = Date.UTC(y, mo - 1, d, h, mi);
  const first = guess - offsetAt(fmt, guess);
  return guess - offsetAt(fmt, first);
}

const hhmm = (w: Wall) => `${String(w.h).padStart(2, '0')}:${String(w.mi).padStart(2, '0')}`;

/** The region's scheduled windows overlapping [now, now + 24 h), by start time. */
export function regionCalendar(spec: StoreRegionSpec, now: Date): RegionCalendar {
  let fmt: Intl.DateTimeFormat;
  try {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone: spec.timezone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      weekday: 'short',
    });
  } catch {
    return {
      entries: [],
      error: `timezone ${JSON.stringify(spec.timezone)} is unknown: nothing can be scheduled`,
    };
  }
  const t0 = now.getTime();
  const t1 = t0 + DAY_MS;
  const local = (t: number) => {
    const w = wallClock(fmt, t);
    return `${w.wd} ${hhmm(w)}`;
  };
  const entries: CalendarEntry[] = [];
  const add = (
    kind: CalendarEntry['kind'],
    start: number,
    end: number,
    extra: { name?: string; multiplier?: number },
  ) => {
    if (end <= t0 || start >= t1) return;
    entries.push({
      kind,
      ...extra,
      start: new Date(start),
      end: new Date(end),
      startLocal: local(start),
      endLocal: local(end),
      active: start <= t0 && t0 < end,
    });
  };
  // Recurring windows: today and tomorrow of the region's calendar cover the next 24 h.
  const today = wallClock(fmt, t0);
  for (let k = 0; k <= 1; k++) {
    const date = new Date(Date.UTC(today.y, today.mo - 1, today.d + k));
    const [y, mo, d] = [date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate()];
    const day = DAYS[date.getUTCDay()]!;
    for (const w of spec.peakWindows ?? [])
      if (w.days.includes(day))
        add('peak', wallToInstant(fmt, y, mo, d, w.start), wallToInstant(fmt, y, mo, d, w.end), {
          multiplier: w.multiplier ?? 1,
        });
    for (const w of spec.freezeWindows ?? [])
      if (w.days.includes(day))
        add('freeze', wallToInstant(fmt, y, mo, d, w.start), wallToInstant(fmt, y, mo, d, w.end), {});
  }
  for (const p of spec.promotions ?? []) {
    const start = Date.parse(p.start);
    const end = Date.parse(p.end);
    if (!Number.isNaN(start) && !Number.isNaN(end))
      add('promotion', start, end, { name: p.name, multiplier: p.multiplier ?? 1 });
  }
  entries.sort((a, b) => a.start.getTime() - b.start.getTime() || a.kind.localeCompare(b.kind));
  return { localNow: local(t0), entries };
}
