/**
 * The drift baseline training writes, checked against serving: every request training counted
 * is replayed through serving's own code (local time from the timestamp and the store's
 * timezone, context values from computeContextValues in float64, user features through the
 * float32 Redis blob) into serving's DriftMonitor, which must count exactly what training
 * counted, bin by bin and context by context.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeUserFeatures, encodeUserFeatures, USER_FEATURES } from '../../../contracts/features.js';
import { driftComparison, driftContextKey } from '../../../contracts/drift-binning.js';
import { validateModelMetadata, type ModelMetadata } from '../../../contracts/model-metadata.js';
import { DriftMonitor } from '../../../serving/src/drift/monitor.js';
import { LocalTimeResolver } from '../../../serving/src/ranking/context.js';
import { computeContextValues, type ContextFeature } from '../../../serving/src/ranking/plan.js';
import { computeUserFeatures } from '../batch/features.js';
import { computeSnapshot } from '../batch/snapshot.js';
import { Dataset, generateDataset } from '../generate/dataset.js';
import {
  buildDriftBaseline,
  computeColdStartFeatures,
  REQUEST_FEATURES,
  type DriftBaseline,
} from './drift-baseline.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-drift-baseline-'));
let ds: Dataset;
let baseline: DriftBaseline;
const DAYS = ['2026-10-06', '2026-10-07'];

beforeAll(() => {
  generateDataset({ seed: 5, users: 4000, stores: 24, start: '2026-10-01', days: 9 }, join(dir, 'ds'));
  ds = Dataset.open(join(dir, 'ds'));
  // Every request of the two days (no sampling), so serving can replay all of them.
  baseline = buildDriftBaseline(ds, DAYS, { seed: 1, windowDays: 30, maxRequests: Number.MAX_SAFE_INTEGER });
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A ranking model's metadata carrying the baseline (only the drift fields matter here). */
function metadataOf(b: DriftBaseline): ModelMetadata {
  return {
    metadataVersion: 1,
    name: 'drink-ranking',
    task: 'drink-ranking',
    sha256: '0'.repeat(64),
    featureSchemaVersion: 1,
    inputs: [{ name: 'features', shape: [-1, REQUEST_FEATURES.length], features: [...REQUEST_FEATURES] }],
    outputs: [{ name: 'score', shape: [-1, 1] }],
    baseline: { features: b.features, score: { edges: [0, 1], probs: [1] }, contexts: b.contexts },
    metrics: {},
    lineage: { datasetHash: ds.manifest.hash, featureJobVersion: 't', gitCommit: 't', trainedAt: 't' },
  };
}

describe('drift baseline', () => {
  it('is valid metadata: one count per context and bin, summing to the sampled requests', () => {
    const meta = metadataOf(baseline);
    expect(validateModelMetadata(meta)).toEqual([]);
    const c = baseline.contexts;
    expect(c.requests.reduce((a, b) => a + b, 0)).toBe(baseline.requests);
    expect(new Set(c.contexts.map(driftContextKey)).size).toBe(c.contexts.length);
    for (const f of REQUEST_FEATURES) {
      if (driftComparison(f) === 'support') {
        expect(c.counts[f], f).toBeUndefined();
        expect(baseline.features[f]!.probs).toEqual([0, 1, 0]);
        continue;
      }
      const table = c.counts[f]!;
      table.forEach((row, i) =>
        expect(
          row.reduce((a, b) => a + b, 0),
          `${f} context ${i}`,
        ).toBe(c.requests[i]),
      );
    }
    // A clock feature has one value per context.
    for (const row of c.counts['hour_cos']!) expect(row.filter((x) => x > 0)).toHaveLength(1);
  });

  it('serving bins every training request into the same bins and contexts as training', () => {
    const meta = metadataOf(baseline);
    const monitor = new DriftMonitor(meta, REQUEST_FEATURES, baseline.requests + 1, 1);
    const times = new LocalTimeResolver();
    const user = new Float32Array(USER_FEATURES.length);
    const values = new Float64Array(REQUEST_FEATURES.length);
    let replayed = 0;
    for (const day of DAYS) {
      const snap = computeSnapshot(ds, day, 30);
      const coldStart = computeColdStartFeatures(snap.agg);
      const from = Date.parse(`${day}T00:00:00Z`) / 1000;
      const di = ds.days.indexOf(day);
      for (const local of ds.days.slice(di - 1, di + 1)) {
        const o = ds.orders(local);
        const w = ds.weather.days.indexOf(local);
        for (let i = 0; i < o.n; i++) {
          if (o.ts[i]! < from || o.ts[i]! >= from + 86_400) continue;
          const store = ds.stores[o.store[i]!]!;
          // Serving's view: a request at this instant for this store.
          const t = times.resolve(o.ts[i]! * 1000, store.timezone);
          expect([t.hour, t.weekday]).toEqual([o.hour[i], o.dow[i]]);
          const context = computeContextValues({
            hour: t.hour,
            weekday: t.weekday,
            temperatureC: ds.weather.tempC[w]![store.regionIndex]!,
            condition: ds.weather.rain[w]![store.regionIndex] ? 'rain' : 'clear',
          });
          const blob = computeUserFeatures(snap.agg, o.user[i]!, user) ? user : coldStart;
          const read = decodeUserFeatures(encodeUserFeatures(blob));
          REQUEST_FEATURES.forEach((f, k) => {
            const u = (USER_FEATURES as readonly string[]).indexOf(f);
            values[k] = u >= 0 ? read[u]! : context[f as ContextFeature];
          });
          monitor.observe(monitor.contextOf(store.timezone, t.hour, t.weekday), (k) => values[k]!);
          replayed++;
        }
      }
    }
    expect(replayed).toBe(baseline.requests);
    for (const r of monitor.featureReadings()) {
      const trained = baseline.features[r.feature]!.probs;
      const counts = r.shares.map((s) => Math.round(s * replayed));
      const trainedCounts = baseline.contexts.counts[r.feature]
        ? baseline.contexts.counts[r.feature]!.reduce((acc, row) => acc.map((x, i) => x + row[i]!))
        : trained.map((p) => Math.round(p * replayed));
      expect(counts, r.feature).toEqual(trainedCounts);
      // Same bins and same contexts: the mixture of the window's contexts is the baseline itself.
      expect(r.psi!, r.feature).toBeLessThan(1e-3);
    }
  });
});
