import { describe, expect, it } from 'vitest';
import type { DriftAlert } from '../webhooks/alertmanager.js';
import {
  ClusterDriftAlerts,
  DRIFT_ALERTS_CONFIGMAP,
  DRIFT_ALERT_VALUE_MAX_BYTES,
  buildDriftAlertEntry,
  buildDriftAlertPatch,
  buildDriftAlertPrunePatch,
  checkRecordable,
  driftAlertKey,
  encodeDriftAlertEntry,
  expiredDriftAlertKeys,
  findFiringDriftAlert,
  isConfigMapKey,
  parseDriftAlertEntries,
} from './alerts.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const T0 = new Date('2026-11-24T10:00:00Z');
const at = (ms: number) => new Date(T0.getTime() + ms);

const alert = (over: Partial<DriftAlert> = {}): DriftAlert => {
  const a = {
    status: 'firing' as const,
    alertname: 'CremaFeatureDrift',
    namespace: 'stores',
    model: 'drinks',
    revision: B,
    variant: 'canary',
    feature: 'hour',
    value: 0.4512,
    startsAt: '2026-11-24T09:59:00Z',
    annotations: {},
    ...over,
  };
  return {
    labels: {
      alertname: a.alertname,
      namespace: a.namespace,
      crema_model: a.model,
      revision: a.revision,
      variant: a.variant,
      feature: a.feature,
    },
    ...a,
  };
};

/** The ConfigMap data after recording `alerts` at `now` with `ttlMs`. */
function recorded(alerts: Array<[DriftAlert, Date]>, ttlMs = 1000): Record<string, string> {
  return Object.fromEntries(
    alerts.map(([a, now]) => [driftAlertKey(a), encodeDriftAlertEntry(buildDriftAlertEntry(a, now, ttlMs))]),
  );
}

describe('driftAlertKey', () => {
  it.each([
    ['a plain name', 'drinks', /^drinks\.bbbbbbbbbbbb\.[0-9a-f]{20}$/],
    ['dots and dashes', 'menu.add-ons.v2', /^menu\.add-ons\.v2\.bbbbbbbbbbbb\.[0-9a-f]{20}$/],
    ['a 253-character name', `${'x.'.repeat(126)}y`, /^[-._a-zA-Z0-9]{253}$/],
    ['characters a label may carry but a key may not', 'Drinks/ümlaut name:1', /^Drinks__mlaut_name_1\./],
  ])('%s gives a valid ConfigMap key', (_what, model, pattern) => {
    const key = driftAlertKey(alert({ model }));
    expect(key).toMatch(pattern);
    expect(isConfigMapKey(key)).toBe(true);
  });

  it('names one alert: the same label set in any order gives the same key, another feature another', () => {
    const a = alert();
    const reordered = { ...a, labels: Object.fromEntries(Object.entries(a.labels).reverse()) };
    expect(driftAlertKey(reordered)).toBe(driftAlertKey(a));
    expect(driftAlertKey(alert({ feature: 'temp' }))).not.toBe(driftAlertKey(a));
    expect(driftAlertKey(alert({ revision: A }))).not.toBe(driftAlertKey(a));
    expect(driftAlertKey(alert({ status: 'resolved' }))).toBe(driftAlertKey(a));
  });

  it('keeps names apart that read alike once made key-safe', () => {
    const keys = ['a.b', 'a-b', 'a_b', 'a/b', 'a:b'].map((model) => driftAlertKey(alert({ model })));
    expect(new Set(keys).size).toBe(keys.length);
  });
});

describe('isConfigMapKey', () => {
  it.each([
    ['drinks.bbbb.0123', true],
    ['a-b_c.D9', true],
    ['', false],
    ['a/b', false],
    ['a b', false],
    ['x'.repeat(253), true],
    ['x'.repeat(254), false],
  ])('%j → %s', (key, ok) => expect(isConfigMapKey(key)).toBe(ok));
});

describe('drift alert entries', () => {
  it('round-trip, with the message conditions show', () => {
    const data = recorded([[alert(), T0]]);
    const [entry] = [...parseDriftAlertEntries(data).values()];
    expect(entry).toEqual({
      model: 'drinks',
      revision: B,
      alertname: 'CremaFeatureDrift',
      variant: 'canary',
      feature: 'hour',
      message:
        'CremaFeatureDrift (canary revision bbbbbbbbbbbb): CremaFeatureDrift on feature hour PSI 0.451',
      startsAt: '2026-11-24T09:59:00Z',
      receivedAt: '2026-11-24T10:00:00.000Z',
      expiresAt: '2026-11-24T10:00:01.000Z',
    });
  });

  it('prefer the summary annotation', () => {
    const entry = buildDriftAlertEntry(alert({ annotations: { summary: 'hour drifted' } }), T0, 1000);
    expect(entry.message).toBe('CremaFeatureDrift (canary revision bbbbbbbbbbbb): hour drifted');
  });

  it(`stay within ${DRIFT_ALERT_VALUE_MAX_BYTES} bytes whatever the labels and annotations hold`, () => {
    const huge = alert({
      alertname: 'A'.repeat(5000),
      feature: 'f'.repeat(5000),
      variant: 'v'.repeat(5000),
      annotations: { summary: `start ${'\u0001ü'.repeat(20_000)}` },
    });
    const value = encodeDriftAlertEntry(buildDriftAlertEntry(huge, T0, 1000));
    expect(Buffer.byteLength(value)).toBeLessThanOrEqual(DRIFT_ALERT_VALUE_MAX_BYTES);
    const [entry] = [...parseDriftAlertEntries({ k: value }).values()];
    expect(entry?.message).toMatch(/^CremaFeatureDrift|^A+/);
    expect(entry?.message).toContain('start ');
    expect(entry?.revision).toBe(B);
    expect(entry?.model).toBe('drinks');
  });

  it('skip values that are not entries', () => {
    const good = recorded([[alert(), T0]]);
    const entries = parseDriftAlertEntries({
      ...good,
      'not-json': '{',
      'wrong-shape': JSON.stringify({ model: 'drinks' }),
      'bad-expiry': JSON.stringify({ ...JSON.parse(Object.values(good)[0]!), expiresAt: 'soon' }),
    });
    expect([...entries.keys()]).toEqual(Object.keys(good));
  });
});

describe('findFiringDriftAlert', () => {
  it('answers for the alerted model revision only', () => {
    const entries = parseDriftAlertEntries(recorded([[alert(), T0]]));
    expect(findFiringDriftAlert(entries, 'drinks', B, T0)?.message).toMatch(/feature hour PSI 0\.451/);
    expect(findFiringDriftAlert(entries, 'drinks', A, T0)).toBeUndefined();
    expect(findFiringDriftAlert(entries, 'addons', B, T0)).toBeUndefined();
  });

  it.each([
    [0, true],
    [999, true],
    [1000, false], // expiresAt itself no longer counts
    [5000, false],
  ])('an entry recorded at 0 with a TTL of 1000 ms, read at %i ms: firing %s', (ms, firing) => {
    const entries = parseDriftAlertEntries(recorded([[alert(), T0]]));
    expect(!!findFiringDriftAlert(entries, 'drinks', B, at(ms))).toBe(firing);
  });

  it("a repeat pushes the expiry forward (Alertmanager's repeat_interval)", () => {
    const again = parseDriftAlertEntries(recorded([[alert(), at(800)]]));
    expect(findFiringDriftAlert(again, 'drinks', B, at(1500))).toBeDefined();
  });

  it('with several features drifting, the earliest speaks and the message counts the others', () => {
    const entries = parseDriftAlertEntries(
      recorded([
        [alert({ feature: 'temp', startsAt: '2026-11-24T09:58:00Z' }), T0],
        [alert({ feature: 'hour' }), T0],
        [alert({ feature: 'store' }), at(-2000)], // expired
      ]),
    );
    expect(findFiringDriftAlert(entries, 'drinks', B, T0)?.message).toBe(
      'CremaFeatureDrift (canary revision bbbbbbbbbbbb): CremaFeatureDrift on feature temp PSI 0.451 (+1 more drift alerts)',
    );
  });
});

describe('expiry and resolution', () => {
  it('expiredDriftAlertKeys lists exactly the entries past their expiry', () => {
    const old = alert({ feature: 'old' });
    const entries = parseDriftAlertEntries(
      recorded([
        [old, at(-1000)],
        [alert(), T0],
      ]),
    );
    expect(expiredDriftAlertKeys(entries, T0)).toEqual([driftAlertKey(old)]);
    expect(expiredDriftAlertKeys(entries, at(999))).toEqual([driftAlertKey(old)]);
    expect(expiredDriftAlertKeys(entries, at(1000))).toHaveLength(2);
  });

  it('a resolved alert is a merge patch that removes its own key and leaves the others', () => {
    const patch = buildDriftAlertPatch(driftAlertKey(alert({ status: 'resolved' })), null);
    expect(patch).toEqual({
      metadata: { labels: expect.objectContaining({ 'app.kubernetes.io/managed-by': 'crema-operator' }) },
      data: { [driftAlertKey(alert())]: null },
    });
  });

  it('pruning is guarded by the resourceVersion it saw', () => {
    expect(buildDriftAlertPrunePatch('42', ['k1', 'k2'])).toEqual({
      metadata: { resourceVersion: '42' },
      data: { k1: null, k2: null },
    });
  });
});

describe('checkRecordable', () => {
  it.each([
    ['a known model and a digest', alert(), true, null],
    ['an unknown model', alert(), false, 'no RecommenderModel stores/drinks is watched by this operator'],
    [
      'a revision that is no digest',
      alert({ revision: 'v2' }),
      true,
      'label revision "v2" is not a model sha256',
    ],
    ['an upper-case digest', alert({ revision: B.toUpperCase() }), true, /is not a model sha256/],
  ])('%s', (_what, a, known, expected) => {
    const got = checkRecordable(a, known);
    if (expected instanceof RegExp) expect(got).toMatch(expected);
    else expect(got).toBe(expected);
  });
});

describe('ClusterDriftAlerts', () => {
  const cm = (namespace: string, data: Record<string, string>, name = DRIFT_ALERTS_CONFIGMAP) => ({
    metadata: { name, namespace },
    data,
  });

  it("answers from the namespace's ConfigMap in the cache, at the clock's time", () => {
    let now = T0;
    const cache = new Map([['stores', cm('stores', recorded([[alert(), T0]]))]]);
    const alerts = new ClusterDriftAlerts(
      (ns) => cache.get(ns),
      () => now,
    );
    expect(alerts.firing('stores', 'drinks', B)?.message).toMatch(/canary revision bbbbbbbbbbbb/);
    expect(alerts.firing('other', 'drinks', B)).toBeUndefined();
    now = at(1000);
    expect(alerts.firing('stores', 'drinks', B)).toBeUndefined();
  });

  it('re-queues the models named in the ConfigMap, and those whose entries went away', () => {
    const alerts = new ClusterDriftAlerts(
      () => undefined,
      () => T0,
    );
    const both = recorded([
      [alert(), T0],
      [alert({ model: 'addons' }), T0],
    ]);
    expect(alerts.keysFor('add', cm('stores', both)).sort()).toEqual(['stores/addons', 'stores/drinks']);
    const onlyDrinks = recorded([[alert(), T0]]);
    expect(alerts.keysFor('update', cm('stores', onlyDrinks)).sort()).toEqual([
      'stores/addons',
      'stores/drinks',
    ]);
    expect(alerts.keysFor('update', cm('stores', onlyDrinks))).toEqual(['stores/drinks']);
    expect(alerts.keysFor('delete', cm('stores', onlyDrinks))).toEqual(['stores/drinks']);
    expect(alerts.keysFor('add', cm('stores', {}))).toEqual([]);
    expect(alerts.keysFor('add', cm('stores', both, 'drinks-model'))).toEqual([]);
  });
});
