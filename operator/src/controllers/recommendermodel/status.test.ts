import { describe, expect, it } from 'vitest';
import { computeRolloutStep, type RolloutDecision } from '../../rollout/machine.js';
import {
  computeStatus,
  derivePhase,
  rolloutStateOf,
  runsEverywhere,
  setCondition,
  type ObservedDeployment,
  type StatusInput,
} from './status.js';
import type { Condition, RecommenderModel } from './types.js';
import { parse } from 'yaml';
import { buildRecommenderModelYaml } from '../../../../feature-jobs/src/train/artifacts.js';

const T0 = new Date('2026-11-24T06:00:00Z');
const T1 = new Date('2026-11-24T06:05:00Z');
const SHA1 = '1'.repeat(64);
const SHA2 = '2'.repeat(64);

function model(sha = SHA1, status?: RecommenderModel['status']): RecommenderModel {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    metadata: { name: 'drinks', namespace: 'ns', generation: 3 },
    spec: { model: { uri: 'file:///m.onnx', sha256: sha, task: 'drink-ranking' } },
    ...(status ? { status } : {}),
  } as RecommenderModel;
}

const deploy = (over: Partial<ObservedDeployment> = {}): ObservedDeployment => ({
  generation: 2,
  observedGeneration: 2,
  replicas: 2,
  updatedReplicas: 2,
  readyReplicas: 2,
  availableReplicas: 2,
  modelSha: SHA1,
  ...over,
});

const cond = (s: { conditions?: Condition[] }, t: string) => s.conditions?.find((c) => c.type === t);

/** The rollout decision the reconcile would take for `m` (no steps: a new digest replaces stable). */
function decide(m: RecommenderModel, now: Date): RolloutDecision {
  return computeRolloutStep({
    spec: {
      modelSha: m.spec.model.sha256,
      uri: m.spec.model.uri,
      steps: [],
      analysisConfigured: false,
      failureLimit: 2,
      analysisIntervalMs: 60_000,
      paused: false,
    },
    state: rolloutStateOf(m),
    observed: { stableReadyReplicas: 2, canaryReadyReplicas: 0 },
    now,
  });
}

/** computeStatus with the decision filled in. */
const status = (i: Omit<StatusInput, 'rollout'>) => computeStatus({ ...i, rollout: decide(i.model, i.now) });

describe('computeStatus', () => {
  it.each([
    ['no Deployment yet', undefined, undefined, 'Progressing', 'False', 'DeploymentMissing'],
    ['rolling out', deploy({ updatedReplicas: 1 }), undefined, 'Progressing', 'False', 'RollingOut'],
    [
      'old digest still on the pods',
      deploy({ modelSha: SHA2 }),
      undefined,
      'Progressing',
      'False',
      'RollingOut',
    ],
    ['no ready pods', deploy({ readyReplicas: 0 }), undefined, 'Progressing', 'False', 'WaitingForReplicas'],
    ['serving', deploy(), undefined, 'Ready', 'True', 'Serving'],
    [
      'deadline exceeded',
      deploy({
        readyReplicas: 0,
        conditions: [
          { type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded', message: 'slow' },
        ],
      }),
      undefined,
      'Degraded',
      'False',
      'ProgressDeadlineExceeded',
    ],
    ['apply failed', deploy(), 'applying Service: 422 Invalid', 'Degraded', 'False', 'ApplyFailed'],
  ] as const)('%s → phase %s, Ready=%s (%s)', (_n, d, applyError, phase, ready, reason) => {
    const s = status({
      model: model(),
      deployment: d,
      ...(applyError ? { applyError } : {}),
      now: T0,
    });
    expect(s.phase).toBe(phase);
    expect(cond(s, 'Ready')).toMatchObject({ status: ready, reason, observedGeneration: 3 });
    expect(s.observedGeneration).toBe(3);
  });

  it.each([
    [
      'a model the stable pods cannot fetch',
      {
        podProblems: {
          stable: { reason: 'ModelFetchFailed', message: 'pod p: model uri http://m/x.onnx: HTTP 404' },
        },
      },
      'ModelFetchFailed',
      'ModelFetchFailed',
    ],
    [
      'no Redis address',
      { configProblem: { reason: 'RedisNotConfigured', message: 'no Redis address' } },
      'RedisNotConfigured',
      'RedisNotConfigured',
    ],
    [
      'a canary image that cannot be pulled (stable still serves)',
      { podProblems: { canary: { reason: 'ImagePullFailed', message: 'canary: image x cannot be pulled' } } },
      'ImagePullFailed',
      'WaitingForReplicas',
    ],
  ] as const)('%s → Degraded %s, Ready reason %s', (_n, extra, degraded, readyReason) => {
    const s = status({ model: model(), deployment: deploy({ readyReplicas: 0 }), ...extra, now: T0 });
    expect(s.phase).toBe('Degraded');
    expect(cond(s, 'Degraded')).toMatchObject({ status: 'True', reason: degraded });
    expect(cond(s, 'Ready')).toMatchObject({ status: 'False', reason: readyReason });
    if (degraded === 'ModelFetchFailed') expect(cond(s, 'Ready')?.message).toContain('http://m/x.onnx');
  });

  it('computes the same status twice from the same world (so nothing is written)', () => {
    const first = status({ model: model(), deployment: deploy(), now: T0 });
    const again = status({ model: model(SHA1, first), deployment: deploy(), now: T1 });
    expect(again).toEqual(first);
  });

  it('starts revision 2 on a new digest and moves revision 1 into history', () => {
    const first = status({ model: model(), deployment: deploy(), now: T0 });
    const next = status({ model: model(SHA2, first), deployment: deploy(), now: T1 });
    expect(next.stable).toEqual({
      modelSha: SHA2,
      uri: 'file:///m.onnx',
      revision: 2,
      since: T1.toISOString(),
    });
    expect(next.history).toEqual([
      expect.objectContaining({
        revision: 1,
        modelSha: SHA1,
        endedAt: T1.toISOString(),
        reason: expect.stringMatching(/Superseded/),
      }),
    ]);
    expect(next.phase).toBe('Progressing'); // the pods still carry SHA1
  });

  it('copies lineage from the resource training generates', () => {
    // The manifest the training job writes, not annotations typed here: the two sides once
    // used different keys and a test with the operator's own key could not see it.
    const meta = {
      name: 'm',
      task: 'churn',
      sha256: SHA1,
      featureSchemaVersion: 1,
      metrics: {},
      lineage: {
        datasetHash: 'abc',
        featureJobVersion: 'fj-1',
        gitCommit: 'deadbeef',
        trainedAt: T0.toISOString(),
      },
    } as unknown as Parameters<typeof buildRecommenderModelYaml>[0];
    const generated = parse(
      buildRecommenderModelYaml(meta, 'http://x/m.onnx', 'http://x/m.meta.json'),
    ) as RecommenderModel;
    const m = model();
    m.metadata!.annotations = generated.metadata!.annotations;
    expect(status({ model: m, deployment: deploy(), now: T0 }).lineage).toEqual({
      datasetHash: 'abc',
      featureJobVersion: 'fj-1',
      codeVersion: 'deadbeef',
    });
  });

  it('still reads the older code-version annotation', () => {
    const m = model();
    m.metadata!.annotations = { 'crema.dev/code-version': 'cafe' };
    expect(status({ model: m, deployment: deploy(), now: T0 }).lineage).toEqual({ codeVersion: 'cafe' });
  });
});

describe('conditions', () => {
  it('keeps lastTransitionTime while the status stays, moves it on a change', () => {
    const a = setCondition([], { type: 'Ready', status: 'False', reason: 'X' }, T0);
    const b = setCondition(a, { type: 'Ready', status: 'False', reason: 'Y' }, T1);
    const c = setCondition(b, { type: 'Ready', status: 'True', reason: 'Z' }, T1);
    expect(b[0]!.lastTransitionTime).toBe(T0.toISOString());
    expect(c[0]!.lastTransitionTime).toBe(T1.toISOString());
  });

  it.each([
    [[], 'Pending'],
    [[{ type: 'Progressing', status: 'True' }], 'Progressing'],
    [
      [
        { type: 'Ready', status: 'True' },
        { type: 'Progressing', status: 'True' },
      ],
      'Ready',
    ],
    [
      [
        { type: 'Ready', status: 'True' },
        { type: 'Degraded', status: 'True' },
      ],
      'Degraded',
    ],
    [
      [
        { type: 'Degraded', status: 'True' },
        { type: 'RolledBack', status: 'True' },
      ],
      'Degraded',
    ],
    [
      [
        { type: 'Ready', status: 'True' },
        { type: 'RolledBack', status: 'True' },
      ],
      'RolledBack',
    ],
    [
      [
        { type: 'RolledBack', status: 'True' },
        { type: 'Progressing', status: 'True', reason: 'Canary' },
      ],
      'Progressing',
    ],
  ] as const)('phase of %j is %s', (conds, phase) => {
    expect(derivePhase(conds as unknown as Condition[])).toBe(phase);
  });
});

describe('runsEverywhere (a promotion ends only when every stable pod runs the promoted model)', () => {
  it.each([
    ['every pod updated, ready and available', deploy(), true],
    ['the template still names the old model', deploy({ modelSha: SHA2 }), false],
    ['the controller has not seen the new spec yet', deploy({ generation: 3 }), false],
    ['a pod of the old template is left', deploy({ replicas: 3 }), false],
    ['an updated pod is not ready yet', deploy({ readyReplicas: 1 }), false],
    [
      'no pod at all',
      deploy({ replicas: 0, updatedReplicas: 0, readyReplicas: 0, availableReplicas: 0 }),
      false,
    ],
  ])('%s → %s', (_n, d, expected) => {
    expect(runsEverywhere(d, SHA1)).toBe(expected);
  });

  it('status keeps the promotion (restart-safe) and Progressing says what it waits for', () => {
    const promotion = {
      modelSha: SHA2,
      uri: 'file:///m2.onnx',
      revision: 2,
      startedAt: T0.toISOString(),
      weight: 60,
    };
    const m = model(SHA2, {
      stable: { modelSha: SHA2, uri: 'file:///m2.onnx', revision: 2, since: T0.toISOString() },
      promotion,
    });
    expect(rolloutStateOf(m).promotion).toEqual(promotion);
    const decision = computeRolloutStep({
      spec: {
        modelSha: SHA2,
        uri: 'file:///m2.onnx',
        steps: [{ weight: 60 }],
        analysisConfigured: false,
        failureLimit: 2,
        analysisIntervalMs: 60_000,
        paused: false,
      },
      state: rolloutStateOf(m),
      observed: { stableReadyReplicas: 2, canaryReadyReplicas: 1, stableRolledOut: false },
      now: T1,
    });
    const status = computeStatus({
      model: m,
      deployment: deploy({ updatedReplicas: 1, modelSha: SHA2 }),
      rollout: decision,
      now: T1,
    });
    expect(status.promotion).toEqual(promotion);
    expect(cond(status, 'Progressing')).toMatchObject({ status: 'True', reason: 'Promoting' });
    expect(status.phase).toBe('Progressing');
  });
});

describe('status during a StoreRegion freeze', () => {
  const until = new Date('2026-11-24T10:00:00Z');
  const freeze = { name: 'west/freezeWindows[0] 07:00-10:00 America/Los_Angeles', until };
  const canaryStatus = {
    stable: { modelSha: SHA1, revision: 1, since: T0.toISOString() },
    canary: { modelSha: SHA2, revision: 2, step: 0, weight: 20, stepStartedAt: T0.toISOString() },
  };
  const decideCanary = (m: RecommenderModel, f?: typeof freeze) =>
    computeRolloutStep({
      spec: {
        modelSha: SHA2,
        uri: 'file:///m.onnx',
        steps: [
          { weight: 20, pause: '1m' },
          { weight: 100, pause: '1m' },
        ],
        analysisConfigured: false,
        failureLimit: 2,
        analysisIntervalMs: 60_000,
        paused: false,
      },
      state: rolloutStateOf(m),
      observed: { stableReadyReplicas: 2, canaryReadyReplicas: 1 },
      ...(f ? { freeze: f } : {}),
      now: T1,
    });

  it('a held canary: phase Frozen, Frozen condition with the window and its end, status.freeze', () => {
    const m = model(SHA2, canaryStatus);
    const s = computeStatus({
      model: m,
      deployment: deploy(),
      rollout: decideCanary(m, freeze),
      freeze,
      now: T1,
    });
    expect(s.phase).toBe('Frozen');
    expect(s.freeze).toEqual({ window: freeze.name, until: '2026-11-24T10:00:00.000Z' });
    expect(cond(s, 'Frozen')).toMatchObject({ status: 'True', reason: 'RolloutHeld' });
    expect(cond(s, 'Frozen')?.message).toMatch(
      /^rollout held until 2026-11-24T10:00:00.000Z: StoreRegion freeze window west\/freezeWindows\[0\]/,
    );
    expect(s.canary).toMatchObject({ step: 0, weight: 20 });
  });

  it('nothing to hold: Ready, and Frozen says a new revision would wait', () => {
    const m = model(SHA1, { stable: { modelSha: SHA1, revision: 1, since: T0.toISOString() } });
    const s = computeStatus({ model: m, deployment: deploy(), rollout: decide(m, T1), freeze, now: T1 });
    expect(s.phase).toBe('Ready');
    expect(cond(s, 'Frozen')).toMatchObject({ status: 'True', reason: 'FreezeWindow' });
  });

  it('after the freeze: Frozen turns False and status.freeze goes; a model never frozen has no Frozen condition', () => {
    const m = model(SHA2, canaryStatus);
    const frozen = computeStatus({
      model: m,
      deployment: deploy(),
      rollout: decideCanary(m, freeze),
      freeze,
      now: T1,
    });
    const m2 = model(SHA2, frozen);
    const after = computeStatus({ model: m2, deployment: deploy(), rollout: decideCanary(m2), now: T1 });
    expect(after.freeze).toBeUndefined();
    expect(cond(after, 'Frozen')).toMatchObject({ status: 'False', reason: 'NoFreeze' });
    expect(after.phase).toBe('Progressing');
    const never = computeStatus({ model: m, deployment: deploy(), rollout: decideCanary(m), now: T1 });
    expect(cond(never, 'Frozen')).toBeUndefined();
  });
});
