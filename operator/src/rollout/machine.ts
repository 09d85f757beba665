/**
 * The canary rollout as a pure state machine: (spec, rollout state from status, what the
 * cluster shows, the latest analysis, a manual command, the clock) → the next rollout state
 * and what to tell the user. All state lives in the resource's status, so an operator that
 * restarts mid-rollout resumes at the same step. Table-tested in machine.test.ts.
 */

/** One canary step from the spec. */
export interface StepSpec {
  readonly weight: number;
  /** e.g. "30s", "5m"; undefined = hold until promoted by hand. */
  readonly pause?: string;
  /** Whether analysis must pass before leaving the step (default true when analysis is configured). */
  readonly analysis?: boolean;
}

/** The revision serving most traffic. */
export interface StableState {
  readonly modelSha: string;
  readonly uri: string;
  readonly revision: number;
  readonly since: string;
}

/** One recorded analysis outcome. */
export interface AnalysisRecord {
  readonly step: number;
  readonly verdict: 'Pass' | 'Fail' | 'Inconclusive';
  readonly at: string;
  readonly message: string;
}

/** A rollout in progress. */
export interface CanaryState {
  readonly modelSha: string;
  readonly uri: string;
  readonly revision: number;
  readonly startedAt: string;
  /** Index into spec steps. */
  readonly step: number;
  /** Traffic percent currently routed to the canary. */
  readonly weight: number;
  /** When the current step's weight took effect (its pause counts from here). */
  readonly stepStartedAt?: string;
  /** Failed analyses so far in this rollout. */
  readonly failures: number;
  /** Analysis outcomes, newest first (bounded). */
  readonly analysis: readonly AnalysisRecord[];
}

/**
 * A promotion in progress: stable already names the promoted revision, and its pods are being
 * replaced. Until every stable pod runs it, the canary pods keep carrying the share of traffic
 * they had (`weight`), so no request the promoted revision should answer reaches an old pod.
 */
export interface PromotionState {
  readonly modelSha: string;
  readonly uri: string;
  readonly revision: number;
  readonly startedAt: string;
  /** The canary's traffic percent when it was promoted; the router keeps it during the roll. */
  readonly weight: number;
}

/** A revision that ended, and why. */
export interface HistoryEntry {
  readonly revision: number;
  readonly modelSha: string;
  /** Where it was loaded from (so a rollback can bring it back). */
  readonly uri?: string;
  /** Whether it ended as the stable revision or as a canary. */
  readonly track?: 'stable' | 'canary';
  readonly startedAt: string;
  readonly endedAt: string;
  readonly reason: string;
}

/** The rollout part of the status. */
export interface RolloutState {
  readonly stable?: StableState;
  readonly canary?: CanaryState;
  /** Set from the promotion decision until every stable pod runs the promoted revision. */
  readonly promotion?: PromotionState;
  /** A digest that was rolled back or aborted: not retried until spec.model changes to another one. */
  readonly abortedModelSha?: string;
  readonly history: readonly HistoryEntry[];
}

export type Command = 'promote-step' | 'promote-full' | 'abort';

export interface RolloutInput {
  readonly spec: {
    readonly modelSha: string;
    readonly uri: string;
    /** Empty: a new model replaces stable at once. */
    readonly steps: readonly StepSpec[];
    /** Analysis configured in the spec (steps gate on it unless they opt out). */
    readonly analysisConfigured: boolean;
    readonly failureLimit: number;
    /** How often analysis runs while a step waits for it. */
    readonly analysisIntervalMs: number;
    readonly paused: boolean;
  };
  readonly state: RolloutState;
  readonly observed: {
    readonly stableReadyReplicas: number;
    readonly canaryReadyReplicas: number;
    /**
     * Every pod of the stable Deployment runs `state.stable` and is ready (the Deployment has
     * observed its latest spec and holds no pod of an older template).
     */
    readonly stableRolledOut?: boolean;
  };
  /** Latest analysis of the canary at its current step, if one ran since the last decision. */
  readonly analysis?: {
    readonly verdict: 'Pass' | 'Fail' | 'Inconclusive';
    readonly message: string;
    readonly at: string;
  };
  readonly command?: Command;
  /** A firing drift alert for the canary revision. */
  readonly canaryDrift?: { readonly message: string };
  /** A StoreRegion freeze window is active: no promotion to stable now. */
  readonly freeze?: { readonly name: string };
  /** A firing drift alert for the stable revision. */
  readonly stableDrift?: { readonly message: string };
  /** spec.drift.action: Rollback returns to the previous stable revision on stable drift. */
  readonly driftAction?: 'Rollback' | 'Alert';
  readonly now: Date;
}

/** What the reconcile should tell the user about this decision. */
export interface RolloutNotice {
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
}

export interface RolloutDecision {
  readonly state: RolloutState;
  /** Traffic percent for the canary now (0 when there is none). */
  readonly canaryWeight: number;
  /** Why the rollout is not moving, if it is waiting. */
  readonly waiting?: string;
  /** Set when this decision rolled the canary (or, on drift, stable) back. */
  readonly rolledBack?: { readonly reason: string; readonly message: string };
  /** Set while a drift alert fires for the stable revision. */
  readonly stableDrift?: { readonly message: string };
  readonly notices: readonly RolloutNotice[];
  /** Come back after this long even if nothing changes (pauses, analysis intervals). */
  readonly requeueAfterMs?: number;
  /** True when the caller should run analysis before the next decision. */
  readonly wantsAnalysis: boolean;
  /**
   * What became of `input.command`: `acted` (consume it now), `held` (it cannot act yet: keep
   * it, and say why), `ignored` (nothing for it to act on: consume it and say so).
   */
  readonly command?: { readonly outcome: 'acted' | 'held' | 'ignored'; readonly message: string };
}

const HISTORY_LIMIT = 10;
const ANALYSIS_LIMIT = 20;

/** Parses "30s", "5m", "1h" into milliseconds. */
export function parseDuration(d: string): number {
  const m = /^(\d+)(s|m|h)$/.exec(d);
  if (!m) throw new RangeError(`invalid duration ${JSON.stringify(d)} (use e.g. 30s, 5m, 1h)`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 's' | 'm' | 'h'];
}

/** The history entry of a revision that ends now. */
function ended(
  rev: { revision: number; modelSha: string; uri: string },
  track: 'stable' | 'canary',
  startedAt: string,
  endedAt: string,
  reason: string,
): HistoryEntry {
  return { revision: rev.revision, modelSha: rev.modelSha, uri: rev.uri, track, startedAt, endedAt, reason };
}

function pushHistory(history: readonly HistoryEntry[], e: HistoryEntry): HistoryEntry[] {
  return [e, ...history].slice(0, HISTORY_LIMIT);
}

/** Computes the next rollout state. Pure: the same input always gives the same decision. */
export function computeRolloutStep(input: RolloutInput): RolloutDecision {
  const acted = { value: false };
  const d = decide(input, acted);
  if (!input.command) return d;
  const name = input.command === 'abort' ? 'crema.dev/abort' : `crema.dev/promote=${input.command.slice(8)}`;
  if (acted.value) return { ...d, command: { outcome: 'acted', message: `${name} acted on` } };
  // A command given while a canary runs waits until it can act; with no canary there is
  // nothing for it to do (kept, it would hit the next rollout by surprise).
  if (d.state.canary && input.state.canary) {
    const message = `${name} held: ${d.waiting ?? 'it cannot act yet'}`;
    return { ...d, waiting: message, command: { outcome: 'held', message } };
  }
  const why = input.state.promotion
    ? `revision ${input.state.promotion.revision} is already promoted (its pods are rolling out)`
    : 'no canary rollout in progress';
  return { ...d, command: { outcome: 'ignored', message: `${name} ignored: ${why}` } };
}

function decide(input: RolloutInput, acted: { value: boolean }): RolloutDecision {
  const { spec, state, observed, now } = input;
  const iso = now.toISOString();
  const notices: RolloutNotice[] = [];

  // 1. First revision: it becomes stable directly.
  if (!state.stable) {
    const stable = { modelSha: spec.modelSha, uri: spec.uri, revision: 1, since: iso };
    return { state: { ...state, stable }, canaryWeight: 0, notices, wantsAnalysis: false };
  }

  // 2a. Drift on stable: report it; with action Rollback return to the previous stable revision.
  if (input.stableDrift) {
    const drifted = state.stable;
    const previous = state.history.find(
      (h) =>
        h.track === 'stable' &&
        h.uri &&
        h.modelSha !== drifted.modelSha &&
        h.modelSha !== state.abortedModelSha,
    );
    if (input.driftAction !== 'Rollback' || !previous) {
      // Alert only (or nothing to go back to): everything else proceeds as usual.
      return { ...decide({ ...input, stableDrift: undefined }, acted), stableDrift: input.stableDrift };
    }
    const message = `stable revision ${drifted.revision} drifted (${input.stableDrift.message}); back to revision ${previous.revision}`;
    notices.push({ type: 'Warning', reason: 'RolledBack', message });
    let history = pushHistory(
      state.history,
      ended(drifted, 'stable', drifted.since, iso, `DriftDetected: ${input.stableDrift.message}`),
    );
    if (state.canary) {
      const c = state.canary;
      history = pushHistory(
        history,
        ended(c, 'canary', c.startedAt, iso, 'Cancelled: stable rolled back after drift'),
      );
    }
    return {
      state: {
        ...state,
        stable: {
          modelSha: previous.modelSha,
          uri: previous.uri!,
          revision: previous.revision,
          since: iso,
        },
        canary: undefined,
        promotion: undefined,
        abortedModelSha: drifted.modelSha,
        history,
      },
      canaryWeight: 0,
      rolledBack: { reason: 'DriftDetected', message },
      stableDrift: input.stableDrift,
      notices,
      wantsAnalysis: false,
    };
  }

  // 1b. A promotion in progress finishes before anything else moves: traffic leaves the canary
  // pods only once every stable pod runs the promoted revision.
  if (state.promotion) {
    const p = state.promotion;
    if (!observed.stableRolledOut) {
      return {
        state,
        canaryWeight: p.weight,
        waiting: `promotion of revision ${p.revision}: waiting until every stable pod runs it (the canary pods keep ${p.weight}% meanwhile)`,
        notices,
        requeueAfterMs: 2000,
        wantsAnalysis: false,
      };
    }
    notices.push({
      type: 'Normal',
      reason: 'PromotionComplete',
      message: `revision ${p.revision} serves all traffic: every stable pod runs it`,
    });
    return { state: { ...state, promotion: undefined }, canaryWeight: 0, notices, wantsAnalysis: false };
  }

  // 2. The spec asks for what stable already runs: no rollout (a running canary is cancelled).
  if (spec.modelSha === state.stable.modelSha) {
    if (!state.canary) return { state, canaryWeight: 0, notices, wantsAnalysis: false };
    const c = state.canary;
    notices.push({
      type: 'Normal',
      reason: 'CanaryCancelled',
      message: `spec.model is back to the stable revision; canary revision ${c.revision} removed`,
    });
    return {
      state: {
        ...state,
        canary: undefined,
        history: pushHistory(
          state.history,
          ended(c, 'canary', c.startedAt, iso, 'Cancelled: spec.model returned to the stable revision'),
        ),
      },
      canaryWeight: 0,
      notices,
      wantsAnalysis: false,
    };
  }

  // 3. A digest that was rolled back is not retried until the spec names another one.
  if (spec.modelSha === state.abortedModelSha && !state.canary) {
    return {
      state,
      canaryWeight: 0,
      waiting: `revision ${spec.modelSha.slice(0, 12)} was rolled back; change spec.model to roll out another revision`,
      notices,
      wantsAnalysis: false,
    };
  }

  // 4. No steps: replace stable at once.
  if (spec.steps.length === 0) {
    const old = state.stable;
    const stable = { modelSha: spec.modelSha, uri: spec.uri, revision: old.revision + 1, since: iso };
    notices.push({
      type: 'Normal',
      reason: 'NewRevision',
      message: `revision ${stable.revision} (${spec.modelSha.slice(0, 12)}) replaces revision ${old.revision} (no rollout steps)`,
    });
    return {
      state: {
        ...state,
        stable,
        canary: undefined,
        history: pushHistory(
          state.history,
          ended(old, 'stable', old.since, iso, `Superseded by revision ${stable.revision}`),
        ),
      },
      canaryWeight: 0,
      notices,
      wantsAnalysis: false,
    };
  }

  // 5. Start (or restart, if the spec moved on mid-rollout) the canary at step 0, weight 0.
  let history = state.history;
  let canary = state.canary;
  if (!canary || canary.modelSha !== spec.modelSha) {
    if (canary) {
      history = pushHistory(
        history,
        ended(
          canary,
          'canary',
          canary.startedAt,
          iso,
          `Superseded mid-rollout by ${spec.modelSha.slice(0, 12)}`,
        ),
      );
    }
    canary = {
      modelSha: spec.modelSha,
      uri: spec.uri,
      revision: state.stable.revision + 1,
      startedAt: iso,
      step: 0,
      weight: 0,
      failures: 0,
      analysis: [],
    };
    notices.push({
      type: 'Normal',
      reason: 'CanaryStarted',
      message: `canary revision ${canary.revision} (${spec.modelSha.slice(0, 12)}) started`,
    });
  }

  const rollback = (reason: string, message: string): RolloutDecision => {
    const c = canary!;
    if (observed.stableReadyReplicas < 1) {
      // Never shift traffic onto a stable with no ready pod: hold the canary until stable is back.
      return {
        state: { ...state, canary: c, history },
        canaryWeight: c.weight,
        waiting: `rollback (${reason}) waits for a ready stable pod before moving traffic off the canary`,
        notices,
        requeueAfterMs: 2000,
        wantsAnalysis: false,
      };
    }
    if (reason === 'Aborted') acted.value = true;
    notices.push({
      type: 'Warning',
      reason: 'RolledBack',
      message: `canary revision ${c.revision} rolled back: ${message}`,
    });
    return {
      state: {
        ...state,
        canary: undefined,
        abortedModelSha: c.modelSha,
        history: pushHistory(history, ended(c, 'canary', c.startedAt, iso, `${reason}: ${message}`)),
      },
      canaryWeight: 0,
      rolledBack: { reason, message },
      notices,
      wantsAnalysis: false,
    };
  };

  // 6. Stop signals win over everything else.
  if (input.command === 'abort') return rollback('Aborted', 'aborted by a user (crema.dev/abort)');
  if (input.canaryDrift) return rollback('DriftDetected', input.canaryDrift.message);

  const keep = (
    c: CanaryState,
    waiting: string | undefined,
    extra: Partial<RolloutDecision> = {},
  ): RolloutDecision => ({
    state: { ...state, canary: c, history },
    canaryWeight: c.weight,
    ...(waiting ? { waiting } : {}),
    notices,
    wantsAnalysis: false,
    ...extra,
  });

  // 7. No traffic before the canary can serve it.
  if (observed.canaryReadyReplicas < 1) {
    return keep({ ...canary, weight: 0 }, `waiting for a ready canary pod (revision ${canary.revision})`, {
      requeueAfterMs: 5000,
    });
  }

  const promote = (): RolloutDecision => {
    const c = canary!;
    if (input.freeze) {
      return keep(c, `promotion to stable held: StoreRegion freeze window ${input.freeze.name} is active`, {
        requeueAfterMs: 30_000,
      });
    }
    const old = state.stable!;
    if (input.command === 'promote-full' || input.command === 'promote-step') acted.value = true;
    notices.push({
      type: 'Normal',
      reason: 'Promoted',
      message: `canary revision ${c.revision} promoted to stable (was revision ${old.revision}); the canary pods keep ${c.weight}% until every stable pod runs it`,
    });
    return {
      state: {
        ...state,
        stable: { modelSha: c.modelSha, uri: c.uri, revision: c.revision, since: iso },
        canary: undefined,
        promotion: {
          modelSha: c.modelSha,
          uri: c.uri,
          revision: c.revision,
          startedAt: iso,
          weight: c.weight,
        },
        history: pushHistory(
          history,
          ended(
            old,
            'stable',
            old.since,
            iso,
            `Replaced by revision ${c.revision} after a successful canary`,
          ),
        ),
      },
      canaryWeight: c.weight,
      notices,
      requeueAfterMs: 2000,
      wantsAnalysis: false,
    };
  };

  if (input.command === 'promote-full') return promote();

  // 8. Bring traffic to the current step's weight; its pause starts when the weight is set.
  const step = spec.steps[canary.step]!;
  if (canary.weight !== step.weight || !canary.stepStartedAt) {
    notices.push({
      type: 'Normal',
      reason: 'StepStarted',
      message: `step ${canary.step + 1}/${spec.steps.length}: canary weight ${step.weight}%`,
    });
    canary = { ...canary, weight: step.weight, stepStartedAt: iso };
  }

  const advance = (): RolloutDecision => {
    const c = canary!;
    if (c.step + 1 >= spec.steps.length) return promote();
    const next = c.step + 1;
    if (input.command === 'promote-step') acted.value = true;
    const weight = spec.steps[next]!.weight;
    notices.push({
      type: 'Normal',
      reason: 'StepStarted',
      message: `step ${next + 1}/${spec.steps.length}: canary weight ${weight}%`,
    });
    return keep({ ...c, step: next, weight, stepStartedAt: iso }, undefined, {
      wantsAnalysis: false,
      requeueAfterMs: 1000,
    });
  };

  if (input.command === 'promote-step') return advance();
  if (spec.paused) return keep(canary, 'paused (spec.paused is true)');

  // 9. Analysis gate.
  if (stepIsGated(spec, canary.step)) {
    const a = input.analysis;
    if (a) {
      canary = {
        ...canary,
        analysis: [
          { step: canary.step, verdict: a.verdict, at: a.at, message: a.message },
          ...canary.analysis,
        ].slice(0, ANALYSIS_LIMIT),
      };
      if (a.verdict === 'Fail') {
        canary = { ...canary, failures: canary.failures + 1 };
        if (canary.failures > spec.failureLimit) {
          return rollback(
            'AnalysisFailed',
            `${a.message} (${canary.failures} failed analyses, limit ${spec.failureLimit})`,
          );
        }
      }
    }
    const last = canary.analysis.find((r) => r.step === canary!.step);
    if (last?.verdict !== 'Pass') {
      const why = !last
        ? 'waiting for the first analysis of this step'
        : last.verdict === 'Inconclusive'
          ? `analysis inconclusive: ${last.message}`
          : `analysis failed (${canary.failures}/${spec.failureLimit} tolerated): ${last.message}`;
      return keep(canary, why, { wantsAnalysis: true, requeueAfterMs: spec.analysisIntervalMs });
    }
  }

  // 10. Time gate: the step's pause, or a manual promotion when it has none.
  if (step.pause === undefined)
    return keep(
      canary,
      `step ${canary.step + 1} holds until promoted (kubectl annotate rm ... crema.dev/promote=step)`,
    );
  const elapsed = now.getTime() - new Date(canary.stepStartedAt!).getTime();
  const pauseMs = parseDuration(step.pause);
  if (elapsed < pauseMs) {
    // A gated step keeps being analysed through its pause: a canary that passed its first
    // analysis and breaks later (a bad config rolled in, a slow leak) must not be promoted.
    const gated = stepIsGated(spec, canary.step);
    return keep(
      canary,
      `step ${canary.step + 1} pauses ${step.pause} (${Math.ceil((pauseMs - elapsed) / 1000)} s left)`,
      {
        requeueAfterMs: gated ? Math.min(pauseMs - elapsed, spec.analysisIntervalMs) : pauseMs - elapsed,
        wantsAnalysis: gated,
      },
    );
  }
  return advance();
}

/** Whether leaving step `i` requires a passing analysis. */
export function stepIsGated(spec: RolloutInput['spec'], i: number): boolean {
  return spec.analysisConfigured && spec.steps[i]?.analysis !== false;
}

/**
 * Whether the caller should run analysis now: a canary is on a gated step, has a ready pod and
 * its last analysis of this step (if any) is at least one interval old. A Pass does not end
 * the analysis of a step: it runs every interval until the step is left, and the step is left
 * only when the latest result is a Pass.
 */
export function analysisDue(input: Omit<RolloutInput, 'analysis'>): boolean {
  const c = input.state.canary;
  if (!c || c.modelSha !== input.spec.modelSha || input.observed.canaryReadyReplicas < 1) return false;
  if (!stepIsGated(input.spec, c.step) || !c.stepStartedAt) return false;
  const last = c.analysis.find((r) => r.step === c.step);
  const since = last ? new Date(last.at).getTime() : new Date(c.stepStartedAt).getTime();
  return input.now.getTime() - since >= input.spec.analysisIntervalMs;
}
