import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { parseTotalsField, totalsFieldName } from '../../../contracts/experiments.js';
import { exposureTotals } from './counting.js';
import { buildTotalsSamples, ExperimentTotalsGauges, type TotalsSource } from './totals.js';

/** A TotalsSource over plain maps (the index and the hashes). */
function source(hashes: Record<string, Record<string, string>>, index = Object.keys(hashes)) {
  const forgotten: string[] = [];
  const s: TotalsSource = {
    experiments: async () => [...index],
    totals: async (ns, name, run) => hashes[`${ns}/${name}/${run}`] ?? {},
    forget: async (id) => void forgotten.push(id),
  };
  return { s, forgotten };
}

function gauges(s: TotalsSource, timeoutMs?: number) {
  const registry = new Registry();
  const failures = new Counter({
    name: 'crema_experiment_count_failures_total',
    help: 'h',
    labelNames: ['kind'],
    registers: [registry],
  });
  new Counter({
    name: 'crema_other_total',
    help: 'another metric of the scrape',
    registers: [registry],
  }).inc();
  new ExperimentTotalsGauges(registry, s, failures, timeoutMs ? { timeoutMs } : {});
  return registry;
}

const RUN = '0a1b2c3d4e5f';
const AB_RUN = `shop/ab/${RUN}`;

const AB = {
  'users|control|drinks': '3',
  'users|v2|drinks-v2': '2',
  'sum|v2|drinks-v2|orderValue|sumY': '12.5',
  'sum|v2|drinks-v2|orderValue|sumYY': '100.25',
  'not-a-field': '9',
};

describe('experiment totals', () => {
  it('field names round-trip; other shapes are refused', () => {
    const f = { kind: 'sum', variant: 'v2', model: 'm', metric: 'attachRate', stat: 'sumXY' } as const;
    expect(parseTotalsField(totalsFieldName(f))).toEqual(f);
    expect(parseTotalsField('users|v2|m')).toEqual({ kind: 'users', variant: 'v2', model: 'm' });
    expect(parseTotalsField('sum|v2|m|revenue|sumY')).toBeUndefined();
    expect(parseTotalsField('users|v2')).toBeUndefined();
  });

  it('an exposure adds the user and the covariate sums, skipping zeros', () => {
    expect(exposureTotals('v2', 'm', { conversion: 2, orderValue: 0, attachRate: 0.5 })).toEqual([
      'users|v2|m',
      '1',
      'sum|v2|m|conversion|sumX',
      '2',
      'sum|v2|m|conversion|sumXX',
      '4',
      'sum|v2|m|attachRate|sumX',
      '0.5',
      'sum|v2|m|attachRate|sumXX',
      '0.25',
    ]);
    expect(exposureTotals('v2', 'm', undefined)).toContain('sum|v2|m|orderValue|nWithoutCovariate');
  });

  it('samples carry experiment, variant, model, namespace, run (and metric, stat), never a user', () => {
    const s = buildTotalsSamples('shop', 'ab', RUN, AB);
    expect(s.users).toEqual([
      {
        labels: { experiment: 'ab', variant: 'control', model: 'drinks', namespace: 'shop', run: RUN },
        value: 3,
      },
      {
        labels: { experiment: 'ab', variant: 'v2', model: 'drinks-v2', namespace: 'shop', run: RUN },
        value: 2,
      },
    ]);
    expect(s.sums[1]).toEqual({
      labels: {
        experiment: 'ab',
        variant: 'v2',
        model: 'drinks-v2',
        namespace: 'shop',
        run: RUN,
        metric: 'orderValue',
        stat: 'sumYY',
      },
      value: 100.25,
    });
  });

  it('a scrape exports every indexed run and drops an expired or malformed entry from the index', async () => {
    const { s, forgotten } = source({
      [AB_RUN]: AB,
      'shop/ab/ffffffffffff': { 'users|control|drinks': '7' },
      'shop/old/0123456789ab': {},
      'shop/ab': { 'users|control|drinks': '9' },
    });
    const text = await gauges(s).metrics();
    expect(text).toContain(
      `crema_experiment_users{experiment="ab",variant="control",model="drinks",namespace="shop",run="${RUN}"} 3`,
    );
    // Another run of the same name: its own series.
    expect(text).toContain(
      'crema_experiment_users{experiment="ab",variant="control",model="drinks",namespace="shop",run="ffffffffffff"} 7',
    );
    expect(text).toContain(
      `crema_experiment_sums{experiment="ab",variant="v2",model="drinks-v2",namespace="shop",run="${RUN}",metric="orderValue",stat="sumY"} 12.5`,
    );
    expect(text).not.toContain('experiment="old"');
    expect(text).not.toContain('} 9\n');
    expect(forgotten.sort()).toEqual(['shop/ab', 'shop/old/0123456789ab']);
  });

  it('each scrape shows the totals as they are now', async () => {
    const hashes: Record<string, Record<string, string>> = { [AB_RUN]: { 'users|v2|m': '1' } };
    const registry = gauges(source(hashes).s);
    expect(await registry.metrics()).toContain(`variant="v2",model="m",namespace="shop",run="${RUN}"} 1\n`);
    hashes[AB_RUN] = { 'users|v2|m': '5' };
    expect(await registry.metrics()).toContain(`variant="v2",model="m",namespace="shop",run="${RUN}"} 5\n`);
    hashes[AB_RUN] = {};
    expect(await registry.metrics()).not.toContain('crema_experiment_users{');
  });

  it('a failing or hanging Redis omits the series and counts a scrape failure; the scrape still answers', async () => {
    const failing: TotalsSource = {
      experiments: async () => Promise.reject(new Error('ECONNREFUSED')),
      totals: async () => ({}),
      forget: async () => undefined,
    };
    const r1 = gauges(failing);
    const t1 = await r1.metrics();
    expect(t1).toContain('crema_other_total 1');
    expect(t1).not.toContain('crema_experiment_users{');
    // One read per scrape, shared by both gauges: one failure each (shown from the next scrape
    // on: prom-client serializes the counter while the read is still out).
    expect(await r1.metrics()).toContain('crema_experiment_count_failures_total{kind="scrape"} 1');

    const hanging: TotalsSource = { ...failing, experiments: () => new Promise(() => undefined) };
    const r2 = gauges(hanging, 50);
    const t0 = Date.now();
    const t2 = await r2.metrics();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(t2).toContain('crema_other_total 1');
    expect(t2).not.toContain('crema_experiment_sums{');
    expect(await r2.metrics()).toContain('crema_experiment_count_failures_total{kind="scrape"} 1');
  });
});
