/**
 * How `kubectl crema status` judges a model's rollout (pure): healthy, failed, or still going,
 * with the sentence that says why. Only status computed from the current spec counts, so a
 * command run right after `kubectl apply` waits for the operator instead of reporting the
 * previous revision's health.
 */
import type { RecommenderModel } from '../api/v1alpha1/index.js';
import { EXIT, type ExitCode } from './errors.js';
import { statusIsCurrent } from './render.js';

export type Verdict = 'Healthy' | 'Failed' | 'Progressing' | 'Paused' | 'Pending';

export interface ModelVerdict {
  readonly verdict: Verdict;
  /** The model's phase as the operator wrote it. */
  readonly phase?: string;
  readonly message: string;
}

function conditionMessage(m: RecommenderModel, type: string): string | undefined {
  const c = m.status?.conditions?.find((x) => x.type === type && x.status === 'True');
  return c ? [c.reason, c.message].filter(Boolean).join(': ') : undefined;
}

/** Judges model `m` as it stands. */
export function judgeModel(m: RecommenderModel): ModelVerdict {
  const s = m.status;
  const gen = m.metadata?.generation ?? 0;
  if (!s?.phase) return { verdict: 'Pending', message: 'the operator has not written a status yet' };
  const phase = s.phase;
  if (!statusIsCurrent(m))
    return {
      verdict: 'Pending',
      phase,
      message: `waiting for the operator to observe generation ${gen} (status is of ${s.observedGeneration ?? '?'})`,
    };
  if (phase === 'Degraded')
    return { verdict: 'Failed', phase, message: conditionMessage(m, 'Degraded') ?? 'the model is Degraded' };
  if (phase === 'RolledBack')
    return {
      verdict: 'Failed',
      phase,
      message: conditionMessage(m, 'RolledBack') ?? 'the canary was rolled back',
    };
  const progressing = conditionMessage(m, 'Progressing');
  if (s.canary || s.promotion || phase === 'Progressing') {
    const where = s.canary
      ? `canary revision ${s.canary.revision ?? '?'} at step ${(s.canary.step ?? 0) + 1}, weight ${s.canary.weight ?? 0}%`
      : s.promotion
        ? `revision ${s.promotion.revision ?? '?'} promoted, stable pods rolling`
        : 'rolling out';
    if (m.spec.paused) return { verdict: 'Paused', phase, message: `${where}; paused (spec.paused)` };
    return { verdict: 'Progressing', phase, message: progressing ?? where };
  }
  if (phase === 'Ready') {
    const rev = s.stable?.revision;
    return {
      verdict: 'Healthy',
      phase,
      message: `revision ${rev ?? '?'} serving, ${s.readyReplicas ?? 0}/${s.replicas ?? 0} replicas ready`,
    };
  }
  return {
    verdict: 'Pending',
    phase,
    message: conditionMessage(m, 'Ready') ?? progressing ?? `phase ${phase}`,
  };
}

/** The exit code of a final verdict (`status` without --watch, or a watch that ended). */
export function exitCodeOf(v: Verdict): ExitCode {
  return v === 'Healthy' ? EXIT.ok : v === 'Failed' ? EXIT.failed : EXIT.inProgress;
}

/** Whether a watch stops at this verdict. */
export function isFinal(v: Verdict): boolean {
  return v === 'Healthy' || v === 'Failed';
}
