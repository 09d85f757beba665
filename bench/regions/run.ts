/**
 * bench/regions: a promotion day, and what the HPA alone, the HPA with Crema's region floors,
 * and static peak provisioning give.
 *
 *   npm run bench:regions -- [--users 500000] [--date 2026-06-03] [--requests-per-order 50]
 *                            [--model-min 2]
 *
 * 1. Orders of one weekday from the project's generator (feature-jobs/src/generate: 840 stores
 *    in 5 US timezones, rushes 06–09 and 14–16 local), scaled to 2M orders a day (DESIGN.md).
 * 2. A 10x promotion 12:00–13:00 local in every timezone (so it sweeps the country from 16:00Z
 *    to 20:00Z): orders of a store inside its promotion hour count 10 times.
 * 3. Offered load per minute = orders × requests per order (ASSUMPTION, --requests-per-order,
 *    default 50: DESIGN.md gives orders, not calls; 50 calls per order puts the day's 10x
 *    promotion peak at ~6.4k req/s, the order of the seed's ~10k req/s at a 10x peak. 500 stands
 *    for a fleet ten times larger).
 * 4. Capacity per pod: one serving pod's rate at p99 ≤ 10 ms through its Service on the real
 *    node (bench/results/node-capacity.json, 4,472 req/s at one core; `--pod-rps` to override).
 *    The HPA targets 70 % of it (Crema's default targetCPUUtilization, CPU proportional to
 *    requests; this assumes the CPU request is what one pod uses at capacity, see ADR 0013).
 * 5. Pod start-up: Ready 4.0 s after the pod is created (measured on the real node,
 *    docs/operator.md).
 * 6. The HPA as Kubernetes runs it with Crema's HPA spec: sync every 15 s, tolerance 10 %,
 *    scale-up at most max(4 pods, 200 %) per 60 s, scale-down stabilization 300 s and at most
 *    2 pods per 300 s; below minReplicas it goes straight to minReplicas at the next sync.
 *    The metric is the last minute's load (metrics-server's window).
 * 7. Floors: one StoreRegion per generator region (8, in 5 timezones, with their stores), all on
 *    one model with minReplicas --model-min (default 2: two pods for availability) and
 *    maxReplicas 200, evaluated with Crema's own schedule module and summed per model
 *    (computeRegionBases, computeModelFloor). Peak windows 06:00–09:00 x3 and 14:00–16:00 x2
 *    (the generator's rushes), the promotion x10, default lead (2 min) and step-down (15 min in
 *    3 steps). Three region configurations, all reported:
 *    - `shares` (the headline): regions leave minReplicas unset, so each has its share of the
 *      model's minimum by stores (ADR 0013 amendment);
 *    - `explicit`: each region's minReplicas is its quiet-hour (10:00–12:00 local) load at the
 *      HPA target, rounded up to whole pods (the CRD's minReplicas is an integer);
 *    - `oldRule`: the rule before the amendment (minReplicas unset = the model's whole minimum
 *      per region, each region rounded up before the sum), for comparison;
 *    - `load`: each region's base is its quiet-hour load at the HPA target in fractions of a pod
 *      (spec.serving.baseReplicas), the load-anchored configuration.
 * 8. Static: the day's worst minute at the HPA target, all day.
 *
 * Reports, per strategy, minutes where offered load exceeded ready capacity and replica-hours
 * (goal: 0 minutes with floors; floors ≤ 50 % of static), and the share of static that the
 * model's minimum alone costs (no strategy that keeps it can go below that). Then the reconcile cost with 800
 * StoreRegions (one per store, all on one model, the worst case): CPU per reconcile of the
 * floor computation (schedule + the sum over the model's regions), cold and warm.
 * Prints JSON as its last line and writes bench/results/regions.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildWorld } from '../../feature-jobs/src/generate/dataset.js';
import { generateDay } from '../../feature-jobs/src/generate/orders.js';
import { REGIONS } from '../../feature-jobs/src/generate/stores.js';
import type { StoreRegion } from '../../operator/src/api/v1alpha1/index.js';
import { RegionFloorCache } from '../../operator/src/controllers/storeregion/floor.js';
import {
  DEFAULT_SCHEDULE_OPTIONS,
  RegionSchedule,
  computeModelFloor,
  computeRegionBases,
} from '../../operator/src/controllers/storeregion/schedule.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const USERS = Number(arg('users', '500000'));
const DATE = arg('date', '2026-06-03'); // a Wednesday
const REQUESTS_PER_ORDER = Number(arg('requests-per-order', '50'));
const ORDERS_PER_DAY = 2_000_000;
/**
 * One pod's capacity: bench:node-capacity's rate at p99 ≤ 10 ms through the Service on the real
 * node (bench/results/node-capacity.json), or `--pod-rps`.
 */
const POD_RPS = Number(arg('pod-rps', String(measuredPodRps())));
const TARGET = 0.7;
const POD_READY_S = 4.0; // docs/operator.md, real node
const MAX_REPLICAS = 200;
const MODEL_MIN = Number(arg('model-min', '2'));

function measuredPodRps(): number {
  const file = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'node-capacity.json');
  const rps = (JSON.parse(readFileSync(file, 'utf8')) as { capacity?: { rpsPerPodAtP99le10ms?: number } })
    .capacity?.rpsPerPodAtP99le10ms;
  if (!rps) throw new Error(`${file} has no capacity: run npm run bench:node-capacity, or pass --pod-rps`);
  return rps;
}

const EVERY_WEEKDAY: Array<'Mon' | 'Tue' | 'Wed' | 'Thu' | 'Fri'> = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri'];
const TIMEZONES: string[] = [...new Set(REGIONS.map((r) => r.timezone as string))];

/** 12:00–13:00 local on DATE in `tz`, as RFC 3339 instants. */
function promotionIn(tz: string): { start: string; end: string } {
  const s = new RegionSchedule(
    {
      timezone: tz,
      baseReplicas: 1,
      peakWindows: [{ days: ['Sun', ...EVERY_WEEKDAY, 'Sat'], start: '12:00', end: '13:00', multiplier: 2 }],
    },
    { leadMs: 0, stepDownMs: 0, stepDownSteps: 1 },
  );
  const from = Date.parse(`${DATE}T00:00:00Z`);
  let t = from;
  for (;;) {
    const c = s.nextChange(t)!;
    if (c.floor === 2) {
      const end = s.nextChange(c.at)!;
      return { start: c.at.toISOString(), end: end.at.toISOString() };
    }
    t = c.at.getTime();
  }
}

// 1-3. Offered load per minute of the day (UTC), per timezone.
const t0 = performance.now();
const world = buildWorld({ seed: 3, users: USERS, stores: 840, start: DATE, days: 1 });
const orders = generateDay(world, 0, DATE);
const scale = ORDERS_PER_DAY / orders.n;
const dayStart = Date.parse(`${DATE}T00:00:00Z`);
// The US day spans 04:00Z (midnight in New York) to 07:00Z the next day: simulate 30 h.
const MINUTES = 30 * 60;
const simStart = dayStart + 4 * 3_600_000;
const promos = new Map(TIMEZONES.map((tz) => [tz, promotionIn(tz)]));
const tzOfStore: string[] = world.stores.map((s) => REGIONS[s.regionIndex]!.timezone);
const regionOfStore: number[] = world.stores.map((s) => s.regionIndex);
const loadByRegion = REGIONS.map(() => new Float64Array(MINUTES));
// Orders are of the store-local date DATE: shift them so each order keeps its local time.
for (let i = 0; i < orders.n; i++) {
  const tz = tzOfStore[orders.store[i]!]!;
  const region = regionOfStore[orders.store[i]!]!;
  const ts = orders.ts[i]! * 1000;
  const m = Math.floor((ts - simStart) / 60_000);
  if (m < 0 || m >= MINUTES) continue;
  const p = promos.get(tz)!;
  const factor = ts >= Date.parse(p.start) && ts < Date.parse(p.end) ? 10 : 1;
  loadByRegion[region]![m]! += (factor * scale * REQUESTS_PER_ORDER) / 60;
}
const load = new Float64Array(MINUTES);
for (const l of loadByRegion) for (let m = 0; m < MINUTES; m++) load[m]! += l[m]!;
const genMs = performance.now() - t0;

// 7. The regions: one StoreRegion per generator region, all on one model.
/** Region `index`'s mean offered load between local `start` and `end`, req/s. */
function meanLoadOf(index: number, start: string, end: string): number {
  const l = loadByRegion[index]!;
  const s = new RegionSchedule(
    {
      timezone: REGIONS[index]!.timezone,
      baseReplicas: 1,
      peakWindows: [{ days: EVERY_WEEKDAY, start, end, multiplier: 2 }],
    },
    { leadMs: 0, stepDownMs: 0, stepDownSteps: 1 },
  );
  let sum = 0;
  let n = 0;
  for (let m = 0; m < MINUTES; m++)
    if (s.floorAt(simStart + m * 60_000).floor === 2) {
      sum += l[m]!;
      n++;
    }
  return sum / n;
}
/** A region's quiet-hour (10:00–12:00 local, weekdays) load at the HPA target, in whole pods. */
function quietPodsOf(index: number): number {
  return Math.ceil(meanLoadOf(index, '10:00', '12:00') / (POD_RPS * TARGET));
}
/** The rushes against the quiet hours in the generated day: what the x3 and x2 stand for. */
const observedMultipliers = Object.fromEntries(
  REGIONS.map((r, i) => {
    const quiet = meanLoadOf(i, '10:00', '12:00');
    const ratio = (a: string, b: string) => Math.round((meanLoadOf(i, a, b) / quiet) * 100) / 100;
    return [r.name, { morning: ratio('06:00', '09:00'), afternoon: ratio('14:00', '16:00') }];
  }),
);
const storesOf = REGIONS.map((_, i) => regionOfStore.filter((r) => r === i).length);
const shareBases = computeRegionBases(
  REGIONS.map((r, i) => ({ key: r.name, stores: storesOf[i]! })),
  MODEL_MIN,
);
const explicitBases = new Map(REGIONS.map((r, i) => [r.name, quietPodsOf(i)]));
// spec.serving.baseReplicas: the quiet-hour load in fractions of a pod.
const loadBases = new Map(
  REGIONS.map((r, i) => [r.name, meanLoadOf(i, '10:00', '12:00') / (POD_RPS * TARGET)]),
);
function schedules(bases: ReadonlyMap<string, number>): RegionSchedule[] {
  return REGIONS.map(
    (r) =>
      new RegionSchedule(
        {
          timezone: r.timezone,
          baseReplicas: bases.get(r.name)!,
          peakWindows: [
            { days: EVERY_WEEKDAY, start: '06:00', end: '09:00', multiplier: 3 },
            { days: EVERY_WEEKDAY, start: '14:00', end: '16:00', multiplier: 2 },
          ],
          promotions: [{ name: 'lunch-bogo', ...promos.get(r.timezone)!, multiplier: 10 }],
        },
        DEFAULT_SCHEDULE_OPTIONS,
      ),
  );
}
const MODEL = { minReplicas: MODEL_MIN, maxReplicas: MAX_REPLICAS };
/** The HPA floor at `ms` (ADR 0013 amendment: exact demands, rounded once). */
function floorOf(regions: RegionSchedule[]): (ms: number) => number {
  return (ms) =>
    computeModelFloor(
      regions.map((r) => r.floorAt(ms).exact),
      MODEL,
    ).floor;
}
const shareRegions = schedules(shareBases);
const explicitRegions = schedules(explicitBases);
const loadRegions = schedules(loadBases);
// The rule before the amendment: every region's base is the model's whole minimum, and each
// region is rounded up to whole pods before the sum.
const oldRegions = schedules(new Map(REGIONS.map((r) => [r.name, MODEL_MIN])));
const oldRuleFloor = (ms: number) =>
  computeModelFloor(
    oldRegions.map((r) => r.floorAt(ms).floor),
    MODEL,
  ).floor;

// 6. The HPA, second by second.
interface Result {
  overloadedMinutes: number;
  worstShortfallRps: number;
  replicaHours: number;
  maxReplicas: number;
}
function simulate(minFloor: (ms: number) => number, staticReplicas?: number): Result {
  const pods: number[] = []; // ready-at second of each pod
  const start = staticReplicas ?? minFloor(simStart);
  for (let i = 0; i < start; i++) pods.push(-Infinity);
  const history: Array<{ at: number; desired: number }> = [];
  const scaleUps: Array<{ at: number; n: number }> = [];
  const scaleDowns: Array<{ at: number; n: number }> = [];
  let overloaded = 0;
  let worst = 0;
  let podSeconds = 0;
  let maxPods = pods.length;
  for (let m = 0; m < MINUTES; m++) {
    let minuteOver = false;
    for (let s = 0; s < 60; s++) {
      const sec = m * 60 + s;
      const ms = simStart + sec * 1000;
      if (staticReplicas === undefined && sec % 15 === 0) {
        const current = pods.length;
        const min = minFloor(ms);
        const metricLoad = load[Math.max(0, m - 1)]!; // the last full minute
        let desired: number;
        if (current < min) desired = min;
        else {
          const ready = pods.filter((r) => r <= sec).length || 1;
          const ratio = metricLoad / (ready * POD_RPS) / TARGET;
          desired = Math.abs(ratio - 1) <= 0.1 ? current : Math.ceil(ready * ratio);
          // Scale-down stabilization: the highest recommendation of the last 300 s.
          history.push({ at: sec, desired });
          while (history[0]!.at < sec - 300) history.shift();
          if (desired < current) desired = Math.min(current, Math.max(...history.map((h) => h.desired)));
          // Rate limits over the last 60 s (up) and 300 s (down).
          const upRecent = scaleUps.filter((e) => e.at > sec - 60).reduce((a, e) => a + e.n, 0);
          const base = current - upRecent;
          const upLimit = Math.max(base + 4, base * 3);
          const downRecent = scaleDowns.filter((e) => e.at > sec - 300).reduce((a, e) => a + e.n, 0);
          const downLimit = current + downRecent - 2;
          desired = Math.min(desired, upLimit, MAX_REPLICAS);
          desired = Math.max(desired, downLimit, min);
        }
        if (desired > current) {
          scaleUps.push({ at: sec, n: desired - current });
          for (let i = current; i < desired; i++) pods.push(sec + POD_READY_S);
        } else if (desired < current) {
          scaleDowns.push({ at: sec, n: current - desired });
          pods.sort((a, b) => b - a).splice(0, current - desired); // the newest go first
        }
        maxPods = Math.max(maxPods, pods.length);
      }
      const ready = pods.filter((r) => r <= sec).length;
      const shortfall = load[m]! - ready * POD_RPS;
      if (shortfall > 0) {
        minuteOver = true;
        worst = Math.max(worst, shortfall);
      }
      podSeconds += pods.length;
    }
    if (minuteOver) overloaded++;
  }
  return {
    overloadedMinutes: overloaded,
    worstShortfallRps: Math.round(worst),
    replicaHours: Math.round((podSeconds / 3600) * 10) / 10,
    maxReplicas: maxPods,
  };
}

const peakLoad = Math.max(...load);
const staticReplicas = Math.max(MODEL_MIN, Math.ceil(peakLoad / (POD_RPS * TARGET)));
const hpaAlone = simulate(() => MODEL_MIN);
const withFloors = simulate(floorOf(shareRegions));
const withExplicitFloors = simulate(floorOf(explicitRegions));
const withLoadFloors = simulate(floorOf(loadRegions));
const withOldRule = simulate(oldRuleFloor);
const staticPeak = simulate(() => staticReplicas, staticReplicas);

// Reconcile cost with 800 StoreRegions on one model: every region's reconcile sums all 800.
function regionObjects(): StoreRegion[] {
  return world.stores.slice(0, 800).map((s, i) => ({
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'StoreRegion',
    metadata: { name: `store-${i}`, namespace: 'bench', uid: `u${i}`, generation: 1 },
    spec: {
      stores: [s.id],
      timezone: REGIONS[s.regionIndex]!.timezone,
      peakWindows: [
        { days: EVERY_WEEKDAY, start: '06:00', end: '09:00', multiplier: 3 },
        { days: EVERY_WEEKDAY, start: '14:00', end: '16:00', multiplier: 2 },
      ],
      promotions: [{ name: 'lunch-bogo', ...promos.get(REGIONS[s.regionIndex]!.timezone)!, multiplier: 10 }],
      serving: { modelRef: 'drinks' },
    },
  }));
}
function reconcilePass(cache: RegionFloorCache, all: StoreRegion[], now: Date): number {
  const t = performance.now();
  // As the controller does it: every share from the regions' store counts (twice: the region's
  // own base, then the sum's), then the sum over all 800.
  const bases = () =>
    computeRegionBases(
      all.map((x) => ({ key: x.metadata!.name!, stores: x.spec.stores.length })),
      MODEL_MIN,
    );
  for (const r of all) {
    cache.evaluate(r, bases().get(r.metadata!.name!)!, now); // the region's own status
    const b = bases();
    computeModelFloor(
      all.map((x) => {
        const ev = cache.evaluate(x, b.get(x.metadata!.name!)!, now);
        return ev.ok ? ev.now.exact : 0;
      }),
      MODEL,
    );
  }
  return (performance.now() - t) / all.length;
}
const all = regionObjects();
const cache = new RegionFloorCache(DEFAULT_SCHEDULE_OPTIONS);
const at = new Date(Date.parse(`${DATE}T16:30:00Z`));
const coldMs = reconcilePass(cache, all, at);
const warmMs = reconcilePass(cache, all, at);
// A boundary for one timezone: its regions' cached stretches end, the rest stay cached.
const boundary = new Date(Date.parse(promos.get('America/New_York')!.end) + 5 * 60_000);
const boundaryMs = reconcilePass(cache, all, boundary);

function vsStatic(r: Result): number {
  return Math.round((r.replicaHours / staticPeak.replicaHours) * 1000) / 1000;
}
const result = {
  bench: 'regions',
  at: new Date().toISOString(),
  node: process.version,
  date: DATE,
  assumptions: {
    ordersPerDay: ORDERS_PER_DAY,
    requestsPerOrder: REQUESTS_PER_ORDER,
    podRps: POD_RPS,
    hpaTarget: TARGET,
    podReadySeconds: POD_READY_S,
    promotion: '10x, 12:00-13:00 local in each of ' + TIMEZONES.join(', '),
    model: MODEL,
    regions: REGIONS.map((r, i) => `${r.name} (${r.timezone}, ${storesOf[i]} stores)`),
  },
  generatedOrders: orders.n,
  generateMs: Math.round(genMs),
  peakLoadRps: Math.round(peakLoad),
  observedMultipliers,
  quietLoadRps: Object.fromEntries(
    REGIONS.map((r, i) => [r.name, Math.round(meanLoadOf(i, '10:00', '12:00'))]),
  ),
  regionBases: {
    shares: Object.fromEntries([...shareBases].map(([k, v]) => [k, Math.round(v * 1000) / 1000])),
    explicit: Object.fromEntries(explicitBases),
    load: Object.fromEntries([...loadBases].map(([k, v]) => [k, Math.round(v * 1000) / 1000])),
  },
  hpaAlone,
  withFloors,
  withExplicitFloors,
  withOldRule,
  withLoadFloors,
  staticPeak: { ...staticPeak, replicas: staticReplicas },
  floorsVsStatic: vsStatic(withFloors),
  explicitFloorsVsStatic: vsStatic(withExplicitFloors),
  oldRuleVsStatic: vsStatic(withOldRule),
  loadFloorsVsStatic: vsStatic(withLoadFloors),
  hpaAloneVsStatic: vsStatic(hpaAlone),
  // The model's minimum alone, all day, against static peak: nothing that keeps it goes lower.
  modelMinVsStatic: Math.round(((MODEL_MIN * MINUTES) / 60 / staticPeak.replicaHours) * 1000) / 1000,
  reconcile800: {
    regions: all.length,
    coldMsPerReconcile: Math.round(coldMs * 1000) / 1000,
    warmMsPerReconcile: Math.round(warmMs * 1000) / 1000,
    afterBoundaryMsPerReconcile: Math.round(boundaryMs * 1000) / 1000,
  },
};
const here = dirname(fileURLToPath(import.meta.url));
mkdirSync(join(here, '..', 'results'), { recursive: true });
writeFileSync(join(here, '..', 'results', 'regions.json'), JSON.stringify(result, null, 2) + '\n');
console.log(JSON.stringify(result));
