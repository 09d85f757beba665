/**
 * The Experiment's decisions, pure: a chain of reference checks `(context) → problem | null`
 * (the first problem keeps the experiment from splitting traffic), then the step policy, tried in
 * order: an ended experiment stays ended; a manual stop or conclude; a guardrail breach (stop
 * only: it never helps a variant win); the statistics' winner; maxDuration (inconclusive);
 * otherwise keep running.
 */
import type { ExperimentMetric } from '../../../../contracts/experiments.js';
import type { ModelHealth, VariantSums } from './gather.js';
import type { Analysis, AnalysisInput } from './stats-api.js';
import type { Experiment, RecommenderModel } from './types.js';

/** A problem with the spec's references: a condition reason and its message. */
export interface Problem {
  readonly reason: string;
  readonly message: string;
}

/** What the reference checks look at. */
export interface CheckContext {
  readonly experiment: Experiment;
  /** RecommenderModels of the experiment's namespace, by name. */
  readonly models: ReadonlyMap<string, RecommenderModel>;
  /** The other Experiments of the namespace. */
  readonly others: readonly Experiment[];
}

type Check = (c: CheckContext) => Problem | null;

const missingModels: Check = ({ experiment, models }) => {
  const missing = experiment.spec.variants.filter((v) => !models.has(v.modelRef));
  if (missing.length === 0) return null;
  return {
    reason: 'ModelNotFound',
    message: missing
      .map(
        (v) =>
          `variant ${v.name}: RecommenderModel ${v.modelRef} not found in ${experiment.metadata?.namespace}`,
      )
      .join('; '),
  };
};

const taskMismatch: Check = ({ experiment, models }) => {
  const [control, ...rest] = experiment.spec.variants;
  const task = models.get(control!.modelRef)?.spec.model.task;
  const other = rest.find((v) => models.get(v.modelRef)?.spec.model.task !== task);
  if (!other) return null;
  return {
    reason: 'TaskMismatch',
    message: `variant ${other.name}: RecommenderModel ${other.modelRef} has task ${models.get(other.modelRef)?.spec.model.task}, the control's (${control!.modelRef}) is ${task}`,
  };
};

/** Whether `a` holds its models before `b` (older first, then by name). */
function holdsBefore(a: Experiment, b: Experiment): boolean {
  // The cache holds creationTimestamp as the API's string (typed Date by client-node).
  const t = (e: Experiment) => Date.parse(String(e.metadata?.creationTimestamp ?? '')) || 0;
  return t(a) !== t(b) ? t(a) < t(b) : (a.metadata?.name ?? '') < (b.metadata?.name ?? '');
}

const claimedElsewhere: Check = ({ experiment, others }) => {
  const mine = new Set(experiment.spec.variants.map((v) => v.modelRef));
  const running = experiment.status?.phase === 'Running';
  for (const o of others) {
    if (o.status?.phase !== 'Running') continue;
    // Two that both run (a race) keep the older one running.
    if (running && holdsBefore(experiment, o)) continue;
    const shared = o.spec.variants.find((v) => mine.has(v.modelRef));
    if (shared)
      return {
        reason: 'ModelClaimed',
        message: `RecommenderModel ${shared.modelRef} is in Running experiment ${o.metadata?.name}; one model, one running experiment`,
      };
  }
  return null;
};

/** The reference checks, in order. */
export const REFERENCE_CHECKS: readonly Check[] = [missingModels, taskMismatch, claimedElsewhere];

/** The first problem with the experiment's references, or null. */
export function checkReferences(c: CheckContext): Problem | null {
  for (const check of REFERENCE_CHECKS) {
    const p = check(c);
    if (p) return p;
  }
  return null;
}

/** Parses maxDuration (`72h`, `14d`, `30m`) to milliseconds. */
export function parseMaxDuration(d: string): number {
  const m = /^([0-9]+)(m|h|d)$/.exec(d);
  if (!m) throw new RangeError(`maxDuration ${JSON.stringify(d)} is not like 72h or 14d`);
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
}

/** A guardrail verdict of one variant. */
export interface GuardrailVerdict {
  readonly name: 'p99LatencyMs' | 'errorRate';
  readonly value?: number;
  readonly limit: number;
  readonly verdict: 'Pass' | 'Breached' | 'NoData';
}

/** The guardrail verdicts of one variant's model. */
export function judgeGuardrails(
  spec: Experiment['spec']['guardrails'],
  health: ModelHealth | undefined,
): GuardrailVerdict[] {
  const out: GuardrailVerdict[] = [];
  const judge = (name: GuardrailVerdict['name'], limit: number | undefined, value: number | undefined) => {
    if (limit === undefined) return;
    if (value === undefined) out.push({ name, limit, verdict: 'NoData' });
    else out.push({ name, limit, value, verdict: value > limit ? 'Breached' : 'Pass' });
  };
  judge('p99LatencyMs', spec?.p99LatencyMs, health?.p99Ms);
  judge('errorRate', spec?.errorRate, health?.errorRate);
  return out;
}

/** The statistics' input for the primary metric. */
export function buildAnalysisInput(
  experiment: Experiment,
  sums: ReadonlyMap<string, VariantSums>,
): AnalysisInput {
  const metric = experiment.spec.primaryMetric as ExperimentMetric;
  return {
    variants: experiment.spec.variants.map((v) => ({
      name: v.name,
      weight: v.weight,
      sums: sums.get(v.name)![metric],
    })),
    alpha: experiment.spec.decision?.alpha ?? 0.05,
    minSamplesPerVariant: experiment.spec.minSamplesPerVariant ?? 1000,
    binary: metric !== 'orderValue',
  };
}

/** How an experiment ended. */
export interface Ending {
  readonly phase: 'Concluded' | 'Stopped';
  /** PascalCase: Winner, Inconclusive, ManualConclude, ManualStop, GuardrailBreached. */
  readonly reason: string;
  readonly message: string;
  readonly winner?: string;
  readonly at: string;
}

/** Everything the step decides on. */
export interface StepInput {
  readonly experiment: Experiment;
  readonly now: Date;
  /** When traffic was first split (status.startedAt). */
  readonly startedAt?: string;
  readonly ending?: Ending;
  readonly command?: 'conclude' | 'stop';
  readonly analysis?: Analysis;
  /** Guardrail verdicts by variant name. */
  readonly guardrails: ReadonlyMap<string, readonly GuardrailVerdict[]>;
}

/** The step: an ending (new or kept), or none (keep running). */
export interface StepDecision {
  readonly ending?: Ending;
  /** True when this step ends the experiment (and not an earlier one). */
  readonly endsNow: boolean;
  /** A command that had nothing left to do (the experiment had ended). */
  readonly commandIgnored?: boolean;
}

type Policy = (i: StepInput) => Omit<Ending, 'at'> | null;

const manual: Policy = ({ command, analysis }) => {
  if (command === 'stop')
    return { phase: 'Stopped', reason: 'ManualStop', message: 'stopped by the crema.dev/stop annotation' };
  if (command !== 'conclude') return null;
  const winner = analysis?.decision === 'winner' ? analysis.winner : undefined;
  return {
    phase: 'Concluded',
    reason: 'ManualConclude',
    message: `concluded by the crema.dev/conclude annotation; ${winner ? `winner ${winner}` : 'no winner so far'}`,
    ...(winner ? { winner } : {}),
  };
};

const guardrail: Policy = ({ experiment, guardrails }) => {
  // The control's own guardrails are reported, not acted on: stopping returns traffic to it.
  for (const v of experiment.spec.variants.slice(1)) {
    const breach = guardrails.get(v.name)?.find((g) => g.verdict === 'Breached');
    if (breach)
      return {
        phase: 'Stopped',
        reason: 'GuardrailBreached',
        message: `variant ${v.name} (${v.modelRef}) breached ${breach.name}: ${round(breach.value!)} > ${breach.limit}`,
      };
  }
  return null;
};

const winner: Policy = ({ analysis }) =>
  analysis?.decision === 'winner' && analysis.winner
    ? { phase: 'Concluded', reason: 'Winner', message: analysis.reason, winner: analysis.winner }
    : null;

const timeUp: Policy = ({ experiment, now, startedAt }) => {
  if (!startedAt) return null;
  const max = parseMaxDuration(experiment.spec.maxDuration ?? '14d');
  if (now.getTime() - Date.parse(startedAt) < max) return null;
  return {
    phase: 'Concluded',
    reason: 'Inconclusive',
    message: `maxDuration ${experiment.spec.maxDuration ?? '14d'} reached without a winner`,
  };
};

/** The step policies, in order. */
export const STEP_POLICIES: readonly Policy[] = [manual, guardrail, winner, timeUp];

/** Decides this reconcile's step. */
export function computeExperimentStep(i: StepInput): StepDecision {
  if (i.ending) return { ending: i.ending, endsNow: false, ...(i.command ? { commandIgnored: true } : {}) };
  for (const p of STEP_POLICIES) {
    const e = p(i);
    if (e) return { ending: { ...e, at: i.now.toISOString() }, endsNow: true };
  }
  return { endsNow: false };
}

function round(v: number): string {
  return Math.abs(v) >= 10 ? v.toFixed(0) : v.toPrecision(3);
}
