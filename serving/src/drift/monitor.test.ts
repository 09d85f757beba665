import { describe, expect, it } from 'vitest';
import { computeClockFeatures } from '../../../contracts/features.js';
import {
  computeBaselineHistogram,
  computeValueEdges,
  DRIFT_CONTEXT_SCHEME,
  declaredValues,
  type DriftContext,
} from '../../../contracts/drift-binning.js';
import type { DriftContextBaseline, ModelMetadata } from '../../../contracts/model-metadata.js';
import { DRIFT_MIN_OBSERVATIONS, DriftMonitor } from './monitor.js';

const NY = 'America/New_York';
const LA = 'America/Los_Angeles';
const TUESDAY = 2;
const SATURDAY = 6;
/** recency_days bins: [0,7) [7,14) [14,30) [30,60) [60,90] */
const RECENCY = [0, 7, 14, 30, 60, 90];
const HOUR_COS = computeValueEdges(declaredValues('hour_cos')!);
const PRECIP = computeValueEdges([0, 1]);

/**
 * A training window of two contexts in New York on weekdays: the 07:00 rush is made of recent
 * customers (recency in the first bin), the 15:00 crowd of lapsing ones (fourth bin). Over the
 * whole day that is half and half. Nobody trained on rain.
 */
function metadata(o: { contexts?: boolean; scheme?: string } = {}): ModelMetadata {
  const contexts: DriftContext[] = [
    { timezone: NY, hour: 7, weekend: 0 },
    { timezone: NY, hour: 15, weekend: 0 },
  ];
  const cosBin = (h: number) => {
    const row = new Array<number>(HOUR_COS.length - 1).fill(0);
    row[HOUR_COS.findLastIndex((e) => e <= Math.fround(computeClockFeatures(h, 1).hour_cos))]! = 1000;
    return row;
  };
  const table: DriftContextBaseline = {
    scheme: o.scheme ?? DRIFT_CONTEXT_SCHEME,
    contexts,
    requests: [1000, 1000],
    counts: {
      recency_days: [
        [1000, 0, 0, 0, 0],
        [0, 0, 0, 1000, 0],
      ],
      hour_cos: [cosBin(7), cosBin(15)],
      is_precipitation: [
        [1000, 0],
        [1000, 0],
      ],
    },
  };
  const sum = (rows: readonly (readonly number[])[]) =>
    rows[0]!.map((_, i) => rows.reduce((a, r) => a + r[i]!, 0) / 2000);
  return {
    metadataVersion: 1,
    name: 'ranker',
    task: 'drink-ranking',
    sha256: 'a'.repeat(64),
    featureSchemaVersion: 1,
    inputs: [
      { name: 'features', shape: [-1, 3], features: ['recency_days', 'hour_cos', 'is_precipitation'] },
    ],
    outputs: [{ name: 'score', shape: [-1, 1] }],
    baseline: {
      features: {
        recency_days: { edges: RECENCY, probs: sum(table.counts['recency_days']!) },
        hour_cos: { edges: HOUR_COS, probs: sum(table.counts['hour_cos']!) },
        is_precipitation: { edges: PRECIP, probs: [1, 0] },
      },
      score: { edges: [0, 0.5, 1], probs: [0.5, 0.5] },
      ...(o.contexts === false ? {} : { contexts: table }),
    },
    metrics: {},
    lineage: { datasetHash: 'd', featureJobVersion: 'f', gitCommit: 'g', trainedAt: '2026-11-24T00:00:00Z' },
  };
}

const FEATURES = ['recency_days', 'hour_cos', 'is_precipitation'];

/** `n` requests at `hour` in `timezone` with the given recency (and rain). */
function feed(
  m: DriftMonitor,
  n: number,
  o: { timezone?: string; hour: number; weekday?: number; recency: number; rain?: number },
): void {
  const values = [o.recency, computeClockFeatures(o.hour, o.weekday ?? TUESDAY).hour_cos, o.rain ?? 0];
  const ctx = m.contextOf(o.timezone ?? NY, o.hour, o.weekday ?? TUESDAY);
  for (let i = 0; i < n; i++) m.observe(ctx, (k) => values[k]!);
}

const psiOf = (m: DriftMonitor, feature: string) =>
  m.featureReadings().find((r) => r.feature === feature)!.psi!;

describe('DriftMonitor: like with like', () => {
  it("compares the morning rush with training's morning rush, not with the whole day", () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    expect(m.perContext).toBe(true);
    feed(m, 1000, { hour: 7, recency: 2 });
    expect(psiOf(m, 'recency_days')).toBeLessThan(0.01);
    expect(psiOf(m, 'hour_cos')).toBeLessThan(0.01);
    // The same window against the whole-day baseline (a model trained before contexts) reads
    // far above the alert threshold: the false alarm of a healthy model.
    const legacy = new DriftMonitor(metadata({ contexts: false }), FEATURES);
    expect(legacy.perContext).toBe(false);
    feed(legacy, 1000, { hour: 7, recency: 2 });
    expect(psiOf(legacy, 'recency_days')).toBeGreaterThan(1);
    expect(psiOf(legacy, 'hour_cos')).toBeGreaterThan(1);
  });

  it('weights the per-context baselines by the contexts of the window', () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    feed(m, 750, { hour: 7, recency: 2 });
    feed(m, 250, { hour: 15, recency: 40 });
    const r = m.featureReadings().find((x) => x.feature === 'recency_days')!;
    expect(r.expected[0]).toBeCloseTo(0.75, 1);
    expect(r.expected[3]).toBeCloseTo(0.25, 1);
    expect(r.psi).toBeLessThan(0.01);
  });

  it('alarms on a shift inside a context: lapsing customers at the morning rush', () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    feed(m, 600, { hour: 7, recency: 2 });
    feed(m, 400, { hour: 7, recency: 40 });
    expect(psiOf(m, 'recency_days')).toBeGreaterThan(0.2);
  });

  it('a timezone training never saw is compared with its local hour in the others', () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    feed(m, 1000, { timezone: LA, hour: 15, recency: 40 });
    expect(psiOf(m, 'recency_days')).toBeLessThan(0.01);
    expect(psiOf(m, 'hour_cos')).toBeLessThan(0.01);
  });

  it('traffic at an hour training never saw is compared with the whole day', () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    feed(m, 1000, { hour: 11, recency: 40 });
    const r = m.featureReadings().find((x) => x.feature === 'recency_days')!;
    expect(r.expected[0]).toBeCloseTo(0.5, 2);
    expect(r.expected[3]).toBeCloseTo(0.5, 2);
    // hour_cos of 11:00 is a value no training request had.
    expect(psiOf(m, 'hour_cos')).toBeGreaterThan(0.2);
  });

  it('a weekend context is not a weekday one', () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    expect(m.contextOf(NY, 7, SATURDAY)).not.toBe(m.contextOf(NY, 7, TUESDAY));
    expect(m.contextOf(NY, 7, TUESDAY)).toBe(0);
    expect(m.contextOf(NY, 15, 3)).toBe(1);
  });

  it('a value training never saw alarms: rain on a model trained on dry days', () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    feed(m, 900, { hour: 7, recency: 2 });
    expect(psiOf(m, 'is_precipitation')).toBeLessThan(0.01);
    feed(m, 100, { hour: 7, recency: 2, rain: 1 });
    expect(psiOf(m, 'is_precipitation')).toBeGreaterThan(0.2);
  });

  it('forgets the oldest requests and their contexts once the window is full', () => {
    const m = new DriftMonitor(metadata(), FEATURES, 1000);
    feed(m, 1000, { hour: 15, recency: 40 });
    feed(m, 1000, { hour: 7, recency: 2 });
    const r = m.featureReadings().find((x) => x.feature === 'recency_days')!;
    expect(r.observations).toBe(1000);
    expect(r.shares[0]).toBe(1);
    expect(r.expected[0]).toBeGreaterThan(0.99);
    expect(r.psi).toBeLessThan(0.01);
  });

  it('reports no PSI before DRIFT_MIN_OBSERVATIONS values and skips non-finite values', () => {
    const m = new DriftMonitor(metadata(), FEATURES);
    feed(m, DRIFT_MIN_OBSERVATIONS - 1, { hour: 7, recency: 2 });
    expect(m.featureReadings().every((r) => r.psi === undefined)).toBe(true);
    m.observe(m.contextOf(NY, 7, TUESDAY), (k) => (k === 0 ? Number.NaN : 0));
    const r = m.featureReadings();
    expect(r.find((x) => x.feature === 'recency_days')!.observations).toBe(DRIFT_MIN_OBSERVATIONS - 1);
    expect(r.find((x) => x.feature === 'is_precipitation')!.psi).toBeDefined();
  });

  it('compares with the whole-day baseline when the context scheme is unknown', () => {
    const m = new DriftMonitor(metadata({ scheme: 'region-hour/9' }), FEATURES);
    expect(m.perContext).toBe(false);
    feed(m, 1000, { hour: 7, recency: 2 });
    expect(psiOf(m, 'recency_days')).toBeGreaterThan(1);
  });

  it('ignores features without a baseline and keeps the score window', () => {
    const m = new DriftMonitor(metadata(), ['cat_hot', 'recency_days']);
    expect(m.features()).toEqual(['recency_days']);
    m.observe(m.contextOf(NY, 7, TUESDAY), (k) => (k === 1 ? 2 : Number.NaN));
    m.observeScores([0.1, 0.9]);
    expect(m.scoreReading()!.observations).toBe(2);
  });
});

describe('DriftMonitor against a histogram built by the shared binning', () => {
  it('a window drawn from the baseline distribution reads a PSI far below the threshold', () => {
    const values = Array.from({ length: 20_000 }, (_, i) => ((i * 7919) % 20_000) / 100);
    const h = computeBaselineHistogram('monetary_30d', values);
    const meta = metadata({ contexts: false });
    const m = new DriftMonitor({ ...meta, baseline: { ...meta.baseline, features: { monetary_30d: h } } }, [
      'monetary_30d',
    ]);
    const ctx = m.contextOf(NY, 7, TUESDAY);
    for (let i = 0; i < 5000; i++) m.observe(ctx, () => values[(i * 31) % values.length]!);
    expect(psiOf(m, 'monetary_30d')).toBeLessThan(0.02);
  });
});
