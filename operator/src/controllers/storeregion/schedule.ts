/**
 * A StoreRegion's replica floor as a function of time (pure; ADR 0013).
 *
 * floor(t) = ceil(base × P(t) × Q(t)), clamped at the region's maxReplicas, where
 *   - base is the region's spec.serving.baseReplicas, else its minReplicas, or when both are
 *     unset its share of the model's own minimum by stores (computeRegionBases; may be a
 *     fraction of a replica);
 *   - P(t) is the largest multiplier of the peak windows in effect at t (1 when none): a window
 *     is recurring local wall-clock time in the region's IANA timezone;
 *   - Q(t) is the largest multiplier of the promotions in effect at t (1 when none);
 *   - a window or promotion takes effect `leadMs` before it starts (pods must be Ready when the
 *     rush begins) and after it ends steps down in `stepDownSteps` equal steps over
 *     `stepDownMs`, holding the full level for the first step (the tail of a rush).
 *
 * Local times become instants with Intl.DateTimeFormat (no library: Node's ICU has the tz
 * database, and one formatter per region is all it takes). A wall-clock time that does not
 * exist (spring forward) is read the way Temporal's 'compatible' option does, shifted forward
 * by the gap (02:30 → 03:30 PDT); one that exists twice (fall back) is its first occurrence.
 */

/** Day names as in the CRD. */
export const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

export interface PeakWindowSpec {
  readonly days: readonly string[];
  /** Local "HH:MM". */
  readonly start: string;
  /** Local "HH:MM", after start; "24:00" is the end of the day. */
  readonly end: string;
  readonly multiplier?: number;
}

export interface PromotionSpec {
  readonly name: string;
  /** RFC 3339. */
  readonly start: string;
  readonly end: string;
  readonly multiplier?: number;
}

export interface ScheduleSpec {
  readonly timezone: string;
  readonly peakWindows?: readonly PeakWindowSpec[];
  readonly promotions?: readonly PromotionSpec[];
  /** Floor outside windows and promotions (≥ 0; a share of a model's minimum may be a fraction). */
  readonly baseReplicas: number;
  /** The region's own floor at every instant (spec.serving.minReplicas), when set. */
  readonly minReplicas?: number;
  /** The region's ceiling (spec.serving.maxReplicas); none when unset. */
  readonly maxReplicas?: number;
}

export interface ScheduleOptions {
  /** How long before a window or promotion the floor rises, ms. */
  readonly leadMs: number;
  /** How long the step-down after a window or promotion takes, ms (0: drop at once). */
  readonly stepDownMs: number;
  /** In how many equal steps (≥ 1). */
  readonly stepDownSteps: number;
}

/**
 * Default lead time: 2 minutes. Measured on the real node (docs/operator.md): a serving pod is
 * Ready 4.0 s after it is created (model fetched, verified, loaded and warmed), a model 6.8 s
 * after it is created; the HPA notices a new minReplicas at its next sync, up to 15 s later.
 * That is ~22 s; 2 minutes leaves room for an image pull on a cold node and a slower model.
 * It does not cover a new node from a cluster autoscaler: raise it there.
 */
export const DEFAULT_LEAD_MS = 120_000;
/** Default step-down: 15 minutes in 3 steps of 5 (the HPA's own scale-down window is 5 minutes). */
export const DEFAULT_STEP_DOWN_MS = 15 * 60_000;
export const DEFAULT_STEP_DOWN_STEPS = 3;
export const DEFAULT_SCHEDULE_OPTIONS: ScheduleOptions = {
  leadMs: DEFAULT_LEAD_MS,
  stepDownMs: DEFAULT_STEP_DOWN_MS,
  stepDownSteps: DEFAULT_STEP_DOWN_STEPS,
};

/** A spec the schedule cannot be computed from; `field` is its path in the StoreRegion. */
export class ScheduleSpecError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'ScheduleSpecError';
  }
}

/** One window or promotion occurrence, as instants (ms). */
interface Occurrence {
  readonly kind: 'peak' | 'promotion';
  readonly label: string;
  readonly start: number;
  readonly end: number;
  readonly multiplier: number;
}

/** What the floor is at one instant and why. */
export interface FloorAt {
  /** ceil(base × peak × promotion), before the region's ceiling. */
  readonly demand: number;
  /** The floor the region asks for: demand clamped at maxReplicas. */
  readonly floor: number;
  /**
   * base × peak × promotion, clamped at maxReplicas, NOT rounded: what the region adds to its
   * model's floor (computeModelFloor rounds the sum once, so regions' fractions add up).
   */
  readonly exact: number;
  readonly clamped: boolean;
  /** Labels of the windows and promotions in effect (including lead and step-down). */
  readonly active: readonly string[];
  /** Names of the promotions in effect (including lead and step-down). */
  readonly activePromotions: readonly string[];
  readonly peakMultiplier: number;
  readonly promotionMultiplier: number;
}

export interface FloorChange {
  readonly at: Date;
  readonly floor: number;
}

const DAY_MS = 86_400_000;
/** How far ahead nextChange looks for recurring windows (a week, plus a day of slack). */
const LOOKAHEAD_DAYS = 8;

/** A compiled region schedule: parsed once, evaluated at any instant. */
export class RegionSchedule {
  private readonly fmt: Intl.DateTimeFormat;
  private readonly windows: ReadonlyArray<{
    readonly days: ReadonlySet<number>;
    readonly start: number;
    readonly end: number;
    readonly multiplier: number;
    readonly label: string;
  }>;
  private readonly promotions: readonly Occurrence[];
  private readonly byDay = new Map<number, readonly Occurrence[]>();

  constructor(
    readonly spec: ScheduleSpec,
    readonly opts: ScheduleOptions = DEFAULT_SCHEDULE_OPTIONS,
  ) {
    if (!(opts.leadMs >= 0 && opts.leadMs <= DAY_MS)) throw new RangeError('leadMs must be 0 to 24h');
    if (!(opts.stepDownMs >= 0 && opts.stepDownMs <= DAY_MS))
      throw new RangeError('stepDownMs must be 0 to 24h');
    if (!(Number.isInteger(opts.stepDownSteps) && opts.stepDownSteps >= 1))
      throw new RangeError('stepDownSteps must be an integer ≥ 1');
    try {
      this.fmt = new Intl.DateTimeFormat('en-US', {
        timeZone: spec.timezone,
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
        hourCycle: 'h23',
      });
    } catch {
      throw new ScheduleSpecError('spec.timezone', `unknown IANA timezone "${spec.timezone}"`);
    }
    this.windows = (spec.peakWindows ?? []).map((w, i) => {
      const field = `spec.peakWindows[${i}]`;
      const start = parseClock(w.start, `${field}.start`, false);
      const end = parseClock(w.end, `${field}.end`, true);
      if (end <= start) throw new ScheduleSpecError(`${field}.end`, `${w.end} is not after ${w.start}`);
      const days = new Set(
        w.days.map((d, j) => {
          const n = WEEKDAYS.indexOf(d as Weekday);
          if (n < 0) throw new ScheduleSpecError(`${field}.days[${j}]`, `unknown day "${d}"`);
          return n;
        }),
      );
      const multiplier = w.multiplier ?? 1;
      return { days, start, end, multiplier, label: `peak ${w.start}-${w.end} x${multiplier}` };
    });
    this.promotions = (spec.promotions ?? []).map((p, i) => {
      const start = Date.parse(p.start);
      const end = Date.parse(p.end);
      if (Number.isNaN(start))
        throw new ScheduleSpecError(`spec.promotions[${i}].start`, `not an RFC 3339 time: "${p.start}"`);
      if (Number.isNaN(end))
        throw new ScheduleSpecError(`spec.promotions[${i}].end`, `not an RFC 3339 time: "${p.end}"`);
      if (end <= start) throw new ScheduleSpecError(`spec.promotions[${i}].end`, 'not after start');
      const multiplier = p.multiplier ?? 1;
      return { kind: 'promotion' as const, label: p.name, start, end, multiplier };
    });
  }

  /** The floor at instant `t`. */
  floorAt(t: Date | number): FloorAt {
    const ms = +t;
    let peak = 1;
    let promo = 1;
    const active: string[] = [];
    const activePromotions: string[] = [];
    for (const o of [...this.peaksAround(ms), ...this.promotions]) {
      const level = this.levelOf(o, ms);
      if (level === undefined) continue;
      const phase = ms < o.start ? ' (lead)' : ms >= o.end ? ' (stepping down)' : '';
      if (o.kind === 'peak') {
        peak = Math.max(peak, level);
        active.push(`${o.label}${phase}`);
      } else {
        promo = Math.max(promo, level);
        active.push(`promotion ${o.label} x${o.multiplier}${phase}`);
        activePromotions.push(o.label);
      }
    }
    // Rounding: 1e-9 keeps 3 × 1.1 = 3.3000000000000003 from becoming 4 where 3.3 means 4 anyway,
    // but 2 × 1.5 = 3 stays 3.
    const wanted = Math.max(this.spec.minReplicas ?? 0, this.spec.baseReplicas * peak * promo);
    const demand = Math.ceil(wanted - 1e-9);
    const max = this.spec.maxReplicas;
    const clamped = max !== undefined && demand > max;
    return {
      demand,
      floor: clamped ? max : demand,
      exact: clamped ? max : wanted,
      clamped,
      active: [...new Set(active)],
      activePromotions: [...new Set(activePromotions)],
      peakMultiplier: peak,
      promotionMultiplier: promo,
    };
  }

  /**
   * The first instant after `t` at which the floor, or what is in effect (the Active column),
   * differs from `t`, if any.
   */
  nextChange(t: Date | number): FloorChange | undefined {
    const ms = +t;
    // The exact level too: a step-down that keeps the whole-pod floor still changes what the
    // region adds to its model's sum.
    const key = (f: FloorAt) => `${f.floor}|${f.exact.toFixed(9)}|${f.active.join(',')}`;
    const now = key(this.floorAt(ms));
    const differs = (b: number): FloorChange | undefined => {
      const f = this.floorAt(b);
      return key(f) !== now ? { at: new Date(b), floor: f.floor } : undefined;
    };
    // Scan one day at a time: candidate instants are the occurrences' breakpoints.
    for (let d = 0; d < LOOKAHEAD_DAYS; d++) {
      const from = ms + d * DAY_MS;
      const to = from + DAY_MS;
      const candidates = new Set<number>();
      for (const o of [...this.peaksAround(from, to), ...this.promotions])
        for (const b of this.breakpointsOf(o)) if (b > from && b <= to) candidates.add(b);
      for (const b of [...candidates].sort((x, y) => x - y)) {
        const c = differs(b);
        if (c) return c;
      }
    }
    // Beyond the recurring windows' horizon only promotions can still change anything.
    const later = this.promotions
      .flatMap((o) => this.breakpointsOf(o))
      .filter((b) => b > ms + LOOKAHEAD_DAYS * DAY_MS)
      .sort((x, y) => x - y);
    for (const b of later) {
      const c = differs(b);
      if (c) return c;
    }
    return undefined;
  }

  /** The multiplier an occurrence contributes at `ms` (lead, full, step-down), or undefined. */
  private levelOf(o: Occurrence, ms: number): number | undefined {
    if (ms < o.start - this.opts.leadMs) return undefined;
    if (ms < o.end) return o.multiplier;
    const n = this.opts.stepDownSteps;
    // k: how many of the step-down breakpoints have passed (the same instants nextChange uses).
    const k = this.breakpointsOf(o)
      .slice(2, 2 + n)
      .filter((b) => b <= ms).length;
    return k >= n ? undefined : 1 + ((o.multiplier - 1) * (n - k)) / n;
  }

  /** Instants where an occurrence's level changes. */
  private breakpointsOf(o: Occurrence): number[] {
    const { leadMs, stepDownMs, stepDownSteps: n } = this.opts;
    const out = [o.start - leadMs, o.end];
    for (let k = 1; k <= n; k++) out.push(o.end + Math.round((stepDownMs * k) / n));
    // The start only changes what is shown ("(lead)" → in effect), last so levelOf's slice holds.
    return [...out, o.start];
  }

  /** Peak occurrences whose effect (with lead and step-down) may overlap [from, to]. */
  private peaksAround(from: number, to = from): Occurrence[] {
    if (this.windows.length === 0) return [];
    // Local dates from the day before `from` (a window of yesterday still stepping down, or
    // ending at 24:00) to the day after `to` (the lead of tomorrow's first window).
    const first = this.localDate(from - this.opts.stepDownMs - DAY_MS);
    const last = this.localDate(to + this.opts.leadMs + DAY_MS);
    const out: Occurrence[] = [];
    for (let day = first; day <= last; day += DAY_MS) out.push(...this.peaksOn(day));
    return out;
  }

  /** The peak occurrences of one local date (memoized: converting local times costs Intl calls). */
  private peaksOn(day: number): readonly Occurrence[] {
    const hit = this.byDay.get(day);
    if (hit) return hit;
    const dow = new Date(day).getUTCDay();
    const out: Occurrence[] = [];
    for (const w of this.windows) {
      if (!w.days.has(dow)) continue;
      out.push({
        kind: 'peak',
        label: w.label,
        start: this.toInstant(day + w.start),
        end: this.toInstant(day + w.end),
        multiplier: w.multiplier,
      });
    }
    if (this.byDay.size >= 64) this.byDay.clear();
    this.byDay.set(day, out);
    return out;
  }

  /** The local calendar date of instant `ms`, as ms of that date's 00:00 in UTC. */
  private localDate(ms: number): number {
    const wall = this.wallClock(ms);
    return wall - (((wall % DAY_MS) + DAY_MS) % DAY_MS);
  }

  /** The local wall-clock time at instant `ms`, as if it were UTC (ms, whole seconds). */
  private wallClock(ms: number): number {
    const p: Record<string, number> = {};
    for (const part of this.fmt.formatToParts(ms)) if (part.type !== 'literal') p[part.type] = +part.value;
    // Some ICU versions print midnight as hour 24 of the same day.
    const hour = p['hour'] === 24 ? 0 : p['hour'];
    return Date.UTC(p['year']!, p['month']! - 1, p['day'], hour, p['minute'], p['second']);
  }

  /** Offset of local time from UTC at instant `ms`, in ms. */
  private offsetAt(ms: number): number {
    const whole = Math.floor(ms / 1000) * 1000;
    return this.wallClock(whole) - whole;
  }

  /**
   * The instant of local wall-clock time `wall` (ms, as if UTC; 24:00 is the next day's 00:00).
   * Ambiguous (fall back): the first occurrence. Missing (spring forward): shifted forward by the gap.
   */
  private toInstant(wall: number): number {
    const before = this.offsetAt(wall - DAY_MS);
    const after = this.offsetAt(wall + DAY_MS);
    const early = wall - before;
    const late = wall - after;
    const earlyOk = this.offsetAt(early) === before;
    const lateOk = this.offsetAt(late) === after;
    if (earlyOk && lateOk) return Math.min(early, late);
    if (earlyOk) return early;
    if (lateOk) return late;
    return early; // in the gap: read with the offset before it, i.e. after the jump
  }
}

/** "HH:MM" → ms since local midnight; "24:00" only where `allow24`. */
function parseClock(s: string, field: string, allow24: boolean): number {
  const m = /^(\d\d):(\d\d)$/.exec(s);
  const h = m ? Number(m[1]) : NaN;
  const min = m ? Number(m[2]) : NaN;
  const ok = m && min < 60 && (h < 24 || (allow24 && h === 24 && min === 0));
  if (!ok) throw new ScheduleSpecError(field, `"${s}" is not HH:MM${allow24 ? ' (or 24:00)' : ''}`);
  return (h * 60 + min) * 60_000;
}

/** What computeRegionBases needs of one region serving a model. */
export interface RegionShareInput {
  readonly key: string;
  /** Its spec.stores count (the CRD requires ≥ 1). */
  readonly stores: number;
  /** Its spec.serving.minReplicas, when set. */
  readonly minReplicas?: number;
  /** Its spec.serving.baseReplicas (quiet-hour demand, may be a fraction), when set. */
  readonly baseReplicas?: number;
}

/**
 * Each region's base (its floor outside windows and promotions), for the regions serving one
 * model: spec.serving.baseReplicas when set (its quiet-hour demand, a fraction of a pod is
 * fine), else spec.serving.minReplicas, otherwise its share of the model's own minimum by
 * stores (its stores over the stores of all the regions serving the model; equal shares if no
 * region counts any). So regions that leave both unset add up to the model's minimum at quiet
 * hours, not to one minimum each.
 */
export function computeRegionBases(
  regions: readonly RegionShareInput[],
  modelMinReplicas: number,
): Map<string, number> {
  const totalStores = regions.reduce((a, r) => a + Math.max(0, r.stores), 0);
  return new Map(
    regions.map((r) => [
      r.key,
      r.baseReplicas ??
        r.minReplicas ??
        (totalStores > 0
          ? (modelMinReplicas * Math.max(0, r.stores)) / totalStores
          : modelMinReplicas / regions.length),
    ]),
  );
}

/**
 * The floor a model's HPA gets from all the regions it serves: their exact (unrounded) demands
 * add up (disjoint stores, so their traffic adds up; time zones spread the peaks) and the sum is
 * rounded up once, never below the model's own minimum, never above its maximum (the HPA refuses
 * minReplicas > maxReplicas). Rounding each region up first would add up to a pod per region.
 */
export function computeModelFloor(
  regionDemands: readonly number[],
  model: { readonly minReplicas: number; readonly maxReplicas: number },
): { floor: number; sum: number; clamped: boolean } {
  const sum = regionDemands.reduce((a, b) => a + b, 0);
  // 1e-9: 8 shares of 2/8 add up to 2.0000000000000004, which means 2.
  const wanted = Math.max(model.minReplicas, Math.ceil(sum - 1e-9));
  const clamped = wanted > model.maxReplicas;
  return { floor: clamped ? model.maxReplicas : wanted, sum, clamped };
}
