/**
 * bench/drift: false alarms and detection of the serving drift monitor on simulated days.
 *
 *   npm run bench:drift -- [--users 500000] [--days 44] [--seed 2] [--scale 10] [--label after]
 *
 * 1. Generates an order history with the project's generator (`feature-jobs/src/generate`,
 *    cached under feature-jobs/.data/) and trains the models with `runTraining`, exactly as
 *    `npm run jobs -- train` does: the drink-ranking metadata carries the drift baseline.
 * 2. Replays each held-out day (the 7 days after the training window) as recommendation
 *    requests: every order of the day is a request at its own instant from its user at its
 *    store (840 stores in 5 US timezones, so the rushes 06–09 and 14–16 local follow the sun),
 *    with user features as of that day's 00:00 UTC batch (the float32 vectors serving reads),
 *    weather of the store's region and day, and the context features computed by serving's own
 *    code (`LocalTimeResolver`, `computeContextValues`). The history is 1/10 scale, so each
 *    order is replayed `--scale` times at random instants of its own hour: ~2M requests a day,
 *    the full-scale rate (DESIGN.md: 2M orders/day, one recommendation request per order).
 * 3. Feeds them through serving's DriftMonitor with its defaults (window 5000, PSI from 500
 *    observations) and evaluates the operator's drift rule every 15 s of simulated time: PSI of
 *    a feature above DEFAULT_PSI_THRESHOLD for computeDriftFor(DEFAULT_DRIFT_WINDOW) (0.2 for
 *    300 s, operator/src/analysis/rules.ts) fires an alert.
 * 4. No drift: alerts per day for the stable (all traffic) and a 10 % canary. Shifts injected
 *    at a different time of each day: detection within 2 h and time to detect.
 *
 * Prints a JSON summary as its last line and writes it to bench/results/drift.json under
 * `--label` (other labels in the file are kept, so "before" and "after" sit side by side).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { USER_FEATURES } from '../../contracts/features.js';
import type { ModelMetadata } from '../../contracts/model-metadata.js';
import { computeSnapshot, type FeatureSnapshot } from '../../feature-jobs/src/batch/snapshot.js';
import {
  addToSegments,
  computeSegmentMeans,
  computeUserFeatures,
  newSegmentSums,
} from '../../feature-jobs/src/batch/features.js';
import { Dataset, generateDataset } from '../../feature-jobs/src/generate/dataset.js';
import { runTraining } from '../../feature-jobs/src/train/train.js';
import {
  DEFAULT_DRIFT_WINDOW,
  DEFAULT_PSI_THRESHOLD,
  computeDriftFor,
} from '../../operator/src/analysis/rules.js';
import { DriftMonitor } from '../../serving/src/drift/monitor.js';
import { LocalTimeResolver } from '../../serving/src/ranking/context.js';
import {
  compileRankingPlan,
  computeContextValues,
  type ContextFeature,
} from '../../serving/src/ranking/plan.js';

const args = process.argv.slice(2);
const arg = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1]! : def;
};
const USERS = Number(arg('--users', '500000'));
const DAYS = Number(arg('--days', '44'));
const SEED = Number(arg('--seed', '2'));
const SCALE = Number(arg('--scale', '10'));
const LABEL = arg('--label', 'after');
const EVAL_DAYS = 7;
/** Held-out days replayed (fewer for a quick look; the result file is for all 7). */
const REPLAY_DAYS = Number(arg('--replay-days', String(EVAL_DAYS)));
/** Only these scenarios (comma-separated shift names, or none); all by default. */
const ONLY = arg('--shifts', '');
/** Use this drink-ranking metadata instead of training (iterating on serving alone). */
const META = arg('--meta', '');
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const THRESHOLD = DEFAULT_PSI_THRESHOLD;
const FOR_S = Number(computeDriftFor(DEFAULT_DRIFT_WINDOW).replace('s', ''));
const EVAL_EVERY_S = 15;
const DETECT_WITHIN_S = 2 * 3600;
const log = (line: string) => console.error(`bench:drift ${line}`);

/** One simulated request, before any shift: who, where, when (Unix seconds). */
interface Requests {
  readonly n: number;
  readonly t: Float64Array;
  readonly user: Uint32Array;
  readonly store: Uint16Array;
  /** Index into ds.weather.days of the store-local date of the order. */
  readonly weatherDay: Uint16Array;
}

/** What a shift changes in a request, from its injection time on. */
interface Shift {
  readonly name: string;
  readonly what: string;
  /** Serving's user features come from this snapshot instead of the day's. */
  readonly staleDays?: number;
  readonly user?: (v: Float32Array) => void;
  readonly temperature?: (c: number) => number;
  readonly condition?: (c: 'rain' | 'clear') => 'rain' | 'clear';
  /** The timezone serving resolves local time in. */
  readonly timezone?: (tz: string) => string;
}

const F = Object.fromEntries(USER_FEATURES.map((f, i) => [f, i])) as Record<string, number>;
const SHIFTS: Shift[] = [
  {
    name: 'temperature+8C',
    what: 'every request reports 8 °C more (a heat wave, or a weather provider offset)',
    temperature: (c) => c + 8,
  },
  {
    name: 'temperature-in-fahrenheit',
    what: 'the app sends °F in temperatureC',
    temperature: (c) => (c * 9) / 5 + 32,
  },
  {
    name: 'precipitation-everywhere',
    what: 'every request reports rain (an app release defaulting the condition)',
    condition: () => 'rain',
  },
  {
    name: 'timezone-bug',
    what: 'serving resolves local time in UTC (the stores hash lost its timezones)',
    timezone: () => 'UTC',
  },
  {
    name: 'frequency-window-15d',
    what: 'the feature job computes frequency_30d and monetary_30d over 15 days (values halved)',
    user: (v) => {
      v[F['frequency_30d']!] = Math.round(v[F['frequency_30d']!]! / 2);
      v[F['monetary_30d']!] = v[F['monetary_30d']!]! / 2;
    },
  },
  {
    name: 'stale-features-3d',
    what: 'serving reads user features of the batch 3 days ago (the nightly job is stuck)',
    staleDays: 3,
  },
];
/** Injection instant per held-out day, hours after 00:00 UTC (05–16 Eastern, across the rushes). */
const INJECT_HOURS = [10, 12, 13.5, 15, 17, 19, 21];

function openDataset(): Dataset {
  const dir = join(root, 'feature-jobs', '.data', `bench-drift-s${SEED}-u${USERS}-d${DAYS}`);
  if (!existsSync(join(dir, 'manifest.json'))) {
    log(`generating ${USERS} users x ${DAYS} days into ${dir}`);
    generateDataset({ seed: SEED, users: USERS, stores: 840, start: '2026-10-01', days: DAYS }, dir);
  }
  return Dataset.open(dir, false);
}

/** The held-out day's requests in time order: orders of the UTC day, each replayed SCALE times. */
function buildRequests(ds: Dataset, day: string): Requests {
  const start = Date.parse(`${day}T00:00:00Z`) / 1000;
  const end = start + 86_400;
  const di = ds.days.indexOf(day);
  const picked: { ts: number; user: number; store: number; w: number }[] = [];
  for (const d of ds.days.slice(Math.max(0, di - 1), di + 2)) {
    const o = ds.orders(d);
    const w = ds.weather.days.indexOf(d);
    for (let i = 0; i < o.n; i++) {
      const ts = o.ts[i]!;
      if (ts >= start && ts < end) picked.push({ ts, user: o.user[i]!, store: o.store[i]!, w });
    }
  }
  // Replicas at uniform instants of the order's own hour (the generator places orders uniformly
  // within their local hour, and US offsets are whole hours, so the local hour is unchanged),
  // bucketed by second (a counting sort keeps this linear).
  let s = (SEED * 2654435761 + di) >>> 0;
  const rnd = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const n = picked.length * SCALE;
  const t = new Float64Array(n);
  const src = new Uint32Array(n);
  for (let i = 0, k = 0; i < picked.length; i++) {
    const hourStart = Math.floor(picked[i]!.ts / 3600) * 3600;
    for (let r = 0; r < SCALE; r++, k++) {
      t[k] = r === 0 ? picked[i]!.ts : hourStart + rnd() * 3600;
      src[k] = i;
    }
  }
  const buckets = new Uint32Array(86_401);
  for (let k = 0; k < n; k++) buckets[Math.floor(t[k]! - start)]!++;
  for (let b = 0, acc = 0; b < buckets.length; b++) {
    const c = buckets[b]!;
    buckets[b] = acc;
    acc += c;
  }
  const order = new Uint32Array(n);
  for (let k = 0; k < n; k++) order[buckets[Math.floor(t[k]! - start)]!++] = k;
  const out: Requests = {
    n,
    t: new Float64Array(n),
    user: new Uint32Array(n),
    store: new Uint16Array(n),
    weatherDay: new Uint16Array(n),
  };
  for (let k = 0; k < n; k++) {
    const p = picked[src[order[k]!]!]!;
    out.t[k] = t[order[k]!]!;
    out.user[k] = p.user;
    out.store[k] = p.store;
    out.weatherDay[k] = p.w;
  }
  return out;
}

/** A feature snapshot as serving reads it: user vectors, and the cold-start vector for the rest. */
interface ServingFeatures {
  readonly snap: FeatureSnapshot;
  readonly coldStart: Float32Array;
}

function servingFeatures(ds: Dataset, asOf: string): ServingFeatures {
  const snap = computeSnapshot(ds, asOf, 30);
  const sums = newSegmentSums();
  const v = new Float32Array(USER_FEATURES.length);
  for (let u = 0; u < snap.agg.n; u++) if (computeUserFeatures(snap.agg, u, v)) addToSegments(sums, v);
  const coldStart = computeSegmentMeans([sums]).slice(0, USER_FEATURES.length);
  return { snap, coldStart };
}

/** The operator's drift rule over one run: alerts as Prometheus would fire them. */
class RuleEvaluator {
  private readonly pendingSince = new Map<string, number>();
  private readonly firing = new Set<string>();
  /** Alerts fired: when, which feature, and since when its PSI had been above the threshold. */
  readonly alerts: { at: number; since: number; feature: string; psi: number }[] = [];
  evaluations = 0;
  firingEvaluations = 0;
  readonly maxPsi: Record<string, number> = {};

  evaluate(t: number, readings: readonly { feature: string; psi: number | undefined }[]): void {
    this.evaluations++;
    for (const r of readings) {
      if (r.psi === undefined) continue;
      this.maxPsi[r.feature] = Math.max(this.maxPsi[r.feature] ?? 0, r.psi);
      if (r.psi > THRESHOLD) {
        const since = this.pendingSince.get(r.feature) ?? t;
        this.pendingSince.set(r.feature, since);
        if (!this.firing.has(r.feature) && t - since >= FOR_S) {
          this.firing.add(r.feature);
          this.alerts.push({ at: t, since, feature: r.feature, psi: round(r.psi) });
        }
      } else {
        this.pendingSince.delete(r.feature);
        this.firing.delete(r.feature);
      }
    }
    if (this.firing.size > 0) this.firingEvaluations++;
  }
}

interface RunOptions {
  readonly share: number;
  readonly shift?: Shift;
  readonly injectAt?: number;
}

function simulate(
  ds: Dataset,
  meta: ModelMetadata,
  day: string,
  req: Requests,
  fresh: ServingFeatures,
  stale: ServingFeatures | undefined,
  o: RunOptions,
): RuleEvaluator {
  const names = meta.inputs[0]!.features;
  const plan = compileRankingPlan(names);
  // What serving's app.ts monitors: the user and context columns of the ranking model.
  const monitored = plan.columns.flatMap((c, column) =>
    c.kind === 'user' || c.kind === 'context' ? [{ feature: names[column]!, c }] : [],
  );
  const monitor = new DriftMonitor(
    meta,
    monitored.map((m) => m.feature),
  );
  const times = new LocalTimeResolver();
  const rule = new RuleEvaluator();
  const start = Date.parse(`${day}T00:00:00Z`) / 1000;
  const v = new Float32Array(USER_FEATURES.length);
  const values = new Float64Array(monitored.length);
  let next = start + EVAL_EVERY_S;
  let s = 987_654_321;
  const rnd = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let k = 0; k < req.n; k++) {
    const t = req.t[k]!;
    while (t >= next) {
      rule.evaluate(next, monitor.featureReadings());
      next += EVAL_EVERY_S;
    }
    if (o.share < 1 && rnd() >= o.share) continue;
    const shifted = o.shift && t >= o.injectAt! ? o.shift : undefined;
    const store = ds.stores[req.store[k]!]!;
    const tz = shifted?.timezone ? shifted.timezone(store.timezone) : store.timezone;
    const local = times.resolve(t * 1000, tz);
    const w = req.weatherDay[k]!;
    const temp = ds.weather.tempC[w]![store.regionIndex]!;
    const rain = ds.weather.rain[w]![store.regionIndex] ? 'rain' : 'clear';
    const context = computeContextValues({
      hour: local.hour,
      weekday: local.weekday,
      temperatureC: shifted?.temperature ? shifted.temperature(temp) : temp,
      condition: shifted?.condition ? shifted.condition(rain) : rain,
      channel: 'app',
    });
    const features = shifted?.staleDays ? stale! : fresh;
    let user: Float32Array = v;
    if (!computeUserFeatures(features.snap.agg, req.user[k]!, v)) user = features.coldStart;
    else shifted?.user?.(v);
    for (let i = 0; i < monitored.length; i++) {
      const c = monitored[i]!.c;
      values[i] = c.kind === 'user' ? user[c.index]! : context[(c as { name: ContextFeature }).name];
    }
    // Serving tags each request with its store's timezone and the local time it resolved.
    monitor.observe(monitor.contextOf(store.timezone, local.hour, local.weekday), (i) => values[i]!);
  }
  while (next <= start + 86_400) {
    rule.evaluate(next, monitor.featureReadings());
    next += EVAL_EVERY_S;
  }
  return rule;
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : null;
};

/** Trains on `ds` as `npm run jobs -- train` does; returns the drink-ranking metadata. */
async function train(ds: Dataset): Promise<ModelMetadata> {
  const out = mkdtempSync(join(tmpdir(), 'crema-bench-drift-'));
  try {
    log('training (the drift baseline comes from the training command)');
    const trained = await runTraining({
      dataset: ds,
      outDir: out,
      evalDays: EVAL_DAYS,
      windowDays: 30,
      seed: 1,
      epochs: 1,
      log: () => {},
    });
    const meta = trained.models.find((m) => m.task === 'drink-ranking')!.meta;
    // Kept for --meta: a rerun that changes serving alone skips training.
    await writeFile(
      join(root, 'feature-jobs', '.data', `bench-drift-${LABEL}.meta.json`),
      JSON.stringify(meta),
    );
    return meta;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const ds = openDataset();
  const meta = META ? (JSON.parse(readFileSync(META, 'utf8')) as ModelMetadata) : await train(ds);
  const trainS = (Date.now() - t0) / 1000;
  const heldOut = ds.days.slice(-EVAL_DAYS).slice(0, REPLAY_DAYS);
  const shiftsToRun = ONLY === '' ? SHIFTS : SHIFTS.filter((s) => ONLY.split(',').includes(s.name));
  const noDrift: Record<string, unknown>[] = [];
  const canary: Record<string, unknown>[] = [];
  const shifts = new Map<string, Record<string, unknown>[]>();
  for (const [d, day] of heldOut.entries()) {
    const t1 = Date.now();
    const req = buildRequests(ds, day);
    const fresh = servingFeatures(ds, day);
    const staleDay = ds.days[ds.days.indexOf(day) - 3]!;
    const stale = servingFeatures(ds, staleDay);
    const summary = (r: RuleEvaluator) => ({
      day,
      weekday: new Date(`${day}T00:00:00Z`).getUTCDay(),
      alerts: r.alerts.length,
      firingShare: round(r.firingEvaluations / r.evaluations, 4),
      alertFeatures: [...new Set(r.alerts.map((a) => a.feature))],
      maxPsi: Object.fromEntries(Object.entries(r.maxPsi).map(([f, x]) => [f, round(x)])),
    });
    noDrift.push({ requests: req.n, ...summary(simulate(ds, meta, day, req, fresh, stale, { share: 1 })) });
    canary.push(summary(simulate(ds, meta, day, req, fresh, stale, { share: 0.1 })));
    const start = Date.parse(`${day}T00:00:00Z`) / 1000;
    const injectAt = start + INJECT_HOURS[d % INJECT_HOURS.length]! * 3600;
    for (const shift of shiftsToRun) {
      const r = simulate(ds, meta, day, req, fresh, stale, { share: 1, shift, injectAt });
      // An alert detects the shift when its PSI crossed the threshold after the injection.
      const before = r.alerts.filter((a) => a.since < injectAt);
      const first = r.alerts.find((a) => a.since >= injectAt);
      const list = shifts.get(shift.name) ?? [];
      list.push({
        day,
        injectedAtUtcHour: INJECT_HOURS[d % INJECT_HOURS.length],
        alertsBeforeInjection: before.length,
        detectedWithin2h: !!first && first.at - injectAt <= DETECT_WITHIN_S,
        secondsToDetect: first ? first.at - injectAt : null,
        firstAlert: first ? { feature: first.feature, psi: first.psi } : null,
        alertFeatures: [...new Set(r.alerts.filter((a) => a.since >= injectAt).map((a) => a.feature))],
      });
      shifts.set(shift.name, list);
    }
    log(`${day}: ${req.n} requests, ${(Date.now() - t1) / 1000} s`);
  }
  const alertsPerDay = (rows: Record<string, unknown>[]) =>
    round(rows.reduce((a, r) => a + (r['alerts'] as number), 0) / rows.length, 2);
  const result = {
    at: new Date().toISOString(),
    gitCommit: gitHead(),
    dataset: { users: USERS, days: DAYS, seed: SEED, hash: ds.manifest.hash },
    heldOutDays: heldOut,
    requestsPerDay: Math.round(noDrift.reduce((a, r) => a + (r['requests'] as number), 0) / noDrift.length),
    rule: { psiThreshold: THRESHOLD, forSeconds: FOR_S, evaluateEverySeconds: EVAL_EVERY_S },
    monitor: { window: 5000, note: 'serving defaults (driftWindow 5000, DRIFT_MIN_OBSERVATIONS 500)' },
    noDrift: { alertsPerDay: alertsPerDay(noDrift), days: noDrift },
    canary10pct: { alertsPerDay: alertsPerDay(canary), days: canary },
    shifts: Object.fromEntries(
      shiftsToRun.map((s) => {
        const rows = shifts.get(s.name)!;
        const detected = rows.filter((r) => r['detectedWithin2h']);
        return [
          s.name,
          {
            what: s.what,
            detectedWithin2h: `${detected.length}/${rows.length}`,
            medianSecondsToDetect: median(detected.map((r) => r['secondsToDetect'] as number)),
            maxSecondsToDetect: detected.length
              ? Math.max(...detected.map((r) => r['secondsToDetect'] as number))
              : null,
            injections: rows,
          },
        ];
      }),
    ),
    wallSeconds: { training: round(trainS, 1), total: round((Date.now() - t0) / 1000, 1) },
  };
  const file = join(root, 'bench', 'results', 'drift.json');
  const previous = existsSync(file)
    ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>)
    : {};
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify({ bench: 'drift', ...previous, [LABEL]: result }, null, 2) + '\n');
  console.log(
    JSON.stringify({
      label: LABEL,
      noDriftAlertsPerDay: result.noDrift.alertsPerDay,
      canaryAlertsPerDay: result.canary10pct.alertsPerDay,
      detection: Object.fromEntries(
        Object.entries(result.shifts).map(([k, v]) => [k, [v.detectedWithin2h, v.medianSecondsToDetect]]),
      ),
    }),
  );
}

function gitHead(): string {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

await main();
