/**
 * Synthetic menus, users and models for tests and the benchmark. Writes Redis in exactly the
 * contracts/features.ts layout, the way feature-jobs does, and writes models as `.onnx` +
 * `.meta.json` files built with the feature-jobs ONNX builder.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import {
  encodeMatrix,
  encodeUserFeatures,
  FEATURE_SCHEMA_VERSION,
  ITEM_FEATURES,
  itemFeatureRow,
  KEYS,
  SEGMENTS,
  USER_FEATURES,
  type Catalog,
  type CatalogItem,
  type StoreInfo,
} from '../../contracts/features.js';
import type { BaselineHistogram, ModelMetadata, ModelTask } from '../../contracts/model-metadata.js';
import { buildMlp } from '../../feature-jobs/src/onnx/builder.js';
import { sha256Hex } from '../src/model/loader.js';

/** A deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CATEGORIES = ['hot', 'iced', 'blended', 'energy'] as const;

/** A menu of `drinks` drinks (every 10th seasonal, Nov–Jan) followed by `addons` add-ons. */
export function buildCatalog(drinks = 150, addons = 40): Catalog {
  const items: CatalogItem[] = [];
  for (let i = 0; i < drinks; i++) {
    items.push({
      id: `drink-${i}`,
      index: i,
      name: `Drink ${i}`,
      kind: 'drink',
      category: CATEGORIES[i % 4]!,
      price: 3 + (i % 7) * 0.5,
      prepComplexity: 1 + (i % 5),
      ...(i % 10 === 9 ? { season: { start: '11-01', end: '01-31' } } : {}),
    });
  }
  for (let j = 0; j < addons; j++) {
    items.push({
      id: `addon-${j}`,
      index: drinks + j,
      name: `Add-on ${j}`,
      kind: 'addon',
      category: 'addon',
      price: 0.5 + (j % 4) * 0.25,
      prepComplexity: 1,
    });
  }
  return { items };
}

/** Item feature matrix [items x ITEM_FEATURES] consistent with the catalog. */
export function buildItemMatrix(catalog: Catalog, seed = 1): Float32Array {
  const r = rng(seed);
  const f = ITEM_FEATURES.length;
  const m = new Float32Array(catalog.items.length * f);
  catalog.items.forEach((it, i) => {
    m.set(itemFeatureRow(it, r() * 0.02), i * f);
  });
  return m;
}

/** A plausible user feature vector. */
export function syntheticUser(r: () => number, nDrinks: number): Float32Array {
  const v = new Float32Array(USER_FEATURES.length);
  const set = (name: (typeof USER_FEATURES)[number], x: number) => (v[USER_FEATURES.indexOf(name)] = x);
  set('recency_days', Math.floor(r() * 60));
  set('frequency_30d', Math.floor(r() * 20));
  set('monetary_30d', r() * 120);
  set('avg_order_value', 3 + r() * 6);
  const cats = [r(), r(), r(), r()];
  const cs = cats.reduce((a, b) => a + b, 0);
  (['cat_hot', 'cat_iced', 'cat_blended', 'cat_energy'] as const).forEach((c, i) => set(c, cats[i]! / cs));
  const tods = [r(), r(), r(), r(), r()];
  const ts = tods.reduce((a, b) => a + b, 0);
  (['tod_early', 'tod_morning', 'tod_midday', 'tod_afternoon', 'tod_evening'] as const).forEach((c, i) =>
    set(c, tods[i]! / ts),
  );
  set('weekday_share', r());
  set('addon_attach_rate', r());
  set('segment', 1 + Math.floor(r() * (SEGMENTS.length - 1)));
  for (let k = 1; k <= 5; k++) set(`recent_${k}` as 'recent_1', Math.floor(r() * nDrinks));
  return v;
}

/** Popularity [24 x items] for a store: each hour's drink shares sum to 1, add-ons likewise. */
export function buildPopularity(catalog: Catalog, seed: number): Float32Array {
  const r = rng(seed);
  const n = catalog.items.length;
  const m = new Float32Array(24 * n);
  for (let h = 0; h < 24; h++) {
    let sd = 0;
    let sa = 0;
    for (let i = 0; i < n; i++) {
      const x = r() ** 3;
      m[h * n + i] = x;
      if (catalog.items[i]!.kind === 'drink') sd += x;
      else sa += x;
    }
    for (let i = 0; i < n; i++) m[h * n + i]! /= catalog.items[i]!.kind === 'drink' ? sd : sa;
  }
  return m;
}

/** What seedFeatures writes. */
export interface SeedOptions {
  readonly version: string;
  readonly catalog?: Catalog;
  readonly stores?: readonly StoreInfo[];
  /** Users with their feature vectors. */
  readonly users?: ReadonlyArray<{ id: string; features: Float32Array }>;
  /** Also mark the version current. Default true. */
  readonly publish?: boolean;
}

/** Default test stores. */
export function buildStores(n = 3): StoreInfo[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `store-${i}`,
    region: i % 2 ? 'us-west' : 'us-east',
    timezone: i % 2 ? 'America/Los_Angeles' : 'America/New_York',
    capacityPerHour: 60 + 20 * i,
    unavailable: i === 1 ? ['drink-0', 'drink-1'] : [],
  }));
}

/** Writes a complete feature version in the shared layout, and publishes it. */
export async function seedFeatures(
  redis: Redis,
  o: SeedOptions,
): Promise<{ catalog: Catalog; stores: StoreInfo[] }> {
  const v = o.version;
  const catalog = o.catalog ?? buildCatalog();
  const stores = [...(o.stores ?? buildStores())];
  const p = redis.pipeline();
  p.set(KEYS.catalog(v), JSON.stringify(catalog));
  p.set(KEYS.items(v), encodeMatrix(buildItemMatrix(catalog)));
  for (const s of stores) p.hset(KEYS.stores(v), s.id, JSON.stringify(s));
  stores.forEach((s, i) =>
    p.set(KEYS.storePopularity(v, s.id), encodeMatrix(buildPopularity(catalog, 100 + i))),
  );
  const seg = new Float32Array(SEGMENTS.length * USER_FEATURES.length);
  const r = rng(7);
  for (let s = 0; s < SEGMENTS.length; s++) seg.set(syntheticUser(r, 150), s * USER_FEATURES.length);
  p.set(KEYS.segments(v), encodeMatrix(seg));
  for (const u of o.users ?? []) p.set(KEYS.user(v, u.id), encodeUserFeatures(u.features));
  if (o.publish ?? true) p.set(KEYS.current, v);
  await p.exec();
  return { catalog, stores };
}

/** The ranking feature list test models use: user, item, context and cross features. */
export const TEST_RANKING_FEATURES = [
  'recency_days',
  'frequency_30d',
  'cat_hot',
  'cat_iced',
  'addon_attach_rate',
  'popularity',
  'price',
  'prep_complexity',
  'is_hot',
  'is_iced',
  'is_seasonal',
  'hour_sin',
  'hour_cos',
  'is_weekend',
  'temperature_c',
  'category_affinity',
  'recently_ordered',
  'store_hour_popularity',
] as const;

function histogram(edges: number[]): BaselineHistogram {
  const bins = edges.length - 1;
  return { edges, probs: Array.from({ length: bins }, () => 1 / bins) };
}

/** Options of writeModel. */
export interface WriteModelOptions {
  readonly dir: string;
  readonly file: string;
  readonly task?: ModelTask;
  readonly name?: string;
  readonly features?: readonly string[];
  readonly seed?: number;
  readonly hidden?: number;
  /** Output a sigmoid (scores in 0..1). Default true. */
  readonly sigmoid?: boolean;
  /** Corrupt the file after computing the sha256 (tests of verification). */
  readonly corrupt?: boolean;
  /** Fixed bias of the output (e.g. minutes for a pickup model with zero weights). */
  readonly outputBias?: number;
  readonly zeroWeights?: boolean;
  /** Exact weights (row-major [in, out]) instead of random ones; hidden size = b0.length. */
  readonly weights?: { w0: number[]; b0: number[]; w1: number[]; b1: number[] };
  /** The drift baseline (default: uniform histograms of four features, no contexts). */
  readonly baseline?: ModelMetadata['baseline'];
}

/** Writes `<file>.onnx` + `<file>.meta.json` into dir; returns the model's file:// URI and metadata. */
export async function writeModel(o: WriteModelOptions): Promise<{ uri: string; meta: ModelMetadata }> {
  const features = o.features ?? TEST_RANKING_FEATURES;
  const r = rng(o.seed ?? 42);
  const hidden = o.hidden ?? 32;
  const w = (n: number) => Array.from({ length: n }, () => (o.zeroWeights ? 0 : (r() - 0.5) * 0.6));
  const x = o.weights;
  const h = x ? x.b0.length : hidden;
  const bytes = buildMlp({
    name: o.name ?? 'test-model',
    layers: [
      { weights: x?.w0 ?? w(features.length * h), bias: x?.b0 ?? w(h), inSize: features.length, outSize: h },
      { weights: x?.w1 ?? w(h), bias: x?.b1 ?? [o.outputBias ?? 0], inSize: h, outSize: 1 },
    ],
    sigmoid: o.sigmoid ?? true,
  });
  const sha256 = sha256Hex(bytes);
  const meta: ModelMetadata = {
    metadataVersion: 1,
    name: o.name ?? 'test-model',
    task: o.task ?? 'drink-ranking',
    sha256,
    featureSchemaVersion: FEATURE_SCHEMA_VERSION,
    inputs: [{ name: 'features', shape: [-1, features.length], features: [...features] }],
    outputs: [{ name: 'score', shape: [-1, 1] }],
    baseline: o.baseline ?? {
      features: {
        recency_days: histogram([0, 7, 14, 30, 60, 90]),
        frequency_30d: histogram([0, 2, 5, 10, 20, 40]),
        cat_hot: histogram([0, 0.2, 0.4, 0.6, 0.8, 1]),
        temperature_c: histogram([-20, 0, 10, 20, 30, 50]),
      },
      score: histogram([0, 0.2, 0.4, 0.6, 0.8, 1]),
    },
    metrics: { 'recall@5': 0.3 },
    lineage: {
      datasetHash: 'test',
      featureJobVersion: 'test',
      gitCommit: 'test',
      trainedAt: '2026-11-24T00:00:00Z',
    },
  };
  const onnx = join(o.dir, `${o.file}.onnx`);
  const out = Buffer.from(bytes);
  if (o.corrupt) out.fill(7, 10, 60);
  await writeFile(onnx, out);
  await writeFile(join(o.dir, `${o.file}.meta.json`), JSON.stringify(meta, null, 2));
  return { uri: pathToFileURL(onnx).toString(), meta };
}
