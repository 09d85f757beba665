import { describe, expect, it } from 'vitest';
import {
  analysisDue,
  computeRolloutStep,
  parseDuration,
  ROLLOUT_CHECK_NAMES,
  type CanaryState,
  type RolloutCheckName,
  type RolloutInput,
  type RolloutState,
} from './machine.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const T0 = new Date('2026-11-24T10:00:00Z');
const at = (s: number) => new Date(T0.getTime() + s * 1000);

const stable: RolloutState['stable'] = {
  modelSha: A,
  uri: 'file:///a.onnx',
  revision: 1,
  since: T0.toISOString(),
};
const steps = [
  { weight: 5, pause: '30s' },
  { weight: 50, pause: '30s' },
  { weight: 100, pause: '10s' },
];

function input(
  over: Partial<RolloutInput> & {
    canary?: Partial<CanaryState> | null;
    specOver?: Partial<RolloutInput['spec']>;
  } = {},
): RolloutInput {
  const { canary, specOver, ...rest } = over;
  return {
    spec: {
      modelSha: B,
      uri: 'file:///b.onnx',
      steps,
      analysisConfigured: false,
      failureLimit: 1,
      analysisIntervalMs: 60_000,
      paused: false,
      ...specOver,
    },
    state: {
      stable,
      history: [],
      ...(canary === null || canary === undefined
        ? {}
        : {
            canary: {
              modelSha: B,
              uri: 'file:///b.onnx',
              revision: 2,
              startedAt: T0.toISOString(),
              step: 0,
              weight: 5,
              stepStartedAt: T0.toISOString(),
              failures: 0,
              analysis: [],
              ...canary,
            },
          }),
    },
    observed: { stableReadyReplicas: 2, canaryReadyReplicas: 1 },
    now: at(1),
    ...rest,
  };
}

describe('computeRolloutStep', () => {
  it('makes the first revision stable directly', () => {
    const d = computeRolloutStep({ ...input(), state: { history: [] } });
    expect(d.state.stable).toMatchObject({ modelSha: B, revision: 1 });
    expect(d.state.canary).toBeUndefined();
  });

  it('replaces stable at once when the spec has no steps', () => {
    const d = computeRolloutStep(input({ specOver: { steps: [] } }));
    expect(d.state.stable).toMatchObject({ modelSha: B, revision: 2 });
    expect(d.state.history[0]).toMatchObject({
      revision: 1,
      modelSha: A,
      reason: 'Superseded by revision 2',
    });
  });

  it('starts a canary at weight 0 and waits for a ready canary pod before sending traffic', () => {
    const d = computeRolloutStep(input({ observed: { stableReadyReplicas: 2, canaryReadyReplicas: 0 } }));
    expect(d.state.canary).toMatchObject({ modelSha: B, revision: 2, step: 0, weight: 0 });
    expect(d.canaryWeight).toBe(0);
    expect(d.waiting).toMatch(/ready canary pod/);
    expect(d.notices.map((n) => n.reason)).toEqual(['CanaryStarted']);
  });

  it('sets the first step weight once the canary is ready, and its pause starts then', () => {
    const d = computeRolloutStep(input({ canary: { weight: 0, stepStartedAt: undefined } }));
    expect(d.canaryWeight).toBe(5);
    expect(d.state.canary?.stepStartedAt).toBe(at(1).toISOString());
    expect(d.waiting).toMatch(/pauses 30s \(30 s left\)/);
    expect(d.requeueAfterMs).toBe(30_000);
  });

  it.each([
    ['before the pause ends it holds', 29, 0, 5],
    ['after the pause it moves to the next step', 31, 1, 50],
  ])('%s', (_n, seconds, step, weight) => {
    const d = computeRolloutStep(input({ canary: {}, now: at(seconds) }));
    expect(d.state.canary).toMatchObject({ step, weight });
  });

  it('promotes after the last step: canary becomes stable, old stable goes to history', () => {
    const d = computeRolloutStep(input({ canary: { step: 2, weight: 100 }, now: at(11) }));
    expect(d.state.canary).toBeUndefined();
    expect(d.state.stable).toMatchObject({ modelSha: B, revision: 2, uri: 'file:///b.onnx' });
    expect(d.state.history[0]).toMatchObject({
      revision: 1,
      reason: expect.stringMatching(/Replaced by revision 2/),
    });
    // The canary pods keep their share until every stable pod runs revision 2.
    expect(d.state.promotion).toMatchObject({ modelSha: B, revision: 2, weight: 100 });
    expect(d.canaryWeight).toBe(100);
    expect(d.notices.map((n) => n.reason)).toContain('Promoted');
  });

  describe('a promotion in progress', () => {
    const promoting = (over: Partial<RolloutInput> = {}): RolloutInput => {
      const base = input({ specOver: { modelSha: B } });
      return {
        ...base,
        state: {
          stable: { modelSha: B, uri: 'file:///b.onnx', revision: 2, since: at(11).toISOString() },
          promotion: {
            modelSha: B,
            uri: 'file:///b.onnx',
            revision: 2,
            startedAt: at(11).toISOString(),
            weight: 50,
          },
          history: [],
        },
        now: at(15),
        ...over,
      };
    };
    it('keeps the canary pods at their share until every stable pod runs the promoted model', () => {
      const d = computeRolloutStep(
        promoting({ observed: { stableReadyReplicas: 2, canaryReadyReplicas: 1, stableRolledOut: false } }),
      );
      expect(d.state.promotion).toMatchObject({ revision: 2, weight: 50 });
      expect(d.canaryWeight).toBe(50);
      expect(d.waiting).toMatch(/every stable pod runs it/);
      expect(d.requeueAfterMs).toBeGreaterThan(0);
    });
    it('ends once they do: all traffic to stable', () => {
      const d = computeRolloutStep(
        promoting({ observed: { stableReadyReplicas: 2, canaryReadyReplicas: 1, stableRolledOut: true } }),
      );
      expect(d.state.promotion).toBeUndefined();
      expect(d.state.stable?.revision).toBe(2);
      expect(d.canaryWeight).toBe(0);
      expect(d.notices.map((n) => n.reason)).toEqual(['PromotionComplete']);
    });
    it('finishes before a new spec.model starts a canary', () => {
      const d = computeRolloutStep(
        promoting({
          spec: { ...promoting().spec, modelSha: 'c'.repeat(64), uri: 'file:///c.onnx' },
          observed: { stableReadyReplicas: 2, canaryReadyReplicas: 1, stableRolledOut: false },
        }),
      );
      expect(d.state.canary).toBeUndefined();
      expect(d.state.promotion?.revision).toBe(2);
    });
    it('a command meanwhile is ignored, and says why', () => {
      const d = computeRolloutStep(promoting({ command: 'abort' }));
      expect(d.command).toEqual({
        outcome: 'ignored',
        message: 'crema.dev/abort ignored: revision 2 is already promoted (its pods are rolling out)',
      });
    });
    it('a stable drift rollback ends it', () => {
      const d = computeRolloutStep(
        promoting({
          state: {
            ...promoting().state,
            history: [
              {
                revision: 1,
                modelSha: A,
                uri: 'file:///a.onnx',
                track: 'stable',
                startedAt: T0.toISOString(),
                endedAt: at(11).toISOString(),
                reason: 'Replaced',
              },
            ],
          },
          stableDrift: { message: 'psi 0.4' },
          driftAction: 'Rollback',
        }),
      );
      expect(d.state.promotion).toBeUndefined();
      expect(d.state.stable?.modelSha).toBe(A);
    });
  });

  it('holds promotion inside a StoreRegion freeze window', () => {
    const d = computeRolloutStep(
      input({ canary: { step: 2, weight: 100 }, now: at(11), freeze: { name: 'morning-rush' } }),
    );
    expect(d.state.canary).toMatchObject({ step: 2 });
    expect(d.waiting).toMatch(/freeze window morning-rush/);
  });

  describe('a StoreRegion freeze holds the canary where it is (ADR 0014)', () => {
    const until = at(600);
    const freeze = { name: 'r/freezeWindows[0] 07:00-10:00 UTC', until };
    const gatedSpec = { analysisConfigured: true, analysisIntervalMs: 60_000 };
    const pass = { verdict: 'Pass' as const, message: 'ok', at: at(40).toISOString() };

    // [case, input without the freeze]: each would move forward without it, and does not with it.
    const forward: [string, RolloutInput][] = [
      ['a step past its pause', input({ canary: {}, now: at(31) })],
      [
        'the last step past its pause (a promotion)',
        input({ canary: { step: 2, weight: 100 }, now: at(11) }),
      ],
      [
        'a canary that just became ready (weight 0 to the step weight)',
        input({ canary: { weight: 0, stepStartedAt: undefined } }),
      ],
      ['promote=step', input({ canary: {}, command: 'promote-step' })],
      ['promote=step on the last step', input({ canary: { step: 2, weight: 100 }, command: 'promote-step' })],
      ['promote=full', input({ canary: {}, command: 'promote-full' })],
      [
        'a gated step with a passing analysis past its pause',
        input({ canary: {}, now: at(41), specOver: gatedSpec, analysis: pass }),
      ],
    ];
    it.each(forward)('%s: moves without a freeze, holds with one', (_, i) => {
      const free = computeRolloutStep(i);
      const moved =
        free.state.stable?.modelSha === B ||
        free.state.canary?.step !== i.state.canary?.step ||
        free.canaryWeight > (i.state.canary?.weight ?? 0);
      expect(moved).toBe(true);
      const held = computeRolloutStep({ ...i, freeze });
      expect(held.state.stable?.modelSha).toBe(A);
      expect(held.state.canary?.step).toBe(i.state.canary?.step);
      expect(held.canaryWeight).toBe(i.state.canary?.weight);
      expect(held.heldByFreeze).toBe(true);
      expect(held.waiting).toMatch(
        /frozen until 2026-11-24T10:10:00.000Z: StoreRegion freeze window r\/freezeWindows\[0\]/,
      );
      expect(held.notices.filter((n) => n.reason === 'StepStarted' || n.reason === 'Promoted')).toEqual([]);
      if (i.command) expect(held.command?.outcome).toBe('held');
    });

    it('a new revision without rollout steps waits for the end of the freeze', () => {
      const i = input({ specOver: { steps: [] } });
      expect(computeRolloutStep(i).state.stable?.modelSha).toBe(B);
      const held = computeRolloutStep({ ...i, freeze });
      expect(held.state.stable?.modelSha).toBe(A);
      expect(held.heldByFreeze).toBe(true);
      expect(held.requeueAfterMs).toBe(599_000);
    });

    // [case, input with the freeze, what must still happen]
    const safer: [string, RolloutInput, (d: ReturnType<typeof computeRolloutStep>) => void][] = [
      [
        'abort',
        input({ canary: { step: 1, weight: 50 }, command: 'abort', freeze }),
        (d) => expect(d.rolledBack?.reason).toBe('Aborted'),
      ],
      [
        'a drift alert on the canary',
        input({ canary: { step: 1, weight: 50 }, canaryDrift: { message: 'psi 0.4' }, freeze }),
        (d) => expect(d.rolledBack?.reason).toBe('DriftDetected'),
      ],
      [
        'a failed analysis past the limit',
        input({
          canary: { failures: 1 },
          specOver: gatedSpec,
          analysis: { verdict: 'Fail', message: 'error rate 4%', at: at(1).toISOString() },
          freeze,
        }),
        (d) => expect(d.rolledBack?.reason).toBe('AnalysisFailed'),
      ],
      [
        'the canary losing its ready pods (weight to 0)',
        input({
          canary: { step: 1, weight: 50 },
          observed: { stableReadyReplicas: 2, canaryReadyReplicas: 0 },
          freeze,
        }),
        (d) => expect(d.canaryWeight).toBe(0),
      ],
      [
        'spec.model back to stable (the canary is cancelled)',
        input({ canary: { step: 1, weight: 50 }, specOver: { modelSha: A }, freeze }),
        (d) => expect(d.state.canary).toBeUndefined(),
      ],
      [
        'stable drift with action Rollback',
        {
          ...input({
            canary: null,
            freeze,
            stableDrift: { message: 'psi' },
            driftAction: 'Rollback',
            specOver: { modelSha: A },
          }),
          state: {
            stable: { ...stable!, modelSha: A, revision: 2 },
            history: [
              {
                revision: 1,
                modelSha: 'c'.repeat(64),
                uri: 'file:///c.onnx',
                track: 'stable',
                startedAt: '',
                endedAt: '',
                reason: '',
              },
            ],
          },
        },
        (d) => expect(d.rolledBack?.reason).toBe('DriftDetected'),
      ],
    ];
    it.each(safer)('%s still happens during a freeze', (_, i, check) => {
      const d = computeRolloutStep(i);
      check(d);
      expect(d.heldByFreeze).toBeUndefined();
    });

    it('keeps analysing a gated step and records a Pass; after the freeze that Pass moves the step at once', () => {
      const during = computeRolloutStep(
        input({ canary: {}, now: at(41), specOver: gatedSpec, analysis: pass, freeze }),
      );
      expect(during.wantsAnalysis).toBe(true);
      expect(during.requeueAfterMs).toBe(60_000); // the analysis interval, sooner than the end
      expect(during.state.canary?.analysis[0]).toMatchObject({ verdict: 'Pass', step: 0 });
      const after = computeRolloutStep({
        ...input({ specOver: gatedSpec, now: until }),
        state: during.state,
      });
      expect(after.state.canary).toMatchObject({ step: 1, weight: 50 });
    });

    it('without analysis it wakes exactly at the end of the freeze, and the step moves then', () => {
      const i = input({ canary: {}, now: at(31) });
      const during = computeRolloutStep({ ...i, freeze });
      expect(during.requeueAfterMs).toBe(until.getTime() - at(31).getTime());
      expect(during.wantsAnalysis).toBe(false);
      const after = computeRolloutStep({ ...i, state: during.state, now: until });
      expect(after.state.canary).toMatchObject({ step: 1, weight: 50, stepStartedAt: until.toISOString() });
    });
  });

  it('holds a step without pause until promoted by hand', () => {
    const manual = input({
      canary: {},
      now: at(3600),
      specOver: { steps: [{ weight: 10 }, { weight: 100 }] },
    });
    expect(computeRolloutStep(manual).waiting).toMatch(/holds until promoted/);
    expect(computeRolloutStep({ ...manual, command: 'promote-step' }).state.canary).toMatchObject({
      step: 1,
      weight: 100,
    });
  });

  it('promote-full goes straight to stable; abort rolls back and remembers the digest', () => {
    expect(computeRolloutStep(input({ canary: {}, command: 'promote-full' })).state.stable?.modelSha).toBe(B);
    const aborted = computeRolloutStep(input({ canary: {}, command: 'abort' }));
    expect(aborted.state.canary).toBeUndefined();
    expect(aborted.state.abortedModelSha).toBe(B);
    expect(aborted.rolledBack).toMatchObject({ reason: 'Aborted' });
    expect(aborted.canaryWeight).toBe(0);
    // The next reconcile does not start the same rollout again.
    const again = computeRolloutStep({ ...input(), state: aborted.state });
    expect(again.state.canary).toBeUndefined();
    expect(again.waiting).toMatch(/was rolled back; change spec.model/);
  });

  it('retries only when the spec names another digest', () => {
    const state: RolloutState = { stable, history: [], abortedModelSha: B };
    const other = computeRolloutStep({ ...input({ specOver: { modelSha: 'c'.repeat(64) } }), state });
    expect(other.state.canary?.modelSha).toBe('c'.repeat(64));
  });

  it('rolls back at once on a canary drift alert', () => {
    const d = computeRolloutStep(
      input({ canary: { step: 1, weight: 50 }, canaryDrift: { message: 'PSI 0.41 > 0.2 on hour_of_day' } }),
    );
    expect(d.rolledBack).toEqual({ reason: 'DriftDetected', message: 'PSI 0.41 > 0.2 on hour_of_day' });
    expect(d.canaryWeight).toBe(0);
    expect(d.state.history[0]?.reason).toMatch(/^DriftDetected/);
  });

  it('never moves traffic back onto a stable with no ready pod', () => {
    const d = computeRolloutStep(
      input({
        canary: { weight: 50, step: 1 },
        command: 'abort',
        observed: { stableReadyReplicas: 0, canaryReadyReplicas: 2 },
      }),
    );
    expect(d.canaryWeight).toBe(50);
    expect(d.state.canary).toBeDefined();
    expect(d.waiting).toMatch(/waits for a ready stable pod/);
  });

  describe('manual commands: consumed when they act, kept (and said) while they cannot', () => {
    it.each([
      ['promote-full', input({ canary: {}, command: 'promote-full' }), 'acted'],
      ['promote-step', input({ canary: {}, command: 'promote-step' }), 'acted'],
      ['abort', input({ canary: {}, command: 'abort' }), 'acted'],
      [
        'abort while stable has no ready pod',
        input({
          canary: { weight: 50, step: 1 },
          command: 'abort',
          observed: { stableReadyReplicas: 0, canaryReadyReplicas: 2 },
        }),
        'held',
      ],
      [
        'promote-full during a freeze',
        input({ canary: {}, command: 'promote-full', freeze: { name: 'morning-rush' } }),
        'held',
      ],
      [
        'promote-step on the last step during a freeze',
        input({
          canary: { step: 2, weight: 100 },
          command: 'promote-step',
          freeze: { name: 'morning-rush' },
        }),
        'held',
      ],
      [
        'promote-step before a canary pod is ready',
        input({
          canary: {},
          command: 'promote-step',
          observed: { stableReadyReplicas: 2, canaryReadyReplicas: 0 },
        }),
        'held',
      ],
      ['abort with no rollout', input({ command: 'abort', specOver: { modelSha: A } }), 'ignored'],
    ] as const)('%s → %s', (_name, i, outcome) => {
      const d = computeRolloutStep(i);
      expect(d.command?.outcome).toBe(outcome);
      if (outcome === 'held') {
        expect(d.state.canary).toBeDefined();
        expect(d.waiting).toMatch(/^crema.dev\/(abort|promote=(full|step)) held: /);
      }
    });

    it('a held promotion names the freeze window; a held abort the missing stable pod', () => {
      expect(
        computeRolloutStep(input({ canary: {}, command: 'promote-full', freeze: { name: 'morning-rush' } }))
          .waiting,
      ).toBe(
        'crema.dev/promote=full held: frozen: StoreRegion freeze window morning-rush is active; the canary holds at step 1, weight 5%',
      );
      expect(
        computeRolloutStep(
          input({
            canary: { weight: 50, step: 1 },
            command: 'abort',
            observed: { stableReadyReplicas: 0, canaryReadyReplicas: 2 },
          }),
        ).waiting,
      ).toMatch(/^crema.dev\/abort held: rollback \(Aborted\) waits for a ready stable pod/);
    });

    it('no decision without a command says anything about one', () => {
      expect(computeRolloutStep(input({ canary: {} })).command).toBeUndefined();
    });
  });

  it('pauses when spec.paused is set', () => {
    expect(
      computeRolloutStep(input({ canary: {}, now: at(100), specOver: { paused: true } })).waiting,
    ).toMatch(/paused/);
  });

  it('cancels the canary when the spec returns to the stable digest', () => {
    const d = computeRolloutStep(input({ canary: {}, specOver: { modelSha: A } }));
    expect(d.state.canary).toBeUndefined();
    expect(d.state.history[0]?.reason).toMatch(/Cancelled/);
  });

  it('restarts the canary when the spec moves on mid-rollout', () => {
    const d = computeRolloutStep(
      input({
        canary: { step: 1, weight: 50 },
        specOver: { modelSha: 'c'.repeat(64) },
        observed: { stableReadyReplicas: 1, canaryReadyReplicas: 0 },
      }),
    );
    expect(d.state.canary).toMatchObject({ modelSha: 'c'.repeat(64), step: 0, weight: 0 });
    expect(d.state.history[0]?.reason).toMatch(/Superseded mid-rollout/);
  });

  describe('analysis gate', () => {
    const gated = { specOver: { analysisConfigured: true } };

    it('waits for the first analysis, and too little traffic keeps it waiting (never promotes)', () => {
      expect(computeRolloutStep(input({ ...gated, canary: {}, now: at(100) })).waiting).toMatch(
        /first analysis/,
      );
      const d = computeRolloutStep(
        input({
          ...gated,
          canary: {},
          now: at(100),
          analysis: {
            verdict: 'Inconclusive',
            message: 'errorRate: 12 samples < 500',
            at: at(100).toISOString(),
          },
        }),
      );
      expect(d.state.canary).toMatchObject({ step: 0, failures: 0 });
      expect(d.waiting).toMatch(/inconclusive: errorRate: 12 samples < 500/);
      expect(d.wantsAnalysis).toBe(true);
    });

    it('advances after a pass once the pause is over', () => {
      const d = computeRolloutStep(
        input({
          ...gated,
          canary: {},
          now: at(61),
          analysis: { verdict: 'Pass', message: 'ok', at: at(61).toISOString() },
        }),
      );
      expect(d.state.canary).toMatchObject({ step: 1, weight: 50 });
    });

    it('tolerates failureLimit failures, then rolls back', () => {
      const fail = { verdict: 'Fail' as const, message: 'errorRate 0.12 > 0.01', at: at(61).toISOString() };
      const first = computeRolloutStep(input({ ...gated, canary: {}, now: at(61), analysis: fail }));
      expect(first.state.canary).toMatchObject({ failures: 1 });
      expect(first.rolledBack).toBeUndefined();
      const second = computeRolloutStep({
        ...input({ ...gated, now: at(121), analysis: fail }),
        state: first.state,
      });
      expect(second.rolledBack).toMatchObject({
        reason: 'AnalysisFailed',
        message: expect.stringMatching(/2 failed analyses, limit 1/),
      });
      expect(second.state.abortedModelSha).toBe(B);
    });

    it('a step can opt out of analysis', () => {
      const d = computeRolloutStep(
        input({
          specOver: {
            analysisConfigured: true,
            steps: [{ weight: 5, pause: '1s', analysis: false }, { weight: 100 }],
          },
          canary: {},
          now: at(2),
        }),
      );
      expect(d.state.canary).toMatchObject({ step: 1 });
    });

    it('keeps analysing through the pause: a canary that breaks after its first pass is rolled back', () => {
      // A one-minute step analysed every 10 s: the first analysis passes early in the pause.
      const longPause = {
        specOver: {
          analysisConfigured: true,
          analysisIntervalMs: 10_000,
          steps: [{ weight: 50, pause: '1m' }, { weight: 100 }],
        },
      };
      const pass = computeRolloutStep(
        input({
          ...longPause,
          canary: {},
          now: at(10),
          analysis: { verdict: 'Pass', message: 'ok', at: at(10).toISOString() },
        }),
      );
      expect(pass.state.canary).toMatchObject({ step: 0, failures: 0 });
      // The pause is not over: the operator comes back within one interval, and analysis is due then.
      expect(pass.requeueAfterMs).toBe(10_000);
      expect(analysisDue({ ...input({ ...longPause, now: at(20) }), state: pass.state })).toBe(true);
      const fail = (t: number) => ({
        verdict: 'Fail' as const,
        message: 'errorRate 0.4 > 0.05',
        at: at(t).toISOString(),
      });
      const first = computeRolloutStep({
        ...input({ ...longPause, now: at(20), analysis: fail(20) }),
        state: pass.state,
      });
      expect(first.rolledBack).toBeUndefined();
      expect(first.waiting).toMatch(/analysis failed \(1\/1 tolerated\)/);
      // Past the pause with a failed latest analysis: the step does not advance.
      const held = computeRolloutStep({ ...input({ ...longPause, now: at(65) }), state: first.state });
      expect(held.state.canary).toMatchObject({ step: 0 });
      const second = computeRolloutStep({
        ...input({ ...longPause, now: at(70), analysis: fail(70) }),
        state: first.state,
      });
      expect(second.rolledBack).toMatchObject({ reason: 'AnalysisFailed' });
      expect(second.state.canary).toBeUndefined();
    });

    it('is due one interval after the step started or after the last result', () => {
      const base = input({ ...gated, canary: {} });
      expect(analysisDue({ ...base, now: at(59) })).toBe(false);
      expect(analysisDue({ ...base, now: at(60) })).toBe(true);
      const passed = input({
        ...gated,
        canary: { analysis: [{ step: 0, verdict: 'Pass', at: at(60).toISOString(), message: '' }] },
        now: at(500),
      });
      // A pass does not stop the analysis of the step: due again one interval later.
      expect(analysisDue(passed)).toBe(true);
      expect(analysisDue({ ...passed, now: at(119) })).toBe(false);
      expect(
        analysisDue(
          input({
            ...gated,
            canary: {},
            now: at(500),
            observed: { stableReadyReplicas: 1, canaryReadyReplicas: 0 },
          }),
        ),
      ).toBe(false);
    });
  });
});

describe('drift on stable', () => {
  const history: RolloutState['history'] = [
    {
      revision: 1,
      modelSha: B,
      uri: 'file:///b.onnx',
      track: 'stable',
      startedAt: '',
      endedAt: '',
      reason: 'Superseded',
    },
  ];
  const current: RolloutState = {
    stable: { modelSha: A, uri: 'file:///a.onnx', revision: 2, since: '' },
    history,
  };
  const onStable = (driftAction: 'Rollback' | 'Alert', state = current) =>
    computeRolloutStep({
      ...input({ specOver: { modelSha: A, uri: 'file:///a.onnx' } }),
      state,
      stableDrift: { message: 'PSI 0.5 on hour' },
      driftAction,
    });

  it('only reports it when the action is Alert', () => {
    const d = onStable('Alert');
    expect(d.stableDrift).toEqual({ message: 'PSI 0.5 on hour' });
    expect(d.state.stable?.modelSha).toBe(A);
    expect(d.rolledBack).toBeUndefined();
  });

  it('returns to the previous stable revision when the action is Rollback, and does not retry the drifted one', () => {
    const d = onStable('Rollback');
    expect(d.state.stable).toMatchObject({ modelSha: B, uri: 'file:///b.onnx', revision: 1 });
    expect(d.state.abortedModelSha).toBe(A);
    expect(d.rolledBack?.reason).toBe('DriftDetected');
    expect(d.state.history[0]).toMatchObject({
      revision: 2,
      modelSha: A,
      track: 'stable',
      reason: expect.stringMatching(/^DriftDetected/),
    });
    const next = computeRolloutStep({
      ...input({ specOver: { modelSha: A, uri: 'file:///a.onnx' } }),
      state: d.state,
    });
    expect(next.state.canary).toBeUndefined();
    expect(next.waiting).toMatch(/was rolled back/);
  });

  it('cannot roll back without a previous stable revision, and says it drifted', () => {
    const d = onStable('Rollback', { ...current, history: [] });
    expect(d.state.stable?.modelSha).toBe(A);
    expect(d.stableDrift).toBeDefined();
  });
});

describe('parseDuration', () => {
  it.each([
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
  ])('%s', (d, ms) => expect(parseDuration(d)).toBe(ms));
  it('names a bad duration', () => expect(() => parseDuration('5 min')).toThrow(/"5 min"/));
});

describe('the decision chain', () => {
  it('tries its checks in this order', () => {
    // Stable drift before a promotion in progress (a drift rollback ends it); stop signals before
    // readiness; each command before the gates it overrides.
    expect(ROLLOUT_CHECK_NAMES).toEqual([
      'firstRevision',
      'stableDrift',
      'promotionInProgress',
      'specIsStable',
      'rolledBackDigest',
      'noSteps',
      'startCanary',
      'abortCommand',
      'canaryDrift',
      'canaryNotReady',
      'freezeHold',
      'promoteFullCommand',
      'stepWeight',
      'promoteStepCommand',
      'paused',
      'analysisGate',
      'timeGate',
    ]);
  });

  const previousStable: RolloutState['history'][number] = {
    revision: 1,
    modelSha: 'c'.repeat(64),
    uri: 'file:///c.onnx',
    track: 'stable',
    startedAt: '',
    endedAt: '',
    reason: 'Superseded',
  };
  const promotion = { modelSha: A, uri: 'file:///a.onnx', revision: 1, startedAt: '', weight: 50 };
  const gated = { analysisConfigured: true };
  const decidedBy: [string, RolloutInput, RolloutCheckName][] = [
    ['no stable yet', { ...input(), state: { history: [] } }, 'firstRevision'],
    [
      'stable drifts, action Rollback, a previous stable exists (even mid-promotion)',
      {
        ...input({ stableDrift: { message: 'psi' }, driftAction: 'Rollback' }),
        state: { stable, promotion, history: [previousStable] },
      },
      'stableDrift',
    ],
    [
      'a promotion rolls out',
      { ...input(), state: { stable, promotion, history: [] } },
      'promotionInProgress',
    ],
    ['spec.model is stable again', input({ canary: {}, specOver: { modelSha: A } }), 'specIsStable'],
    [
      'spec.model names the rolled-back digest',
      { ...input(), state: { stable, abortedModelSha: B, history: [] } },
      'rolledBackDigest',
    ],
    ['no steps', input({ specOver: { steps: [] } }), 'noSteps'],
    ['abort', input({ canary: {}, command: 'abort' }), 'abortCommand'],
    ['canary drift', input({ canary: {}, canaryDrift: { message: 'psi' } }), 'canaryDrift'],
    [
      'no ready canary pod (a new canary)',
      input({ observed: { stableReadyReplicas: 2, canaryReadyReplicas: 0 } }),
      'canaryNotReady',
    ],
    ['promote-full', input({ canary: {}, command: 'promote-full' }), 'promoteFullCommand'],
    ['promote-step', input({ canary: {}, command: 'promote-step' }), 'promoteStepCommand'],
    ['spec.paused', input({ canary: {}, specOver: { paused: true } }), 'paused'],
    ['a gated step without analysis', input({ canary: {}, specOver: gated }), 'analysisGate'],
    [
      'a gated step past its failure limit',
      input({
        canary: { failures: 1 },
        specOver: gated,
        analysis: { verdict: 'Fail', message: 'ctr', at: '' },
      }),
      'analysisGate',
    ],
    ['a step in its pause', input({ canary: {} }), 'timeGate'],
    ['a step past its pause', input({ canary: {}, now: at(31) }), 'timeGate'],
    [
      'a step past its pause during a freeze',
      input({ canary: {}, now: at(31), freeze: { name: 'f' } }),
      'freezeHold',
    ],
    // Alert only: the rest of the chain decides, and stableDrift is added to its decision.
    [
      'stable drifts, action Alert',
      input({ canary: {}, stableDrift: { message: 'psi' }, driftAction: 'Alert' }),
      'timeGate',
    ],
  ];
  it.each(decidedBy)('%s: decided by %s', (_, i, check) => {
    expect(computeRolloutStep(i).decidedBy).toBe(check);
  });

  it('names the check on a command it holds, too', () => {
    const d = computeRolloutStep(input({ canary: {}, command: 'promote-full', freeze: { name: 'bf' } }));
    expect(d.command?.outcome).toBe('held');
    expect(d.decidedBy).toBe('freezeHold');
  });
});
