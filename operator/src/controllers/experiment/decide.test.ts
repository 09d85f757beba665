import { describe, expect, it } from 'vitest';
import { validateRouterConfig } from '../../../../contracts/router-config.js';
import { assignVariant } from '../../../../contracts/variant-hash.js';
import {
  checkReferences,
  computeExperimentStep,
  judgeGuardrails,
  parseMaxDuration,
  type GuardrailVerdict,
} from './decide.js';
import { buildExperimentRouterConfig } from './desired.js';
import { buildP99Query, buildSumsQuery, buildUsersQuery, experimentTargetOf } from './queries.js';
import { computeExperimentStatus, endingOf, formatLift } from './status.js';
import type { Analysis } from './stats-api.js';
import type { Experiment, RecommenderModel } from './types.js';

const exp = (
  name: string,
  variants: Array<[string, string, number]>,
  extra: Partial<Experiment> = {},
): Experiment => ({
  apiVersion: 'crema.dev/v1alpha1',
  kind: 'Experiment',
  metadata: {
    name,
    namespace: 'ns',
    uid: `0a1b2c3d-4e5f-4a6b-8c7d-${Buffer.from(name).toString('hex').padEnd(12, '0').slice(0, 12)}`,
    generation: 1,
    creationTimestamp: `2026-01-01T00:00:0${name.length % 10}Z` as unknown as Date,
  },
  spec: {
    variants: variants.map(([n, modelRef, weight]) => ({ name: n, modelRef, weight })),
    assignment: { salt: 's1' },
    primaryMetric: 'conversion',
    maxDuration: '14d',
    guardrails: { p99LatencyMs: 100, errorRate: 0.02 },
    decision: { alpha: 0.05, autoPromote: true },
  },
  ...extra,
});
const model = (name: string, task = 'drink-ranking'): RecommenderModel =>
  ({
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    metadata: { name, namespace: 'ns' },
    spec: { model: { uri: `file:///${name}.onnx`, sha256: name[0]!.repeat(64), task } },
  }) as RecommenderModel;
const models = (...m: RecommenderModel[]) => new Map(m.map((x) => [x.metadata!.name!, x]));
const AB = exp('ab', [
  ['control', 'drinks', 50],
  ['v2', 'drinks-v2', 50],
]);

describe('reference checks', () => {
  it.each([
    ['all present', AB, models(model('drinks'), model('drinks-v2')), [], null],
    [
      'missing model named',
      AB,
      models(model('drinks')),
      [],
      {
        reason: 'ModelNotFound',
        message: expect.stringMatching(/variant v2: RecommenderModel drinks-v2 not found in ns/),
      },
    ],
    [
      'other task',
      AB,
      models(model('drinks'), model('drinks-v2', 'churn')),
      [],
      {
        reason: 'TaskMismatch',
        message: expect.stringMatching(/drinks-v2 has task churn, the control's \(drinks\) is drink-ranking/),
      },
    ],
    [
      'model in another running experiment',
      AB,
      models(model('drinks'), model('drinks-v2')),
      [
        {
          ...exp('other', [
            ['control', 'drinks', 50],
            ['x', 'drinks-x', 50],
          ]),
          status: { phase: 'Running' },
        },
      ],
      { reason: 'ModelClaimed', message: expect.stringMatching(/drinks is in Running experiment other/) },
    ],
    [
      'the other is not running',
      AB,
      models(model('drinks'), model('drinks-v2')),
      [
        {
          ...exp('other', [
            ['control', 'drinks', 50],
            ['x', 'drinks-x', 50],
          ]),
          status: { phase: 'Concluded' },
        },
      ],
      null,
    ],
  ] as const)('%s', (_n, e, m, others, want) => {
    expect(checkReferences({ experiment: e, models: m, others: others as unknown as Experiment[] })).toEqual(
      want,
    );
  });

  it('of two running experiments on one model the older keeps it', () => {
    const older = {
      ...exp('a', [
        ['c', 'drinks', 50],
        ['v', 'm1', 50],
      ]),
      status: { phase: 'Running' as const },
    };
    const newer = {
      ...exp('bb', [
        ['c', 'drinks', 50],
        ['v', 'm2', 50],
      ]),
      status: { phase: 'Running' as const },
    };
    const m = models(model('drinks'), model('m1'), model('m2'));
    expect(checkReferences({ experiment: older, models: m, others: [newer] })).toBeNull();
    expect(checkReferences({ experiment: newer, models: m, others: [older] })?.reason).toBe('ModelClaimed');
  });
});

const analysis = (decision: Analysis['decision'], winner?: string): Analysis => ({
  srm: { pValue: 0.4, mismatch: false },
  comparisons: [
    {
      variant: 'v2',
      lift: 0.12,
      liftInterval: [0.05, 0.2],
      statistic: 9.1,
      pValue: 0.001,
      adjustedPValue: 0.001,
      significant: decision === 'winner',
      varianceReduction: 0.3,
    },
  ],
  decision,
  ...(winner ? { winner } : {}),
  reason: decision === 'winner' ? `${winner} beats control` : 'keep collecting',
});
const ok: ReadonlyMap<string, readonly GuardrailVerdict[]> = new Map();
const now = new Date('2026-01-10T00:00:00Z');

describe('step policy', () => {
  const base = { experiment: AB, now, startedAt: '2026-01-09T00:00:00Z', guardrails: ok };
  it.each([
    ['keeps running', {}, undefined],
    [
      'winner concludes',
      { analysis: analysis('winner', 'v2') },
      { phase: 'Concluded', reason: 'Winner', winner: 'v2' },
    ],
    [
      'a guardrail breach stops, before any winner',
      {
        analysis: analysis('winner', 'v2'),
        guardrails: new Map([
          ['v2', [{ name: 'p99LatencyMs', value: 250, limit: 100, verdict: 'Breached' }]],
        ]),
      },
      {
        phase: 'Stopped',
        reason: 'GuardrailBreached',
        message: 'variant v2 (drinks-v2) breached p99LatencyMs: 250 > 100',
      },
    ],
    [
      "the control's breach does not stop",
      {
        guardrails: new Map([
          ['control', [{ name: 'errorRate', value: 0.5, limit: 0.02, verdict: 'Breached' }]],
        ]),
      },
      undefined,
    ],
    [
      'maxDuration without winner: inconclusive',
      { startedAt: '2025-12-01T00:00:00Z', analysis: analysis('continue') },
      { phase: 'Concluded', reason: 'Inconclusive' },
    ],
    [
      'manual stop beats a winner',
      { command: 'stop', analysis: analysis('winner', 'v2') },
      { phase: 'Stopped', reason: 'ManualStop' },
    ],
    [
      'manual conclude keeps the winner so far',
      { command: 'conclude', analysis: analysis('winner', 'v2') },
      { phase: 'Concluded', reason: 'ManualConclude', winner: 'v2' },
    ],
    [
      'manual conclude without one',
      { command: 'conclude', analysis: analysis('continue') },
      { phase: 'Concluded', reason: 'ManualConclude', message: expect.stringMatching(/no winner so far/) },
    ],
  ] as const)('%s', (_n, extra, want) => {
    const d = computeExperimentStep({ ...base, ...extra } as Parameters<typeof computeExperimentStep>[0]);
    if (want === undefined) expect(d.ending).toBeUndefined();
    else expect(d.ending).toMatchObject(want);
  });

  it('an ended experiment stays ended; a later command is ignored', () => {
    const ending = { phase: 'Stopped' as const, reason: 'ManualStop', message: 'x', at: 't' };
    expect(
      computeExperimentStep({ ...base, ending, command: 'conclude', analysis: analysis('winner', 'v2') }),
    ).toEqual({
      ending,
      endsNow: false,
      commandIgnored: true,
    });
  });

  it('guardrails: breach, pass, no data; unset limits are not judged', () => {
    expect(
      judgeGuardrails({ p99LatencyMs: 100, errorRate: 0.02 }, { requests: 10, p99Ms: 120, errorRate: 0 }),
    ).toEqual([
      { name: 'p99LatencyMs', value: 120, limit: 100, verdict: 'Breached' },
      { name: 'errorRate', value: 0, limit: 0.02, verdict: 'Pass' },
    ]);
    expect(judgeGuardrails({ p99LatencyMs: 100 }, { requests: 0 })).toEqual([
      { name: 'p99LatencyMs', limit: 100, verdict: 'NoData' },
    ]);
    expect(parseMaxDuration('14d')).toBe(14 * 86_400_000);
    expect(() => parseMaxDuration('2w')).toThrow(/maxDuration "2w"/);
  });
});

describe('router config of an experiment', () => {
  it("splits by the spec's weights to each model's stable Service; all to the control otherwise", () => {
    const c = buildExperimentRouterConfig(AB, true);
    expect(validateRouterConfig(c)).toEqual([]);
    expect(c).toEqual({
      salt: 's1',
      stable: 'control',
      variants: [
        { name: 'control', weight: 50, upstream: 'http://drinks-stable.ns.svc:80' },
        { name: 'v2', weight: 50, upstream: 'http://drinks-v2-stable.ns.svc:80' },
      ],
      experiment: { id: 'ns/ab', run: '0a1b2c3d4e5f', ttlSeconds: 14 * 86_400 },
    });
    // A re-created Experiment (same name, new uid) is another run.
    const again = { ...AB, metadata: { ...AB.metadata, uid: 'FEDCBA98-7654-4321-8000-000000000000' } };
    expect(buildExperimentRouterConfig(again, true).experiment?.run).toBe('fedcba987654');
    expect(buildExperimentRouterConfig(AB, false).variants.map((v) => v.weight)).toEqual([100, 0]);
    // The router and any other component assign the same user to the same variant.
    const users = Array.from({ length: 2000 }, (_, i) => `u${i}`);
    const share = users.filter((u) => assignVariant(u, c.salt, c.variants) === 'v2').length / users.length;
    expect(share).toBeGreaterThan(0.45);
    expect(share).toBeLessThan(0.55);
  });

  it("queries select the experiment, its namespace and this object's run, never a user", () => {
    const t = experimentTargetOf(AB, '5m');
    expect(t).toEqual({
      namespace: 'ns',
      name: 'ab',
      run: '0a1b2c3d4e5f',
      models: ['drinks', 'drinks-v2'],
      window: '5m',
    });
    // An earlier Experiment of the same name (another run) still exported until its totals
    // expire is never read.
    expect(buildUsersQuery(t)).toBe(
      'sum by (variant) (max by (variant, model) (crema_experiment_users{experiment="ab",namespace="ns",run="0a1b2c3d4e5f"}))',
    );
    expect(buildSumsQuery(t)).toBe(
      'sum by (variant, metric, stat) (max by (variant, metric, stat, model) (crema_experiment_sums{experiment="ab",namespace="ns",run="0a1b2c3d4e5f"}))',
    );
    expect(() => experimentTargetOf({ ...AB, metadata: { ...AB.metadata, uid: 'uid-ab' } }, '5m')).toThrow(
      /metadata.uid/,
    );
    expect(buildP99Query(t)).toBe(
      'histogram_quantile(0.99, sum by (model, le) (rate(crema_http_request_duration_seconds_bucket{namespace="ns",model=~"drinks|drinks-v2",route=~"/v1/.+"}[5m]))) * 1000',
    );
  });
});

describe('status', () => {
  const sums = (n: number, conv: number) => ({
    conversion: { n, sumY: conv, sumYY: conv },
    orderValue: { n, sumY: conv * 6, sumYY: conv * 40 },
    attachRate: { n, sumY: conv / 2, sumYY: conv / 2 },
  });
  const input = {
    experiment: AB,
    now,
    problem: null,
    splitting: true,
    startedAt: '2026-01-09T00:00:00Z',
    looked: true,
    sums: new Map([
      ['control', sums(1000, 100)],
      ['v2', sums(1000, 130)],
    ]),
    analysis: analysis('winner', 'v2'),
  };
  it('a person can audit the numbers; phase from conditions; an awaiting winner is said', () => {
    const noAuto = { ...AB, spec: { ...AB.spec, decision: { autoPromote: false } } };
    const s = computeExperimentStatus({
      ...input,
      experiment: noAuto,
      ending: {
        phase: 'Concluded',
        reason: 'Winner',
        message: 'v2 beats control',
        winner: 'v2',
        at: now.toISOString(),
      },
    });
    expect(s.phase).toBe('Concluded');
    expect(s.winner).toBe('v2');
    expect(s.lift).toBe('+12.0% [+5.0%, +20.0%]');
    expect(s.variants?.[1]).toMatchObject({
      name: 'v2',
      exposures: 1000,
      conversions: 130,
      conversionRate: 0.13,
      meanOrderValue: 0.78,
      lift: 0.12,
      significant: true,
    });
    expect(s.conditions?.find((c) => c.type === 'WinnerAwaitsPromotion')).toMatchObject({
      status: 'True',
      message: expect.stringMatching(/a person promotes its model \(drinks-v2\) to drinks/),
    });
    expect(endingOf({ ...noAuto, status: s })).toMatchObject({ phase: 'Concluded', winner: 'v2' });
  });
  it('an invalid experiment is Pending and says why, and that traffic is not split', () => {
    const s = computeExperimentStatus({
      experiment: AB,
      now,
      problem: { reason: 'ModelNotFound', message: 'variant v2: RecommenderModel drinks-v2 not found in ns' },
      splitting: false,
      looked: false,
    });
    expect(s.phase).toBe('Pending');
    expect(s.conditions?.find((c) => c.type === 'Valid')).toMatchObject({
      status: 'False',
      reason: 'ModelNotFound',
      message: expect.stringMatching(/not found in ns; traffic is not split/),
    });
  });
  it('SRM raises a condition', () => {
    const s = computeExperimentStatus({
      ...input,
      analysis: { ...analysis('blocked'), srm: { pValue: 1e-6, mismatch: true } },
    });
    expect(s.phase).toBe('Running');
    expect(s.conditions?.find((c) => c.type === 'SampleRatioMismatch')?.status).toBe('True');
    expect(formatLift(-0.01, -0.05, 0.02)).toBe('-1.0% [-5.0%, +2.0%]');
  });
});
