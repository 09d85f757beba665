import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SCHEDULE_OPTIONS,
  RegionSchedule,
  ScheduleSpecError,
  computeModelFloor,
  computeRegionBases,
  type ScheduleOptions,
  type ScheduleSpec,
} from './schedule.js';

const LA = 'America/Los_Angeles';
const EVERY_DAY = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
/** No lead, no step-down: the windows' own instants. */
const EXACT: ScheduleOptions = { leadMs: 0, stepDownMs: 0, stepDownSteps: 1 };
const at = (iso: string) => Date.parse(iso);

function floors(spec: ScheduleSpec, opts: ScheduleOptions, table: ReadonlyArray<[string, number]>) {
  const s = new RegionSchedule(spec, opts);
  return table.map(([t]) => [t, s.floorAt(at(t)).floor]);
}

/**
 * Walks a movable clock minute by minute from `from` to `to`: at every minute the floor must
 * equal what the last nextChange() promised, and nextChange() must name exactly the first minute
 * where the floor differs (the controller sleeps until then and nothing in between).
 */
function walk(s: RegionSchedule, from: string, to: string) {
  const state = (t: number) => {
    const f = s.floorAt(t);
    return { floor: f.floor, key: `${f.floor}|${f.exact.toFixed(9)}|${f.active.join(',')}` };
  };
  let t = at(from);
  let promised = s.nextChange(t);
  let last = state(t);
  const changes: Array<[string, number]> = [];
  for (t += 60_000; t <= at(to); t += 60_000) {
    const now = state(t);
    if (now.key !== last.key) {
      expect(promised?.at.getTime(), `change at ${new Date(t).toISOString()} not announced`).toBe(t);
      expect(promised?.floor).toBe(now.floor);
      if (now.floor !== last.floor) changes.push([new Date(t).toISOString(), now.floor]);
      last = now;
      promised = s.nextChange(t);
    } else if (promised) {
      expect(
        promised.at.getTime(),
        `announced change at ${promised.at.toISOString()} did not happen`,
      ).not.toBe(t);
    }
  }
  return changes;
}

describe('RegionSchedule: peak windows in the region’s own time', () => {
  it('a 07:00-09:00 window is at 15:00Z in winter and 14:00Z in summer (LA)', () => {
    const spec = {
      timezone: LA,
      baseReplicas: 2,
      peakWindows: [{ days: EVERY_DAY, start: '07:00', end: '09:00', multiplier: 3 }],
    };
    const table: Array<[string, number]> = [
      ['2026-03-07T14:59:00Z', 2], // Saturday before spring forward: PST
      ['2026-03-07T15:00:00Z', 6],
      ['2026-03-07T16:59:00Z', 6],
      ['2026-03-07T17:00:00Z', 2],
      ['2026-03-08T13:59:00Z', 2], // spring-forward day: PDT from 02:00
      ['2026-03-08T14:00:00Z', 6],
      ['2026-03-08T15:59:00Z', 6],
      ['2026-03-08T16:00:00Z', 2],
      ['2026-11-01T14:00:00Z', 2], // fall-back day: PST from 02:00
      ['2026-11-01T15:00:00Z', 6],
      ['2026-11-01T17:00:00Z', 2],
    ];
    expect(floors(spec, EXACT, table)).toEqual(table);
  });

  it('spring forward: 02:30 does not exist, so a window 01:30-02:30 ends at 03:30 PDT (Temporal "compatible")', () => {
    const spec = {
      timezone: LA,
      baseReplicas: 1,
      peakWindows: [{ days: ['Sun'], start: '01:30', end: '02:30', multiplier: 4 }],
    };
    const table: Array<[string, number]> = [
      ['2026-03-08T09:29:00Z', 1],
      ['2026-03-08T09:30:00Z', 4], // 01:30 PST
      ['2026-03-08T10:29:00Z', 4], // 03:29 PDT
      ['2026-03-08T10:30:00Z', 1], // 03:30 PDT
    ];
    expect(floors(spec, EXACT, table)).toEqual(table);
  });

  it('fall back: a window 01:00-02:00 covers both 01:xx hours (two real hours)', () => {
    const spec = {
      timezone: LA,
      baseReplicas: 1,
      peakWindows: [{ days: ['Sun'], start: '01:00', end: '02:00', multiplier: 2 }],
    };
    const table: Array<[string, number]> = [
      ['2026-11-01T07:59:00Z', 1],
      ['2026-11-01T08:00:00Z', 2], // 01:00 PDT (first 01:00)
      ['2026-11-01T09:30:00Z', 2], // 01:30 PST (second 01:30)
      ['2026-11-01T10:00:00Z', 1], // 02:00 PST
    ];
    expect(floors(spec, EXACT, table)).toEqual(table);
  });

  it('00:00-24:00 lasts 23 hours on spring-forward day and 25 on fall-back day', () => {
    const spec = (day: string) => ({
      timezone: LA,
      baseReplicas: 1,
      peakWindows: [{ days: [day], start: '00:00', end: '24:00', multiplier: 2 }],
    });
    const spring = new RegionSchedule(spec('Sun'), EXACT);
    expect(spring.floorAt(at('2026-03-08T07:59:00Z')).floor).toBe(1);
    expect(spring.floorAt(at('2026-03-08T08:00:00Z')).floor).toBe(2); // 00:00 PST
    expect(spring.nextChange(at('2026-03-08T08:00:00Z'))?.at.toISOString()).toBe('2026-03-09T07:00:00.000Z');
    const fall = new RegionSchedule(spec('Sun'), EXACT);
    expect(fall.floorAt(at('2026-11-01T07:00:00Z')).floor).toBe(2); // 00:00 PDT
    expect(fall.nextChange(at('2026-11-01T07:00:00Z'))?.at.toISOString()).toBe('2026-11-02T08:00:00.000Z');
  });

  it('a window ending at 24:00 and the next day’s 00:00 window make one continuous night (no dip at midnight)', () => {
    const s = new RegionSchedule(
      {
        timezone: LA,
        baseReplicas: 2,
        peakWindows: [
          { days: ['Sat'], start: '22:00', end: '24:00', multiplier: 2 },
          { days: ['Sun'], start: '00:00', end: '02:00', multiplier: 2 },
        ],
      },
      DEFAULT_SCHEDULE_OPTIONS,
    );
    // Saturday Oct 31 22:00 PDT → Sunday Nov 1 02:00 PST (fall-back night: 5 real hours).
    const changes = walk(s, '2026-11-01T04:00:00Z', '2026-11-01T12:00:00Z');
    expect(changes).toEqual([
      ['2026-11-01T04:58:00.000Z', 4], // lead: 2 minutes before 22:00 PDT
      ['2026-11-01T10:10:00.000Z', 3], // 02:00 PST = 10:00Z, full level held for the first 5 min
      ['2026-11-01T10:15:00.000Z', 2],
    ]);
  });

  it('with the default lead and step-down, the movable clock sees every change announced, across both DST days', () => {
    const spec: ScheduleSpec = {
      timezone: LA,
      baseReplicas: 3,
      maxReplicas: 40,
      peakWindows: [
        { days: EVERY_DAY, start: '06:30', end: '09:30', multiplier: 3 },
        { days: ['Sat', 'Sun'], start: '01:00', end: '03:00', multiplier: 1.5 },
        { days: EVERY_DAY, start: '14:00', end: '16:00', multiplier: 2 },
      ],
      promotions: [
        {
          name: 'bogo',
          start: '2026-03-08T08:00:00-07:00',
          end: '2026-03-08T11:00:00-07:00',
          multiplier: 10,
        },
        {
          name: 'bogo2',
          start: '2026-11-01T00:30:00-07:00',
          end: '2026-11-01T01:30:00-08:00',
          multiplier: 2,
        },
      ],
    };
    const s = new RegionSchedule(spec, DEFAULT_SCHEDULE_OPTIONS);
    const spring = walk(s, '2026-03-07T08:00:00Z', '2026-03-09T08:00:00Z');
    const fall = walk(s, '2026-10-31T07:00:00Z', '2026-11-02T09:00:00Z');
    expect(spring.length).toBeGreaterThan(10);
    expect(fall.length).toBeGreaterThan(10);
    // The 10x promotion on top of the 3x rush asks 90, clamped at the region's 40.
    expect(s.floorAt(at('2026-03-08T15:30:00Z'))).toMatchObject({ demand: 90, floor: 40, clamped: true });
  });
});

describe('RegionSchedule: lead time and step-down', () => {
  const spec: ScheduleSpec = {
    timezone: 'UTC',
    baseReplicas: 2,
    peakWindows: [{ days: EVERY_DAY, start: '08:00', end: '09:00', multiplier: 4 }],
  };
  const opts: ScheduleOptions = { leadMs: 120_000, stepDownMs: 15 * 60_000, stepDownSteps: 3 };
  it.each([
    ['2026-06-01T07:57:59Z', 2, []],
    ['2026-06-01T07:58:00Z', 8, ['peak 08:00-09:00 x4 (lead)']],
    ['2026-06-01T08:30:00Z', 8, ['peak 08:00-09:00 x4']],
    ['2026-06-01T09:04:59Z', 8, ['peak 08:00-09:00 x4 (stepping down)']], // held for the first step
    ['2026-06-01T09:05:00Z', 6, ['peak 08:00-09:00 x4 (stepping down)']],
    ['2026-06-01T09:10:00Z', 4, ['peak 08:00-09:00 x4 (stepping down)']],
    ['2026-06-01T09:15:00Z', 2, []],
  ] as const)('at %s the floor is %i', (t, floor, active) => {
    const f = new RegionSchedule(spec, opts).floorAt(at(t));
    expect(f.floor).toBe(floor);
    expect(f.active).toEqual(active);
  });
});

describe('RegionSchedule: promotions', () => {
  const base: ScheduleSpec = {
    timezone: LA,
    baseReplicas: 2,
    peakWindows: [{ days: EVERY_DAY, start: '07:00', end: '09:00', multiplier: 3 }],
  };
  it('a promotion during a peak multiplies it; overlapping promotions take the larger multiplier', () => {
    const s = new RegionSchedule(
      {
        ...base,
        promotions: [
          {
            name: 'ten',
            start: '2026-06-01T08:00:00-07:00',
            end: '2026-06-01T12:00:00-07:00',
            multiplier: 10,
          },
          {
            name: 'five',
            start: '2026-06-01T07:30:00-07:00',
            end: '2026-06-01T10:00:00-07:00',
            multiplier: 5,
          },
        ],
      },
      EXACT,
    );
    const table: Array<[string, number, string[]]> = [
      ['2026-06-01T13:59:00Z', 2, []],
      ['2026-06-01T14:00:00Z', 6, []], // 07:00 PDT peak
      ['2026-06-01T14:30:00Z', 30, ['five']], // 3 × 5
      ['2026-06-01T15:00:00Z', 60, ['ten', 'five']], // 3 × max(10, 5)
      ['2026-06-01T16:00:00Z', 20, ['ten', 'five']], // peak over: 2 × 10
      ['2026-06-01T17:00:00Z', 20, ['ten']],
      ['2026-06-01T19:00:00Z', 2, []],
    ];
    expect(
      table.map(([t]) => {
        const f = s.floorAt(at(t));
        return [t, f.floor, f.activePromotions];
      }),
    ).toEqual(table);
    expect(s.nextChange(at('2026-06-01T17:00:00Z'))).toEqual({
      at: new Date('2026-06-01T19:00:00Z'),
      floor: 2,
    });
  });

  it('a promotion months ahead is still the next change', () => {
    const s = new RegionSchedule(
      {
        timezone: 'UTC',
        baseReplicas: 2,
        promotions: [
          { name: 'xmas', start: '2026-12-24T00:00:00Z', end: '2026-12-25T00:00:00Z', multiplier: 2 },
        ],
      },
      DEFAULT_SCHEDULE_OPTIONS,
    );
    expect(s.nextChange(at('2026-06-01T00:00:00Z'))).toEqual({
      at: new Date('2026-12-23T23:58:00Z'),
      floor: 4,
    });
    expect(s.nextChange(at('2026-12-26T00:00:00Z'))).toBeUndefined();
  });

  it('fractional multipliers round up, exact products do not', () => {
    const f = (m: number, b: number) =>
      new RegionSchedule(
        {
          timezone: 'UTC',
          baseReplicas: b,
          peakWindows: [{ days: EVERY_DAY, start: '00:00', end: '24:00', multiplier: m }],
        },
        EXACT,
      ).floorAt(at('2026-06-01T12:00:00Z')).floor;
    expect(f(1.5, 2)).toBe(3);
    expect(f(1.1, 3)).toBe(4);
    expect(f(1.25, 3)).toBe(4);
  });
});

describe('RegionSchedule: bad input names the field', () => {
  it.each([
    [{ timezone: 'Mars/Olympus' }, 'spec.timezone'],
    [{ peakWindows: [{ days: ['Mon'], start: '09:00', end: '08:00' }] }, 'spec.peakWindows[0].end'],
    [{ peakWindows: [{ days: ['Mon'], start: '24:00', end: '24:00' }] }, 'spec.peakWindows[0].start'],
    [{ peakWindows: [{ days: ['Mon'], start: '08:00', end: '24:30' }] }, 'spec.peakWindows[0].end'],
    [
      { peakWindows: [{ days: ['Mon', 'Fun'], start: '08:00', end: '09:00' }] },
      'spec.peakWindows[0].days[1]',
    ],
    [{ promotions: [{ name: 'p', start: 'soon', end: '2026-01-01T00:00:00Z' }] }, 'spec.promotions[0].start'],
  ])('%j → %s', (patch, field) => {
    const make = () => new RegionSchedule({ timezone: 'UTC', baseReplicas: 1, ...patch } as ScheduleSpec);
    expect(make).toThrow(ScheduleSpecError);
    try {
      make();
    } catch (err) {
      expect((err as ScheduleSpecError).field).toBe(field);
    }
  });
});

describe('computeModelFloor: regions sharing one model', () => {
  it.each([
    [[], 2, 10, { floor: 2, sum: 0, clamped: false }],
    [[1, 1], 2, 10, { floor: 2, sum: 2, clamped: false }], // never below the model's own minimum
    [[3, 4], 2, 10, { floor: 7, sum: 7, clamped: false }], // disjoint stores: demands add up
    [[8, 4], 2, 10, { floor: 10, sum: 12, clamped: true }], // the HPA refuses min > max
    [[0.75, 0.75, 0.75, 0.75], 2, 10, { floor: 3, sum: 3, clamped: false }], // rounded once, not 4 × 1
    [[2.5, 0.25], 2, 10, { floor: 3, sum: 2.75, clamped: false }],
  ])('%j with model %i..%i', (demands, min, max, want) => {
    expect(computeModelFloor(demands, { minReplicas: min, maxReplicas: max })).toEqual(want);
  });
});

describe('computeRegionBases: a region without minReplicas has its share of the model minimum', () => {
  it.each([
    ['8 equal regions share a minimum of 2', [10, 10, 10, 10, 10, 10, 10, 10], [], 2, Array(8).fill(0.25)],
    ['shares follow store counts', [300, 100], [], 2, [1.5, 0.5]],
    ['an explicit minReplicas is kept; the others share by all stores', [100, 100], [3], 2, [3, 1]],
    ['no stores counted: equal shares', [0, 0], [], 3, [1.5, 1.5]],
  ])('%s', (_name, stores, explicit, min, want) => {
    const bases = computeRegionBases(
      stores.map((n, i) => ({
        key: `r${i}`,
        stores: n,
        ...(explicit[i] !== undefined ? { minReplicas: explicit[i] } : {}),
      })),
      min,
    );
    expect([...bases.values()]).toEqual(want);
  });

  it('baseReplicas (quiet-hour demand, a fraction is fine) wins over minReplicas and the share', () => {
    const bases = computeRegionBases(
      [
        { key: 'a', stores: 100, baseReplicas: 0.4, minReplicas: 3 },
        { key: 'b', stores: 100, baseReplicas: 0 },
        { key: 'c', stores: 100 },
      ],
      2,
    );
    // c shares the minimum by all stores (a third of 2); a and b say their own demand.
    expect([...bases.values()]).toEqual([0.4, 0, 2 / 3]);
  });
});

describe('load-anchored bases: floors follow demand, not the minimum', () => {
  /** A LA region's exact demand at 07:30 PDT (in its 3x rush), with a 10x promotion or not. */
  const inRush = (base: number, promo: boolean) =>
    new RegionSchedule(
      {
        timezone: LA,
        baseReplicas: base,
        peakWindows: [{ days: EVERY_DAY, start: '07:00', end: '09:00', multiplier: 3 }],
        promotions: promo
          ? [{ name: 'bogo', start: '2026-06-01T14:00:00Z', end: '2026-06-01T15:00:00Z', multiplier: 10 }]
          : [],
      },
      EXACT,
    ).floorAt(at('2026-06-01T14:30:00Z')).exact;
  const model = { minReplicas: 2, maxReplicas: 200 };

  it('8 regions needing 0.1 pods at quiet hours: the 3x rush needs 2.4 → 3 pods, not 3 × the 2-pod minimum', () => {
    const demands = Array.from({ length: 8 }, () => inRush(0.1, false));
    expect(demands[0]).toBeCloseTo(0.3, 12);
    expect(computeModelFloor(demands, model).floor).toBe(3);
    // Shares of the minimum instead (0.25 each) would ask 8 × 0.75 = 6.
    expect(
      computeModelFloor(
        Array.from({ length: 8 }, () => inRush(0.25, false)),
        model,
      ).floor,
    ).toBe(6);
  });

  it('one of them also in a 10x promotion adds its 10x: 7 × 0.3 + 0.1 × 3 × 10 = 5.1 → 6', () => {
    const demands = Array.from({ length: 8 }, (_, i) => inRush(0.1, i === 0));
    expect(computeModelFloor(demands, model).floor).toBe(6);
  });

  it("a region's own minReplicas stays its floor when baseReplicas is set: max(3, 0.4 × 3) = 3, in a 10x promotion 12", () => {
    const region = (promo: boolean) =>
      new RegionSchedule(
        {
          timezone: LA,
          baseReplicas: 0.4,
          minReplicas: 3,
          peakWindows: [{ days: EVERY_DAY, start: '07:00', end: '09:00', multiplier: 3 }],
          promotions: promo
            ? [{ name: 'bogo', start: '2026-06-01T14:00:00Z', end: '2026-06-01T15:00:00Z', multiplier: 10 }]
            : [],
        },
        EXACT,
      ).floorAt(at('2026-06-01T14:30:00Z'));
    expect(region(false)).toMatchObject({ floor: 3, exact: 3 });
    expect(region(true).exact).toBeCloseTo(12, 12);
    expect(region(true).floor).toBe(12);
  });

  it('quiet hours: demand under the minimum keeps the minimum', () => {
    const quiet = new RegionSchedule({ timezone: LA, baseReplicas: 0.1 }, EXACT).floorAt(
      at('2026-06-01T18:00:00Z'),
    ).exact;
    expect(computeModelFloor(Array(8).fill(quiet), model).floor).toBe(2);
  });
});
describe('regions sharing one model: the HPA floor', () => {
  const PROMO = {
    name: 'bogo',
    start: '2026-06-01T19:00:00Z',
    end: '2026-06-01T20:00:00Z',
    multiplier: 10,
  };
  /** The model floor of 8 LA regions of 25 stores on a 2..200 model; region 0 may run `promo`. */
  function modelFloor(iso: string, opts: { promo?: boolean; peak?: number; mins?: number[] } = {}) {
    const regions = Array.from({ length: 8 }, (_, i) => ({
      key: `r${i}`,
      stores: 25,
      ...(opts.mins?.[i] !== undefined ? { minReplicas: opts.mins[i] } : {}),
    }));
    const bases = computeRegionBases(regions, 2);
    const demands = regions.map((r, i) =>
      new RegionSchedule(
        {
          timezone: LA,
          baseReplicas: bases.get(r.key)!,
          peakWindows: opts.peak
            ? [{ days: EVERY_DAY, start: '07:00', end: '09:00', multiplier: opts.peak }]
            : [],
          promotions: opts.promo && i === 0 ? [PROMO] : [],
        },
        EXACT,
      ).floorAt(at(iso)),
    );
    return {
      model: computeModelFloor(
        demands.map((d) => d.exact),
        { minReplicas: 2, maxReplicas: 200 },
      ).floor,
      regions: demands.map((d) => d.floor),
    };
  }

  it('8 regions without a peak: the model minimum (2), not 8 × 2', () => {
    expect(modelFloor('2026-06-01T18:00:00Z').model).toBe(2);
  });

  it("one region in a 10x promotion raises the floor by its share's extra need: 2 + 0.25 × 9 → 5", () => {
    const { model, regions } = modelFloor('2026-06-01T19:30:00Z', { promo: true });
    expect(model).toBe(5); // ceil(2 + 0.25 × (10 − 1)) = ceil(4.25)
    expect(regions).toEqual([3, 1, 1, 1, 1, 1, 1, 1]); // its own floor in whole pods: ceil(2.5)
    // Outside the promotion it is back to the minimum.
    expect(modelFloor('2026-06-01T21:00:00Z', { promo: true }).model).toBe(2);
  });

  it('all 8 in a 3x rush: 3 × the minimum; with the promotion on top, that region adds 0.75 × 9', () => {
    expect(modelFloor('2026-06-01T14:30:00Z', { peak: 3 }).model).toBe(6);
    // A promotion in the rush multiplies (ADR 0013): 7 × 0.75 + 0.25 × 3 × 10 = 12.75 → 13.
    const promoInRush = { ...PROMO, start: '2026-06-01T14:00:00Z', end: '2026-06-01T15:00:00Z' };
    const regions = Array.from(
      { length: 8 },
      (_, i) =>
        new RegionSchedule(
          {
            timezone: LA,
            baseReplicas: 0.25,
            peakWindows: [{ days: EVERY_DAY, start: '07:00', end: '09:00', multiplier: 3 }],
            promotions: i === 0 ? [promoInRush] : [],
          },
          EXACT,
        ).floorAt(at('2026-06-01T14:30:00Z')).exact,
    );
    expect(computeModelFloor(regions, { minReplicas: 2, maxReplicas: 200 }).floor).toBe(13);
  });

  it('regions that set minReplicas keep it; the others still share the minimum', () => {
    // Region 0 asks 4 of its own; the 7 others share 2 × 175/200 = 1.75; total 5.75 → 6.
    expect(modelFloor('2026-06-01T18:00:00Z', { mins: [4] }).model).toBe(6);
  });
});
