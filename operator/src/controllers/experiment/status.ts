/**
 * Pure status of an Experiment: per variant the numbers a person audits (exposures, conversions,
 * mean order value, attach rate, lift with its interval, statistic, p-value, guardrails), SRM,
 * look number, decision, winner and reason, conditions kept as a map by type, and the phase
 * derived from the conditions. lastTransitionTime moves only when a condition's status changes.
 */
import { setCondition } from '../recommendermodel/status.js';
import type { Ending, GuardrailVerdict, Problem } from './decide.js';
import type { VariantSums } from './gather.js';
import type { Analysis } from './stats-api.js';
import type { Condition, Experiment, ExperimentStatus } from './types.js';

/** Everything the status depends on. */
export interface ExperimentStatusInput {
  readonly experiment: Experiment;
  readonly now: Date;
  readonly problem: Problem | null;
  /** Traffic is split by the spec's weights (the router config is applied). */
  readonly splitting: boolean;
  readonly startedAt?: string;
  readonly ending?: Ending;
  /** This reconcile analysed new counts (a look: `looks` + 1). */
  readonly looked: boolean;
  /**
   * This reconcile read (or tried to read) serving's counts, new or not: `lastLookAt` moves, so
   * the next read waits a look interval (reconcile.ts).
   */
  readonly read?: boolean;
  readonly sums?: ReadonlyMap<string, VariantSums>;
  readonly analysis?: Analysis;
  readonly guardrails?: ReadonlyMap<string, readonly GuardrailVerdict[]>;
  /** Prometheus could not be read (the look did not happen). */
  readonly dataError?: string;
  /** Prometheus answered, but with no new counts (checkCountsFresh): no look, counts kept. */
  readonly noNewData?: string;
  readonly pendingCommand?: 'conclude' | 'stop';
  readonly promotion?: ExperimentStatus['promotion'];
  /** Writing the objects or the promotion failed. */
  readonly applyError?: string;
}

const ratio = (a: number, n: number) => (n > 0 ? a / n : 0);
const r6 = (v: number) => Math.round(v * 1e6) / 1e6;

/** `+3.1% [+0.4%, +5.9%]`. */
export function formatLift(lift: number, lo: number, hi: number): string {
  const p = (v: number) => `${v >= 0 ? '+' : ''}${(v * 100).toFixed(1)}%`;
  return `${p(lift)} [${p(lo)}, ${p(hi)}]`;
}

/** Computes the Experiment's status. */
export function computeExperimentStatus(i: ExperimentStatusInput): ExperimentStatus {
  const { experiment: exp, now } = i;
  const prev = exp.status ?? {};
  const generation = exp.metadata?.generation ?? 0;
  let conditions: Condition[] = prev.conditions ?? [];
  const cond = (type: string, status: Condition['status'], reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      { type, status, reason, message, observedGeneration: generation },
      now,
    );
  };
  const drop = (type: string) => (conditions = conditions.filter((c) => c.type !== type));

  if (i.problem) cond('Valid', 'False', i.problem.reason, `${i.problem.message}; traffic is not split`);
  else
    cond(
      'Valid',
      'True',
      'ReferencesResolved',
      "every variant names a RecommenderModel of the control's task",
    );

  const ending = i.ending;
  if (ending) {
    cond(ending.phase, 'True', ending.reason, ending.message);
    cond('Running', 'False', ending.phase, `ended: ${ending.message}; traffic goes to the control`);
  } else if (i.splitting && !i.problem) {
    cond(
      'Running',
      'True',
      'TrafficSplit',
      `users split by sticky hash: ${exp.spec.variants.map((v) => `${v.name} ${v.weight}%`).join(', ')}`,
    );
  } else {
    cond(
      'Running',
      'False',
      i.problem ? i.problem.reason : 'Pending',
      i.problem ? i.problem.message : 'waiting to split traffic',
    );
  }

  if (i.dataError) cond('DataAvailable', 'False', 'PrometheusUnavailable', i.dataError);
  else if (i.noNewData) cond('DataAvailable', 'False', 'NoNewData', `${i.noNewData}; counts kept`);
  else if (i.looked) cond('DataAvailable', 'True', 'Read', 'serving counts read from Prometheus');

  const srm = i.analysis?.srm ?? prev.srm;
  if (i.analysis) {
    if (i.analysis.srm.mismatch)
      cond(
        'SampleRatioMismatch',
        'True',
        'SplitBroken',
        `exposures do not match the weights (SRM p=${i.analysis.srm.pValue.toPrecision(3)}); no decision is made`,
      );
    else
      cond('SampleRatioMismatch', 'False', 'SplitAsPlanned', `SRM p=${i.analysis.srm.pValue.toPrecision(3)}`);
  }

  const winner = ending?.winner;
  const control = exp.spec.variants[0]!.name;
  const promotes = !!winner && winner !== control;
  if (promotes && exp.spec.decision?.autoPromote) {
    drop('WinnerAwaitsPromotion');
    if (i.promotion?.at)
      cond(
        'Promoted',
        'True',
        'CanaryStarted',
        `${winner}'s model ${i.promotion.sha256?.slice(0, 12)} given to RecommenderModel ${i.promotion.model}; its canary rollout and analysis take it from here`,
      );
    else
      cond('Promoted', 'False', 'Promoting', `promoting ${winner}'s model to the control RecommenderModel`);
  } else if (promotes) {
    cond(
      'WinnerAwaitsPromotion',
      'True',
      'ManualPromotion',
      `variant ${winner} won; decision.autoPromote is off, so a person promotes its model (${exp.spec.variants.find((v) => v.name === winner)?.modelRef}) to ${exp.spec.variants[0]!.modelRef}`,
    );
  }
  if (i.applyError) cond('Degraded', 'True', 'ApplyFailed', i.applyError);
  else drop('Degraded');

  const guardrailsOf = (variant: string) => {
    const g = i.guardrails?.get(variant) ?? [];
    return g.length
      ? { guardrails: g.map((x) => ({ ...x, ...(x.value !== undefined ? { value: r6(x.value) } : {}) })) }
      : {};
  };
  const comparisons = new Map((i.analysis?.comparisons ?? []).map((c) => [c.variant, c]));
  const prevVariants = new Map((prev.variants ?? []).map((v) => [v.name, v]));
  const variants = i.sums
    ? exp.spec.variants.map((v) => {
        const s = i.sums!.get(v.name)!;
        const n = s.conversion.n;
        const c = comparisons.get(v.name);
        return {
          name: v.name,
          modelRef: v.modelRef,
          exposures: n,
          conversions: Math.round(s.conversion.sumY),
          conversionRate: r6(ratio(s.conversion.sumY, n)),
          meanOrderValue: r6(ratio(s.orderValue.sumY, n)),
          attachRate: r6(ratio(s.attachRate.sumY, n)),
          ...(c
            ? {
                lift: r6(c.lift),
                ciLow: r6(c.liftInterval[0]),
                ciHigh: r6(c.liftInterval[1]),
                statistic: r6(c.statistic),
                pValue: r6(c.adjustedPValue),
                significant: c.significant,
                varianceReduction: r6(c.varianceReduction),
              }
            : {}),
          ...guardrailsOf(v.name),
        };
      })
    : // No new counts: status keeps its own; this reconcile's guardrail verdicts still show.
      exp.spec.variants.map((v) => ({
        ...(prevVariants.get(v.name) ?? { name: v.name, modelRef: v.modelRef }),
        ...guardrailsOf(v.name),
      }));

  // Lift column: the winner's, else the best comparison's.
  const shown = winner
    ? comparisons.get(winner)
    : [...comparisons.values()].sort((a, b) => b.lift - a.lift)[0];
  const lift = shown ? formatLift(shown.lift, shown.liftInterval[0], shown.liftInterval[1]) : prev.lift;

  const reason =
    ending?.message ??
    i.problem?.message ??
    i.dataError ??
    (i.noNewData ? `no new data: ${i.noNewData}` : undefined) ??
    i.analysis?.reason ??
    // Between looks the last look's reason stands (only a look's: a problem or read error that
    // has cleared since is not carried).
    (i.splitting && !i.looked && !i.read && lastReasonWasALook(prev) ? prev.reason : undefined) ??
    (i.splitting ? 'collecting data' : 'waiting to split traffic');
  return {
    observedGeneration: generation,
    phase: derivePhase(conditions),
    conditions,
    variants,
    ...(srm ? { srm: { pValue: r6(srm.pValue ?? 1), mismatch: !!srm.mismatch } } : {}),
    looks: (prev.looks ?? 0) + (i.looked ? 1 : 0),
    ...(i.looked || i.read
      ? { lastLookAt: now.toISOString() }
      : prev.lastLookAt
        ? { lastLookAt: prev.lastLookAt }
        : {}),
    decision: ending
      ? ending.phase === 'Stopped'
        ? 'stopped'
        : winner
          ? 'winner'
          : 'inconclusive'
      : (i.analysis?.decision ?? prev.decision ?? 'continue'),
    ...(winner ? { winner } : {}),
    ...(lift ? { lift } : {}),
    reason: reason.slice(0, 1024),
    ...(i.startedAt ? { startedAt: i.startedAt } : {}),
    ...(ending ? { concludedAt: ending.at } : {}),
    ...(i.pendingCommand ? { pendingCommand: i.pendingCommand } : {}),
    ...(i.promotion ? { promotion: i.promotion } : {}),
  };
}

/** Whether status's reason came from a look (valid references, counts read). */
function lastReasonWasALook(prev: ExperimentStatus): boolean {
  const c = (t: string) => prev.conditions?.find((x) => x.type === t);
  return (
    !!prev.lastLookAt &&
    !!prev.reason &&
    c('Valid')?.status !== 'False' &&
    c('DataAvailable')?.reason !== 'PrometheusUnavailable'
  );
}

/** Phase from the conditions: an ending wins, then Running, else Pending. */
export function derivePhase(conditions: readonly Condition[]): NonNullable<ExperimentStatus['phase']> {
  const is = (t: string) => conditions.find((c) => c.type === t)?.status === 'True';
  if (is('Stopped')) return 'Stopped';
  if (is('Concluded')) return 'Concluded';
  if (is('Running')) return 'Running';
  return 'Pending';
}

/** The ending recorded in status (Concluded/Stopped condition), if any. */
export function endingOf(exp: Experiment): Ending | undefined {
  const s = exp.status;
  for (const phase of ['Stopped', 'Concluded'] as const) {
    const c = s?.conditions?.find((x) => x.type === phase && x.status === 'True');
    if (c)
      return {
        phase,
        reason: c.reason ?? phase,
        message: c.message ?? '',
        ...(s?.winner ? { winner: s.winner } : {}),
        at: s?.concludedAt ?? c.lastTransitionTime ?? '',
      };
  }
  return undefined;
}
