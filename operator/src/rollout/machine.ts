/**
 * The canary rollout as a pure state machine: (spec, rollout state from status, what the
 * cluster shows, the latest analysis, a manual command, the clock) → the next rollout state
 * and what to tell the user. All state lives in the resource's status, so an operator that
 * restarts mid-rollout resumes at the same step. Table-tested in machine.test.ts.
 */
import { ABORT_ANNOTATION, PROMOTE_ANNOTATION } from '../../../contracts/kube-keys.js';
import { parseDurationMs } from '../../../contracts/duration.js';

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
  /**
   * A StoreRegion freeze window is active: the canary holds where it is (no weight increase,
   * no step advance, no promotion) until `until`; rollbacks still happen (ADR 0014).
   */
  readonly freeze?: { readonly name: string; readonly until?: Date };
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
  /** Set when a StoreRegion freeze holds something back: a canary step, a promotion, a new revision. */
  readonly heldByFreeze?: true;
  /** For tests and logs: which check of the decision chain took this decision. */
  readonly decidedBy?: RolloutCheckName;
}

const HISTORY_LIMIT = 10;
const ANALYSIS_LIMIT = 20;

/** Parses "30s", "5m", "1h" into milliseconds (the CRDs' duration grammar, contracts/duration.ts). */
export const parseDuration = parseDurationMs;

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
  const { acted, ...d } = runChecks(input);
  if (!input.command) return d;
  const name =
    input.command === 'abort' ? ABORT_ANNOTATION : `${PROMOTE_ANNOTATION}=${input.command.slice(8)}`;
  if (acted) return { ...d, command: { outcome: 'acted', message: `${name} acted on` } };
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

/**
 * What the checks of one decision share. Only `canary`, `history` and `notices` change, and
 * only forward: a check that does not decide may start the canary, set its step weight or
 * record an analysis, and the checks after it work on that canary.
 */
interface RolloutContext {
  readonly input: RolloutInput;
  /** `input.now` as status records it. */
  readonly iso: string;
  /** The canary being worked on: set by startCanary, moved by stepWeight and analysisGate. */
  canary?: CanaryState;
  /** `input.state.history` plus the canary startCanary superseded, if any. */
  history: readonly HistoryEntry[];
  /** What to tell the user, in the order the checks raised it. */
  readonly notices: RolloutNotice[];
}

/** A check's decision; `acted` when it carried out `input.command`. */
type CheckDecision = RolloutDecision & { readonly acted?: true };

/** One link of the decision chain: a decision, or undefined to let the next check decide. */
type RolloutCheck = (ctx: RolloutContext) => CheckDecision | undefined;

/** Stable, which every check after firstRevision can count on. */
function stableOf(ctx: RolloutContext): StableState {
  const s = ctx.input.state.stable;
  if (!s) throw new Error('rollout check ran before firstRevision');
  return s;
}

/** The canary, which every check after startCanary can count on. */
function canaryOf(ctx: RolloutContext): CanaryState {
  if (!ctx.canary) throw new Error('rollout check ran before startCanary');
  return ctx.canary;
}

/** The canary stays (at `c`, its weight serving), possibly waiting for something. */
function keep(
  ctx: RolloutContext,
  c: CanaryState,
  waiting: string | undefined,
  extra: Partial<RolloutDecision> = {},
): CheckDecision {
  return {
    state: { ...ctx.input.state, canary: c, history: ctx.history },
    canaryWeight: c.weight,
    ...(waiting ? { waiting } : {}),
    notices: ctx.notices,
    wantsAnalysis: false,
    ...extra,
  };
}

/** The canary is rolled back: all traffic to stable, and its digest is not retried. */
function rollback(ctx: RolloutContext, reason: string, message: string): CheckDecision {
  const { input, iso, notices } = ctx;
  const c = canaryOf(ctx);
  if (input.observed.stableReadyReplicas < 1) {
    // Never shift traffic onto a stable with no ready pod: hold the canary until stable is back.
    return {
      state: { ...input.state, canary: c, history: ctx.history },
      canaryWeight: c.weight,
      waiting: `rollback (${reason}) waits for a ready stable pod before moving traffic off the canary`,
      notices,
      requeueAfterMs: 2000,
      wantsAnalysis: false,
    };
  }
  notices.push({
    type: 'Warning',
    reason: 'RolledBack',
    message: `canary revision ${c.revision} rolled back: ${message}`,
  });
  return {
    state: {
      ...input.state,
      canary: undefined,
      abortedModelSha: c.modelSha,
      history: pushHistory(ctx.history, ended(c, 'canary', c.startedAt, iso, `${reason}: ${message}`)),
    },
    canaryWeight: 0,
    rolledBack: { reason, message },
    notices,
    wantsAnalysis: false,
    ...(reason === 'Aborted' ? { acted: true } : {}),
  };
}

/** The canary becomes stable; its pods keep their share until every stable pod runs it. */
function promote(ctx: RolloutContext): CheckDecision {
  const { input, iso, notices } = ctx;
  const c = canaryOf(ctx);
  // freezeHold decides before any check that promotes; this guards a reordering of the chain.
  if (input.freeze) return freezeHold(ctx)!;
  const old = stableOf(ctx);
  notices.push({
    type: 'Normal',
    reason: 'Promoted',
    message: `canary revision ${c.revision} promoted to stable (was revision ${old.revision}); the canary pods keep ${c.weight}% until every stable pod runs it`,
  });
  return {
    state: {
      ...input.state,
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
        ctx.history,
        ended(old, 'stable', old.since, iso, `Replaced by revision ${c.revision} after a successful canary`),
      ),
    },
    canaryWeight: c.weight,
    notices,
    requeueAfterMs: 2000,
    wantsAnalysis: false,
    ...(input.command === 'promote-full' || input.command === 'promote-step' ? { acted: true } : {}),
  };
}

/** The canary moves to its next step, or is promoted after the last one. */
function advance(ctx: RolloutContext): CheckDecision {
  const { spec } = ctx.input;
  const c = canaryOf(ctx);
  if (c.step + 1 >= spec.steps.length) return promote(ctx);
  const next = c.step + 1;
  const weight = spec.steps[next]!.weight;
  ctx.notices.push({
    type: 'Normal',
    reason: 'StepStarted',
    message: `step ${next + 1}/${spec.steps.length}: canary weight ${weight}%`,
  });
  return {
    ...keep(ctx, { ...c, step: next, weight, stepStartedAt: ctx.iso }, undefined, {
      wantsAnalysis: false,
      requeueAfterMs: 1000,
    }),
    ...(ctx.input.command === 'promote-step' ? { acted: true } : {}),
  };
}

/** The first revision becomes stable directly. */
function firstRevision({ input, iso, notices }: RolloutContext): CheckDecision | undefined {
  const { spec, state } = input;
  if (state.stable) return undefined;
  const stable = { modelSha: spec.modelSha, uri: spec.uri, revision: 1, since: iso };
  return { state: { ...state, stable }, canaryWeight: 0, notices, wantsAnalysis: false };
}

/**
 * Drift on stable is reported; with action Rollback (and a previous stable revision to go
 * back to) stable returns to it, and the drifted digest is not retried.
 */
function stableDrift(ctx: RolloutContext): CheckDecision | undefined {
  const { input, iso, notices } = ctx;
  const { state } = input;
  if (!input.stableDrift) return undefined;
  const drifted = stableOf(ctx);
  const previous = state.history.find(
    (h) =>
      h.track === 'stable' &&
      h.uri &&
      h.modelSha !== drifted.modelSha &&
      h.modelSha !== state.abortedModelSha,
  );
  if (input.driftAction !== 'Rollback' || !previous) {
    // Alert only (or nothing to go back to): the rest of the chain decides as if no drift fired.
    return { ...runChecks({ ...input, stableDrift: undefined }), stableDrift: input.stableDrift };
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
      stable: { modelSha: previous.modelSha, uri: previous.uri!, revision: previous.revision, since: iso },
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

/**
 * A promotion in progress finishes before anything else moves: traffic leaves the canary pods
 * only once every stable pod runs the promoted revision.
 */
function promotionInProgress({ input, notices }: RolloutContext): CheckDecision | undefined {
  const { state, observed } = input;
  const p = state.promotion;
  if (!p) return undefined;
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

/** The spec asks for what stable already runs: no rollout (a running canary is cancelled). */
function specIsStable(ctx: RolloutContext): CheckDecision | undefined {
  const { input, iso, notices } = ctx;
  const { spec, state } = input;
  if (spec.modelSha !== stableOf(ctx).modelSha) return undefined;
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

/** A digest that was rolled back is not retried until the spec names another one. */
function rolledBackDigest({ input, notices }: RolloutContext): CheckDecision | undefined {
  const { spec, state } = input;
  if (spec.modelSha !== state.abortedModelSha || state.canary) return undefined;
  return {
    state,
    canaryWeight: 0,
    waiting: `revision ${spec.modelSha.slice(0, 12)} was rolled back; change spec.model to roll out another revision`,
    notices,
    wantsAnalysis: false,
  };
}

/** No steps: the new model replaces stable at once. */
function noSteps(ctx: RolloutContext): CheckDecision | undefined {
  const { input, iso, notices } = ctx;
  const { spec, state } = input;
  if (spec.steps.length > 0) return undefined;
  if (input.freeze) {
    // Replacing stable at once is a promotion without a canary: it waits for the freeze's end.
    return {
      state,
      canaryWeight: 0,
      waiting: `${frozenText(input.freeze)}; revision ${spec.modelSha.slice(0, 12)} (no rollout steps) replaces stable after it`,
      notices,
      wantsAnalysis: false,
      heldByFreeze: true,
      ...untilEnd(input),
    };
  }
  const old = stableOf(ctx);
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

/** Never decides: starts (or restarts, if the spec moved on mid-rollout) the canary at step 0, weight 0. */
function startCanary(ctx: RolloutContext): undefined {
  const { spec } = ctx.input;
  const current = ctx.canary;
  if (current && current.modelSha === spec.modelSha) return undefined;
  if (current) {
    ctx.history = pushHistory(
      ctx.history,
      ended(
        current,
        'canary',
        current.startedAt,
        ctx.iso,
        `Superseded mid-rollout by ${spec.modelSha.slice(0, 12)}`,
      ),
    );
  }
  const canary: CanaryState = {
    modelSha: spec.modelSha,
    uri: spec.uri,
    revision: stableOf(ctx).revision + 1,
    startedAt: ctx.iso,
    step: 0,
    weight: 0,
    failures: 0,
    analysis: [],
  };
  ctx.canary = canary;
  ctx.notices.push({
    type: 'Normal',
    reason: 'CanaryStarted',
    message: `canary revision ${canary.revision} (${spec.modelSha.slice(0, 12)}) started`,
  });
  return undefined;
}

/** A user's abort wins over everything the canary does. */
function abortCommand(ctx: RolloutContext): CheckDecision | undefined {
  if (ctx.input.command !== 'abort') return undefined;
  return rollback(ctx, 'Aborted', `aborted by a user (${ABORT_ANNOTATION})`);
}

/** A drift alert on the canary rolls it back at once. */
function canaryDrift(ctx: RolloutContext): CheckDecision | undefined {
  if (!ctx.input.canaryDrift) return undefined;
  return rollback(ctx, 'DriftDetected', ctx.input.canaryDrift.message);
}

/** No traffic before the canary can serve it. */
function canaryNotReady(ctx: RolloutContext): CheckDecision | undefined {
  if (ctx.input.observed.canaryReadyReplicas >= 1) return undefined;
  const c = canaryOf(ctx);
  return keep(ctx, { ...c, weight: 0 }, `waiting for a ready canary pod (revision ${c.revision})`, {
    requeueAfterMs: 5000,
  });
}

/** crema.dev/promote=full: straight to stable. */
function promoteFullCommand(ctx: RolloutContext): CheckDecision | undefined {
  return ctx.input.command === 'promote-full' ? promote(ctx) : undefined;
}

/** Never decides: brings traffic to the current step's weight; its pause starts when the weight is set. */
function stepWeight(ctx: RolloutContext): undefined {
  const { spec } = ctx.input;
  const c = canaryOf(ctx);
  const step = spec.steps[c.step]!;
  if (c.weight === step.weight && c.stepStartedAt) return undefined;
  ctx.notices.push({
    type: 'Normal',
    reason: 'StepStarted',
    message: `step ${c.step + 1}/${spec.steps.length}: canary weight ${step.weight}%`,
  });
  ctx.canary = { ...c, weight: step.weight, stepStartedAt: ctx.iso };
  return undefined;
}

/** crema.dev/promote=step: on to the next step (or stable after the last), whatever the gates say. */
function promoteStepCommand(ctx: RolloutContext): CheckDecision | undefined {
  return ctx.input.command === 'promote-step' ? advance(ctx) : undefined;
}

/** spec.paused holds the canary where it is. */
function paused(ctx: RolloutContext): CheckDecision | undefined {
  return ctx.input.spec.paused ? keep(ctx, canaryOf(ctx), 'paused (spec.paused is true)') : undefined;
}

/**
 * Records a new analysis result of the current (gated) step: a Fail counts, and failures past
 * the limit roll the canary back (also during a freeze: it never blocks making things safer).
 */
function recordAnalysis(ctx: RolloutContext): CheckDecision | undefined {
  const { spec, analysis: a } = ctx.input;
  let c = canaryOf(ctx);
  if (!a || !stepIsGated(spec, c.step)) return undefined;
  c = {
    ...c,
    analysis: [{ step: c.step, verdict: a.verdict, at: a.at, message: a.message }, ...c.analysis].slice(
      0,
      ANALYSIS_LIMIT,
    ),
  };
  if (a.verdict === 'Fail') c = { ...c, failures: c.failures + 1 };
  ctx.canary = c;
  if (a.verdict === 'Fail' && c.failures > spec.failureLimit) {
    return rollback(
      ctx,
      'AnalysisFailed',
      `${a.message} (${c.failures} failed analyses, limit ${spec.failureLimit})`,
    );
  }
  return undefined;
}

/**
 * A gated step is left only after a passing analysis: a new result is recorded, too many
 * failures roll the canary back, and anything but a latest Pass holds it.
 */
function analysisGate(ctx: RolloutContext): CheckDecision | undefined {
  const { spec } = ctx.input;
  if (!stepIsGated(spec, canaryOf(ctx).step)) return undefined;
  const rolledBack = recordAnalysis(ctx);
  if (rolledBack) return rolledBack;
  const c = canaryOf(ctx);
  const last = c.analysis.find((r) => r.step === c.step);
  if (last?.verdict === 'Pass') return undefined;
  const why = !last
    ? 'waiting for the first analysis of this step'
    : last.verdict === 'Inconclusive'
      ? `analysis inconclusive: ${last.message}`
      : `analysis failed (${c.failures}/${spec.failureLimit} tolerated): ${last.message}`;
  return keep(ctx, c, why, { wantsAnalysis: true, requeueAfterMs: spec.analysisIntervalMs });
}

/** "frozen until …" for waiting messages. */
function frozenText(f: NonNullable<RolloutInput['freeze']>): string {
  return `frozen${f.until ? ` until ${f.until.toISOString()}` : ''}: StoreRegion freeze window ${f.name} is active`;
}

/** Come back when the freeze ends (the reconcile also wakes on any StoreRegion change). */
function untilEnd(input: RolloutInput): { requeueAfterMs?: number } {
  const until = input.freeze?.until;
  return until ? { requeueAfterMs: Math.max(0, until.getTime() - input.now.getTime()) } : {};
}

/**
 * A StoreRegion freeze holds the canary where it is: its weight is not raised (not even to the
 * current step's weight), its step does not advance and it is not promoted, by its pause or by
 * hand (a promote command waits, and says why). What makes things safer still happens: abort,
 * drift and readiness came before this check; analysis keeps running on a gated step and its
 * failures still roll the canary back. A Pass during the freeze counts after it: the pause and
 * the latest analysis decide at the freeze's end as if the freeze had not been there.
 */
function freezeHold(ctx: RolloutContext): CheckDecision | undefined {
  const { input } = ctx;
  if (!input.freeze) return undefined;
  const rolledBack = recordAnalysis(ctx);
  if (rolledBack) return rolledBack;
  const c = canaryOf(ctx);
  const gated = stepIsGated(input.spec, c.step) && !!c.stepStartedAt;
  const end = untilEnd(input).requeueAfterMs;
  const requeue = gated ? Math.min(end ?? input.spec.analysisIntervalMs, input.spec.analysisIntervalMs) : end;
  return keep(
    ctx,
    c,
    `${frozenText(input.freeze)}; the canary holds at step ${c.step + 1}, weight ${c.weight}%`,
    {
      wantsAnalysis: gated,
      heldByFreeze: true,
      ...(requeue !== undefined ? { requeueAfterMs: requeue } : {}),
    },
  );
}

/** Always decides: the step's pause, or a manual promotion when it has none, then the next step. */
function timeGate(ctx: RolloutContext): CheckDecision {
  const { spec, now } = ctx.input;
  const c = canaryOf(ctx);
  const step = spec.steps[c.step]!;
  if (step.pause === undefined)
    return keep(
      ctx,
      c,
      `step ${c.step + 1} holds until promoted (kubectl annotate rm ... ${PROMOTE_ANNOTATION}=step)`,
    );
  const elapsed = now.getTime() - new Date(c.stepStartedAt!).getTime();
  const pauseMs = parseDuration(step.pause);
  if (elapsed >= pauseMs) return advance(ctx);
  // A gated step keeps being analysed through its pause: a canary that passed its first
  // analysis and breaks later (a bad config rolled in, a slow leak) must not be promoted.
  const gated = stepIsGated(spec, c.step);
  return keep(
    ctx,
    c,
    `step ${c.step + 1} pauses ${step.pause} (${Math.ceil((pauseMs - elapsed) / 1000)} s left)`,
    {
      requeueAfterMs: gated ? Math.min(pauseMs - elapsed, spec.analysisIntervalMs) : pauseMs - elapsed,
      wantsAnalysis: gated,
    },
  );
}

/**
 * The decision chain, in order: the first check that returns a decision wins. Order matters:
 * stable drift comes before a promotion in progress (a rollback ends it), stop signals before
 * readiness, a freeze after everything that makes things safer and before everything that
 * moves the canary forward, and the commands before the gates they override.
 */
const ROLLOUT_CHECKS = [
  { name: 'firstRevision', check: firstRevision },
  { name: 'stableDrift', check: stableDrift },
  { name: 'promotionInProgress', check: promotionInProgress },
  { name: 'specIsStable', check: specIsStable },
  { name: 'rolledBackDigest', check: rolledBackDigest },
  { name: 'noSteps', check: noSteps },
  { name: 'startCanary', check: startCanary },
  { name: 'abortCommand', check: abortCommand },
  { name: 'canaryDrift', check: canaryDrift },
  { name: 'canaryNotReady', check: canaryNotReady },
  { name: 'freezeHold', check: freezeHold },
  { name: 'promoteFullCommand', check: promoteFullCommand },
  { name: 'stepWeight', check: stepWeight },
  { name: 'promoteStepCommand', check: promoteStepCommand },
  { name: 'paused', check: paused },
  { name: 'analysisGate', check: analysisGate },
  { name: 'timeGate', check: timeGate },
] as const satisfies readonly { readonly name: string; readonly check: RolloutCheck }[];

/** The name of one check of the rollout decision chain. */
export type RolloutCheckName = (typeof ROLLOUT_CHECKS)[number]['name'];

/** The rollout decision chain's checks, in the order they are tried. */
export const ROLLOUT_CHECK_NAMES: readonly RolloutCheckName[] = ROLLOUT_CHECKS.map((c) => c.name);

/** Runs the chain; the decision names the check that took it (stableDrift's alert-only pass keeps the inner one). */
function runChecks(input: RolloutInput): CheckDecision {
  const ctx: RolloutContext = {
    input,
    iso: input.now.toISOString(),
    ...(input.state.canary ? { canary: input.state.canary } : {}),
    history: input.state.history,
    notices: [],
  };
  for (const { name, check } of ROLLOUT_CHECKS) {
    const d = check(ctx);
    if (d) return { decidedBy: name, ...d };
  }
  // timeGate always decides.
  throw new Error('no rollout check decided');
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
