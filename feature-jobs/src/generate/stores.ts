/** Stores, regions and weather of the synthetic world. */
import type { StoreInfo } from '../../../contracts/features.js';
import { Rng, mixSeed } from '../common/rng.js';

/** Regions with their IANA timezone and climate (mean °C, seasonal swing, rain probability). */
export const REGIONS = [
  { name: 'northeast', timezone: 'America/New_York', meanC: 11, swingC: 13, rain: 0.3, share: 0.17 },
  { name: 'southeast', timezone: 'America/New_York', meanC: 20, swingC: 8, rain: 0.3, share: 0.15 },
  { name: 'midwest', timezone: 'America/Chicago', meanC: 10, swingC: 15, rain: 0.28, share: 0.14 },
  { name: 'texas', timezone: 'America/Chicago', meanC: 21, swingC: 9, rain: 0.18, share: 0.13 },
  { name: 'mountain', timezone: 'America/Denver', meanC: 9, swingC: 13, rain: 0.15, share: 0.08 },
  { name: 'southwest', timezone: 'America/Phoenix', meanC: 23, swingC: 10, rain: 0.06, share: 0.09 },
  {
    name: 'pacific-northwest',
    timezone: 'America/Los_Angeles',
    meanC: 11,
    swingC: 8,
    rain: 0.42,
    share: 0.09,
  },
  { name: 'california', timezone: 'America/Los_Angeles', meanC: 17, swingC: 6, rain: 0.1, share: 0.15 },
] as const;

/** A store with the generator-only fields serving does not need. */
export interface GenStore extends StoreInfo {
  readonly regionIndex: number;
}

/**
 * Builds `count` stores spread over REGIONS. Capacity (drinks/hour) is sized against the
 * expected peak hour of the store so some stores queue at the rush and others never do.
 */
export function buildStores(
  seed: number,
  count: number,
  ordersPerDay: number,
  drinkIds: readonly string[],
): GenStore[] {
  const rng = new Rng(mixSeed(seed, 2));
  const perStorePeakHour = (ordersPerDay / count) * 0.12;
  const stores: GenStore[] = [];
  for (let i = 0; i < count; i++) {
    const regionIndex = rng.weighted(REGIONS.map((r) => r.share));
    const region = REGIONS[regionIndex]!;
    const unavailable: string[] = [];
    const n = rng.int(4);
    for (let k = 0; k < n; k++) {
      const id = drinkIds[rng.int(drinkIds.length)]!;
      if (!unavailable.includes(id)) unavailable.push(id);
    }
    stores.push({
      id: `s${String(i).padStart(4, '0')}`,
      region: region.name,
      regionIndex,
      timezone: region.timezone,
      capacityPerHour: Math.max(20, Math.round(perStorePeakHour * rng.range(0.8, 1.5))),
      unavailable: unavailable.sort(),
    });
  }
  return stores;
}

/** Weather per region and day: temperature (°C) and a rain flag. */
export interface Weather {
  readonly regions: readonly string[];
  readonly days: readonly string[];
  /** tempC[day][region] */
  readonly tempC: readonly (readonly number[])[];
  readonly rain: readonly (readonly number[])[];
}

/** Seasonal temperature curve plus day-to-day noise, deterministic per (seed, date). */
export function buildWeather(seed: number, days: readonly string[]): Weather {
  const tempC: number[][] = [];
  const rain: number[][] = [];
  for (const day of days) {
    const d = new Date(`${day}T00:00:00Z`);
    const doy = Math.floor((d.getTime() - Date.UTC(d.getUTCFullYear(), 0, 1)) / 86_400_000);
    const rng = new Rng(mixSeed(seed, 3, Math.floor(d.getTime() / 86_400_000)));
    tempC.push(
      REGIONS.map(
        (r) =>
          Math.round(
            (r.meanC + r.swingC * Math.sin((2 * Math.PI * (doy - 110)) / 365) + 3.5 * rng.normal()) * 10,
          ) / 10,
      ),
    );
    rain.push(REGIONS.map((r) => (rng.next() < r.rain ? 1 : 0)));
  }
  return { regions: REGIONS.map((r) => r.name), days, tempC, rain };
}

/** Offset of a timezone from UTC in minutes at the given instant (DST aware, via Intl). */
export function tzOffsetMinutes(timezone: string, at: Date): number {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: timezone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
  }).formatToParts(at);
  const get = (t: string) => Number(parts.find((p) => p.type === t)?.value);
  const local = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'));
  return Math.round((local - Math.floor(at.getTime() / 60_000) * 60_000) / 60_000);
}
