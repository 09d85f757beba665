import { describe, expect, it } from 'vitest';
import type { StoreRegion } from '../api/v1alpha1/index.js';
import { computeFreeze, instantOfWall } from './freeze.js';

const ALL = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'] as const;
function region(
  name: string,
  timezone: string,
  freezeWindows: { start: string; end: string; days?: readonly string[] }[],
  modelRef = 'drinks',
): StoreRegion {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'StoreRegion',
    metadata: { name, namespace: 'ns' },
    spec: {
      stores: ['s1'],
      timezone,
      serving: { modelRef },
      freezeWindows: freezeWindows.map((w) => ({ days: [...(w.days ?? ALL)], ...w })) as never,
    },
  } as StoreRegion;
}
const iso = (d: Date | undefined) => d?.toISOString();

describe('computeFreeze', () => {
  it.each([
    // [case, region tz, window, now (UTC), frozen until | undefined, next start | undefined]
    [
      'inside a window (UTC)',
      'UTC',
      { start: '07:00', end: '10:00' },
      '2026-11-24T08:15:00Z',
      '2026-11-24T10:00:00.000Z',
      undefined,
    ],
    [
      'before a window: next start today',
      'UTC',
      { start: '07:00', end: '10:00' },
      '2026-11-24T06:00:00Z',
      undefined,
      '2026-11-24T07:00:00.000Z',
    ],
    [
      'after a window: next start tomorrow',
      'UTC',
      { start: '07:00', end: '10:00' },
      '2026-11-24T10:00:00Z',
      undefined,
      '2026-11-25T07:00:00.000Z',
    ],
    [
      'Los Angeles in winter (UTC-8)',
      'America/Los_Angeles',
      { start: '06:00', end: '09:00' },
      '2026-11-24T15:00:00Z',
      '2026-11-24T17:00:00.000Z',
      undefined,
    ],
    [
      'Los Angeles in summer (UTC-7)',
      'America/Los_Angeles',
      { start: '06:00', end: '09:00' },
      '2026-07-01T14:00:00Z',
      '2026-07-01T16:00:00.000Z',
      undefined,
    ],
    // 2026-03-08: 02:00 PST jumps to 03:00 PDT. A window 01:00-02:30 ends when the clock jumps.
    [
      'spring forward: the end falls in the skipped hour',
      'America/Los_Angeles',
      { start: '01:00', end: '02:30' },
      '2026-03-08T09:30:00Z',
      '2026-03-08T10:00:00.000Z',
      undefined,
    ],
    [
      'spring forward: a window across the jump is an hour shorter',
      'America/Los_Angeles',
      { start: '00:00', end: '05:00' },
      '2026-03-08T08:30:00Z',
      '2026-03-08T12:00:00.000Z',
      undefined,
    ],
    // 2026-11-01: 02:00 PDT falls back to 01:00 PST; 00:00-03:00 lasts four hours.
    [
      'fall back: a window across the repeat is an hour longer',
      'America/Los_Angeles',
      { start: '00:00', end: '03:00' },
      '2026-11-01T07:30:00Z',
      '2026-11-01T11:00:00.000Z',
      undefined,
    ],
    [
      'Mon only, asked on Sunday: starts Monday',
      'UTC',
      { start: '07:00', end: '10:00', days: ['Mon'] },
      '2026-11-22T12:00:00Z',
      undefined,
      '2026-11-23T07:00:00.000Z',
    ],
    [
      'a window ending at 23:59',
      'Europe/Berlin',
      { start: '20:00', end: '23:59' },
      '2026-11-24T20:00:00Z',
      '2026-11-24T22:59:00.000Z',
      undefined,
    ],
  ] as const)('%s', (_, tz, w, now, until, next) => {
    const f = computeFreeze([region('r', tz, [w])], 'drinks', new Date(now));
    expect(iso(f.active?.until)).toBe(until);
    expect(iso(f.nextStart)).toBe(next);
    if (until) expect(f.active?.name).toBe(`r/freezeWindows[0] ${w.start}-${w.end} ${tz}`);
  });

  it('overlapping and back-to-back windows (across regions) count as one freeze', () => {
    const f = computeFreeze(
      [
        region('a', 'UTC', [{ start: '07:00', end: '09:00' }]),
        region('b', 'UTC', [
          { start: '08:30', end: '10:00' },
          { start: '10:00', end: '11:00' },
        ]),
      ],
      'drinks',
      new Date('2026-11-24T07:30:00Z'),
    );
    expect(iso(f.active?.until)).toBe('2026-11-24T11:00:00.000Z');
  });

  it('ignores regions of other models and regions with an unknown time zone', () => {
    const regions = [
      region('other', 'UTC', [{ start: '00:00', end: '23:59' }], 'pickup'),
      region('mars', 'Mars/Olympus', [{ start: '00:00', end: '23:59' }]),
    ];
    expect(computeFreeze(regions, 'drinks', new Date('2026-11-24T08:00:00Z'))).toEqual({});
  });
});

describe('instantOfWall', () => {
  it('maps a repeated (fall-back) wall time to its first instant', () => {
    // 01:30 on 2026-11-01 in Los Angeles happens at 08:30Z (PDT) and again at 09:30Z (PST).
    const wall = Date.UTC(2026, 10, 1, 1, 30);
    expect(new Date(instantOfWall(wall, 'America/Los_Angeles', Date.UTC(2026, 10, 1))).toISOString()).toBe(
      '2026-11-01T08:30:00.000Z',
    );
  });
});
