/**
 * StoreRegion freeze windows: no canary is promoted to stable while a region that serves the
 * model is in one (e.g. the morning rush). Pure, evaluated in the region's own time zone.
 */
import type { StoreRegion } from '../api/v1alpha1/index.js';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;

/** Weekday ("Mon") and "HH:MM" of `now` in `timeZone`. */
export function localClock(now: Date, timeZone: string): { day: string; hhmm: string } {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone,
    weekday: 'short',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(now);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
  return { day: get('weekday').slice(0, 3), hhmm: `${get('hour')}:${get('minute')}` };
}

/** The first active freeze window among the regions serving `modelName`, or undefined. */
export function activeFreezeWindow(
  regions: readonly StoreRegion[],
  modelName: string,
  now: Date,
): { name: string } | undefined {
  for (const r of regions) {
    if (r.spec.serving?.modelRef !== modelName) continue;
    let clock: { day: string; hhmm: string };
    try {
      clock = localClock(now, r.spec.timezone);
    } catch {
      continue; // an unknown time zone cannot be evaluated; the region's own status reports it
    }
    for (const [i, w] of (r.spec.freezeWindows ?? []).entries()) {
      const days = w.days?.length ? w.days : DAYS;
      if (!(days as readonly string[]).includes(clock.day)) continue;
      if (clock.hhmm >= w.start && clock.hhmm < w.end) {
        return { name: `${r.metadata?.name}/freezeWindows[${i}] ${w.start}-${w.end} ${r.spec.timezone}` };
      }
    }
  }
  return undefined;
}
