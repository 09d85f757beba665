import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { parse } from 'yaml';
import { IDENTITY_LABELS, METRIC_PREFIX, SERVING_METRICS, type LabelsOf } from './metrics.js';
import { QUANTITY_PATTERN, isQuantity, parseQuantity, sameQuantity } from './quantity.js';
import { DURATION_PATTERN, parseDurationMs } from './duration.js';
import { MODEL_TASKS } from './model-metadata.js';
import { validateRouterConfig } from './router-config.js';
import { buildRouterConfig } from '../operator/src/traffic/router.js';
import { USER_FEATURES, decodeUserFeatures, encodeUserFeatures } from './features.js';
import { validateModelMetadata } from './model-metadata.js';
import { assignVariant, bucketOf } from './variant-hash.js';

const CRDS = join(import.meta.dirname, '..', 'crds');

describe('user feature blob', () => {
  it('round-trips a vector and rejects a wrong length', () => {
    const v = USER_FEATURES.map((_, i) => i * 0.5 - 1);
    expect([...decodeUserFeatures(encodeUserFeatures(v))]).toEqual(v);
    expect(() => encodeUserFeatures([1, 2])).toThrow(/expected 21 values/);
    expect(() => decodeUserFeatures(Buffer.alloc(8))).toThrow(/blob of 8 bytes/);
  });
});

describe('variant assignment', () => {
  const split = [
    { name: 'stable', weight: 75 },
    { name: 'canary', weight: 25 },
  ];

  it('is sticky and depends on the salt', () => {
    expect(assignVariant('user-1', 's1', split)).toBe(assignVariant('user-1', 's1', split));
    const differs = Array.from({ length: 200 }, (_, i) => `u${i}`).some(
      (u) => bucketOf(u, 'a') !== bucketOf(u, 'b'),
    );
    expect(differs).toBe(true);
  });

  it('splits 10k users close to the weights', () => {
    let canary = 0;
    for (let i = 0; i < 10_000; i++) if (assignVariant(`user-${i}`, 'exp', split) === 'canary') canary++;
    expect(canary / 10_000).toBeGreaterThan(0.23);
    expect(canary / 10_000).toBeLessThan(0.27);
  });

  it('moves only the users it must when a weight grows', () => {
    const wider = [
      { name: 'stable', weight: 50 },
      { name: 'canary', weight: 50 },
    ];
    for (let i = 0; i < 5_000; i++) {
      const before = assignVariant(`user-${i}`, 'exp', split);
      const after = assignVariant(`user-${i}`, 'exp', wider);
      if (before === 'canary') expect(after).toBe('canary');
    }
  });

  it('rejects weights that do not sum to 100', () => {
    expect(() => assignVariant('u', 's', [{ name: 'a', weight: 60 }])).toThrow(/sum to 100, got 60/);
  });
});

describe('model metadata validation', () => {
  it('names every missing field', () => {
    expect(validateModelMetadata({ metadataVersion: 1 })).toEqual(
      expect.arrayContaining([expect.stringMatching(/^name/), expect.stringMatching(/^sha256/)]),
    );
    expect(validateModelMetadata(null)).toEqual(['metadata: not an object']);
  });

  it('accepts metadata without per-context drift baselines and checks their shape when present', () => {
    const meta = {
      metadataVersion: 1,
      name: 'ranker',
      task: 'drink-ranking',
      sha256: 'a'.repeat(64),
      featureSchemaVersion: 1,
      inputs: [{ name: 'features', shape: [-1, 1], features: ['recency_days'] }],
      outputs: [{ name: 'score', shape: [-1, 1] }],
      baseline: {
        features: { recency_days: { edges: [0, 7, 90], probs: [0.5, 0.5] } },
        score: { edges: [0, 1], probs: [1] },
      },
      metrics: {},
      lineage: { datasetHash: 'd', featureJobVersion: 'f', gitCommit: 'g', trainedAt: 't' },
    };
    expect(validateModelMetadata(meta)).toEqual([]);
    const contexts = {
      scheme: 'timezone-hour-weekend/1',
      contexts: [{ timezone: 'America/New_York', hour: 7, weekend: 0 }],
      requests: [10],
      counts: { recency_days: [[6, 4]] },
    };
    const withContexts = (c: unknown) => ({ ...meta, baseline: { ...meta.baseline, contexts: c } });
    expect(validateModelMetadata(withContexts(contexts))).toEqual([]);
    expect(
      validateModelMetadata(withContexts({ ...contexts, counts: { recency_days: [[6, 4, 0]] } })),
    ).toEqual(['baseline.contexts.counts.recency_days: 1 contexts x 2 bins of non-negative counts required']);
    expect(validateModelMetadata(withContexts({ ...contexts, counts: { cat_hot: [[1]] } }))).toEqual([
      'baseline.contexts.counts.cat_hot: no baseline.features.cat_hot histogram',
    ]);
    expect(
      validateModelMetadata(
        withContexts({ ...contexts, contexts: [{ timezone: 'UTC', hour: 24, weekend: 0 }] }),
      ),
    ).toEqual(['baseline.contexts.contexts[0]: {timezone, hour 0..23, weekend 0|1} required']);
    expect(validateModelMetadata(withContexts({ ...contexts, requests: [] }))).toEqual([
      'baseline.contexts.requests: one count per context (1)',
    ]);
  });
});

describe('serving env', () => {
  it('names one URI and one pinned digest variable per task', async () => {
    const { MODEL_TASKS, modelEnvNames } = await import('./serving-env.js');
    expect(modelEnvNames('drink-ranking')).toEqual({
      uri: 'CREMA_RANKING_MODEL_URI',
      sha256: 'CREMA_RANKING_MODEL_SHA256',
    });
    expect(new Set(MODEL_TASKS.map((t) => modelEnvNames(t).uri)).size).toBe(4);
  });
});

describe('serving metrics', () => {
  const all = Object.values(SERVING_METRICS);

  it('have unique, prefixed, valid names and label names', () => {
    expect(new Set(all.map((m) => m.name)).size).toBe(all.length);
    for (const m of all) {
      expect(m.name).toMatch(new RegExp(`^${METRIC_PREFIX}[a-z_]+$`));
      expect(new Set(m.labels).size, m.name).toBe(m.labels.length);
      for (const l of m.labels) expect(l).toMatch(/^[a-z_]+$/);
    }
  });

  it('carry model and namespace everywhere, and revision wherever a series is about one model revision', () => {
    for (const m of all) expect(m.labels.slice(0, 2), m.name).toEqual(['model', 'namespace']);
    const withoutRevision = all
      .filter((m) => !(m.labels as readonly string[]).includes('revision'))
      .map((m) => m.name);
    // A failed load has no revision; the regional menu is the pod's, whatever revision it runs.
    expect(withoutRevision).toEqual(['crema_model_loads_total', 'crema_region_menu_state']);
    expect(IDENTITY_LABELS).toEqual(['model', 'namespace', 'revision']);
  });

  it('type each metric with exactly its label names', () => {
    expectTypeOf<LabelsOf<'fallbacks'>>().toEqualTypeOf<
      'model' | 'namespace' | 'revision' | 'route' | 'reason'
    >();
  });
});

describe('quantities', () => {
  it.each([
    ['250m', 0.25],
    ['1', 1],
    ['0.5', 0.5],
    ['1.5Gi', 1.5 * 2 ** 30],
    ['500M', 5e8],
    ['1e3', 1000],
    ['.5Ki', 512],
  ])('%s = %d', (q, v) => expect(parseQuantity(q)).toBeCloseTo(v, 9));

  it('refuses what the API server would, naming the field', () => {
    for (const q of ['1GB', 'lots', '-1', '1e1.5', '']) expect(isQuantity(q)).toBe(false);
    expect(() => parseQuantity('1GB', 'spec.x.memory')).toThrow(
      /spec.x.memory: "1GB" is not a Kubernetes quantity/,
    );
  });

  it('compares spellings of one amount as equal', () => {
    expect(sameQuantity('1.5Gi', '1536Mi')).toBe(true);
    expect(sameQuantity('1000m', '1')).toBe(true);
    expect(sameQuantity('1G', '1Gi')).toBe(false);
  });

  it('is the grammar of every quantity field in the CRDs', () => {
    const patterns = crdNodes()
      .filter(({ path }) => /\.(requests|limits)\.properties\.(cpu|memory)$/.test(path))
      .map(({ node }) => String(node['pattern']));
    expect(patterns.length).toBeGreaterThanOrEqual(4);
    expect(new Set(patterns)).toEqual(new Set([QUANTITY_PATTERN]));
  });
});

/** Every node of every CRD schema with its dotted path. */
function crdNodes(): Array<{ path: string; node: Record<string, unknown> }> {
  const out: Array<{ path: string; node: Record<string, unknown> }> = [];
  const walk = (node: unknown, path: string) => {
    if (node === null || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    out.push({ path, node: n });
    for (const [k, v] of Object.entries(n)) walk(v, `${path}.${k}`);
  };
  for (const f of readdirSync(CRDS).filter((x) => x.endsWith('.yaml')))
    walk(parse(readFileSync(join(CRDS, f), 'utf8')), f);
  return out;
}

describe('durations (contracts/duration.ts)', () => {
  it.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['0s', 0],
  ])('%s is %d ms', (d, ms) => {
    expect(parseDurationMs(d)).toBe(ms);
  });

  it.each(['1.5m', '5', 'm', '1d', '-1s', ' 5m', '5ms'])('refuses %j and names it', (d) => {
    expect(() => parseDurationMs(d)).toThrow(`invalid duration ${JSON.stringify(d)}`);
  });

  it('is the grammar of every duration field in the CRDs', () => {
    const patterns = crdNodes()
      .filter(
        ({ node }) => typeof node['pattern'] === 'string' && /\(s\|m\|h\)/.test(String(node['pattern'])),
      )
      .map(({ node }) => String(node['pattern']));
    expect(patterns.length).toBeGreaterThanOrEqual(3);
    expect(new Set(patterns)).toEqual(new Set([DURATION_PATTERN]));
  });
});

describe('the task list (contracts/model-metadata.ts)', () => {
  it("is the CRD's spec.model.task enum", () => {
    const enums = crdNodes()
      .filter(({ path }) => path.endsWith('.properties.model.properties.task'))
      .map(({ node }) => node['enum']);
    expect(enums.length).toBeGreaterThanOrEqual(1);
    for (const e of enums) expect(e).toEqual([...MODEL_TASKS]);
  });
});

describe('the router config (contracts/router-config.ts)', () => {
  it.each([0, 1, 37, 50, 100])(
    'what the operator writes at canary weight %d is what serving accepts',
    (w) => {
      const targets = {
        namespace: 'shop',
        model: 'drinks',
        stableUpstream: 'http://drinks-stable.shop.svc:80',
      };
      expect(validateRouterConfig(buildRouterConfig(targets, 0))).toEqual([]);
      expect(
        validateRouterConfig(
          buildRouterConfig({ ...targets, canaryUpstream: 'http://drinks-canary.shop.svc:80' }, w),
        ),
      ).toEqual([]);
    },
  );

  it('names what is wrong with a config', () => {
    expect(
      validateRouterConfig({ salt: 's', stable: 'stable', variants: [{ name: 'stable', weight: 90 }] }),
    ).toEqual(['variants: weights sum to 90, must be 100', 'stable: must have an upstream']);
  });
});
