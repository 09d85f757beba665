import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { RecommenderModel } from '../api/v1alpha1/recommendermodel.js';
import { buildDriftRules, computeDriftFor } from './rules.js';

const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);

function model(
  name: string,
  patch: Partial<RecommenderModel> = {},
  drift: RecommenderModel['spec']['drift'] = {},
): RecommenderModel {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    metadata: { name, namespace: 'shop' },
    spec: { model: { uri: 'file:///m.onnx', sha256: SHA_A, task: 'drink-ranking' }, drift },
    ...patch,
  } as RecommenderModel;
}

interface Rule {
  alert: string;
  expr: string;
  for: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
const groupsOf = (yaml: string) => (parse(yaml) as { groups: { name: string; rules: Rule[] }[] }).groups;

describe('computeDriftFor', () => {
  it.each([
    ['1h', '300s'],
    ['6h', '300s'],
    ['10m', '60s'],
    ['1m', '6s'],
    ['10s', '1s'],
    ['5s', '0s'],
  ])('window %s → for %s', (window, want) => expect(computeDriftFor(window)).toBe(want));
});

describe('buildDriftRules', () => {
  it('renders one stable rule with the threshold, labels and a summary', () => {
    const [group, ...rest] = groupsOf(
      buildDriftRules([model('drinks', {}, { psiThreshold: 0.25, window: '10m' })]),
    );
    expect(rest).toEqual([]);
    expect(group!.name).toBe('crema-drift/shop/drinks');
    expect(group!.rules).toEqual([
      {
        alert: 'CremaFeatureDrift',
        expr: `max by (model, revision, feature) (crema_feature_drift_psi{model="drinks",namespace="shop",revision="${SHA_A}"}) > 0.25`,
        for: '60s',
        labels: {
          namespace: 'shop',
          crema_model: 'drinks',
          variant: 'stable',
          severity: 'warning',
          crema_action: 'Alert',
        },
        annotations: expect.objectContaining({ value: '{{ $value }}' }) as Record<string, string>,
      },
    ]);
    expect(group!.rules[0]!.annotations['summary']).toContain(
      'shop/drinks (stable, revision aaaaaaaaaaaa) drifted',
    );
  });

  it('adds a critical canary rule while status shows a canary revision', () => {
    const m = model('drinks', {
      status: { stable: { modelSha: SHA_A }, canary: { modelSha: SHA_B, weight: 5 } },
    });
    m.spec.model.sha256 = SHA_B;
    const rules = groupsOf(buildDriftRules([m]))[0]!.rules;
    expect(
      rules.map((r) => [r.labels['variant'], r.labels['severity'], /revision="(\w+)"/.exec(r.expr)?.[1]]),
    ).toEqual([
      ['stable', 'warning', SHA_A],
      ['canary', 'critical', SHA_B],
    ]);
  });

  it('uses the CRD defaults (0.2, 1h → 5 minutes) and restricts to the listed features', () => {
    const rules = groupsOf(
      buildDriftRules([model('drinks', {}, { features: ['hour', 'temp.c'], action: 'Rollback' })]),
    )[0]!.rules;
    expect(rules[0]!.expr).toBe(
      `max by (model, revision, feature) (crema_feature_drift_psi{model="drinks",namespace="shop",revision="${SHA_A}",feature=~"hour|temp\\\\.c"}) > 0.2`,
    );
    expect(rules[0]!.for).toBe('300s');
    expect(rules[0]!.labels).toMatchObject({ severity: 'critical', crema_action: 'Rollback' });
  });

  it('skips models without spec.drift and orders groups by namespace/name', () => {
    const noDrift = model('zzz');
    delete noDrift.spec.drift;
    const other = model('coffee');
    other.metadata!.namespace = 'alpha';
    const names = groupsOf(buildDriftRules([model('drinks'), noDrift, other])).map((g) => g.name);
    expect(names).toEqual(['crema-drift/alpha/coffee', 'crema-drift/shop/drinks']);
  });

  it('selects its own namespace, so a same-named model at the same revision elsewhere raises no alert here', () => {
    const staging = model('drinks');
    staging.metadata!.namespace = 'shop-staging';
    const exprs = Object.fromEntries(
      groupsOf(buildDriftRules([model('drinks'), staging])).map((g) => [g.name, g.rules[0]!.expr]),
    );
    expect(exprs).toEqual({
      'crema-drift/shop/drinks': expect.stringContaining(
        '{model="drinks",namespace="shop",revision=',
      ) as string,
      'crema-drift/shop-staging/drinks': expect.stringContaining(
        '{model="drinks",namespace="shop-staging",revision=',
      ) as string,
    });
  });

  it('renders an empty rule file for no models', () => {
    expect(groupsOf(buildDriftRules([]))).toEqual([]);
  });
});
