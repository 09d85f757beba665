/**
 * Pure status computation for a RecommenderModel: conditions from what the cluster shows, the
 * rollout state decided by the rollout machine (stable, canary, history: the only state kept
 * in status, so a restarted operator resumes mid-rollout), and the phase derived from the
 * conditions. lastTransitionTime only moves when a condition's status changes, so an
 * unchanged world computes an identical status and the reconcile writes nothing.
 */
import { lineageFromAnnotations } from '../../../../contracts/lineage.js';
import type { RolloutDecision, RolloutState } from '../../rollout/machine.js';
import type { PodProblem } from './pods.js';
import type { Condition, RecommenderModel, RecommenderModelStatus } from './types.js';

/** Deployment status fields the controller reads. */
export interface ObservedDeployment {
  readonly generation?: number;
  readonly observedGeneration?: number;
  readonly replicas?: number;
  readonly readyReplicas?: number;
  readonly availableReplicas?: number;
  readonly updatedReplicas?: number;
  readonly conditions?: ReadonlyArray<{ type: string; status: string; reason?: string; message?: string }>;
  /** The model digest on the Deployment's pod template. */
  readonly modelSha?: string;
}

/** Everything the status depends on, gathered by the reconcile. */
export interface StatusInput {
  readonly model: RecommenderModel;
  /** The stable Deployment as observed after applying (undefined if it does not exist yet). */
  readonly deployment: ObservedDeployment | undefined;
  /** The canary Deployment, when a rollout is in progress. */
  readonly canaryDeployment?: ObservedDeployment;
  /** The rollout machine's decision for this reconcile. */
  readonly rollout: RolloutDecision;
  /** Error from applying children, if the apply step failed. */
  readonly applyError?: string;
  /** The spec could not be turned into children (a request above its limit): nothing applied. */
  readonly specError?: string;
  /** A manual command this status acts on and whose annotation is not removed yet. */
  readonly pendingCommand?: 'promote-step' | 'promote-full' | 'abort';
  /** A setting the pods need is missing (e.g. no Redis address). */
  readonly configProblem?: PodProblem;
  /** A StoreRegion freeze window in effect for this model (rollout/freeze.ts). */
  readonly freeze?: { readonly name: string; readonly until: Date };
  /** Why pods of each track do not serve, read from the pods (pods.ts). */
  readonly podProblems?: {
    readonly stable?: PodProblem;
    readonly canary?: PodProblem;
    readonly router?: PodProblem;
  };
  readonly now: Date;
}

/** Reads the rollout state the machine keeps in status. */
export function rolloutStateOf(model: RecommenderModel): RolloutState {
  const s = model.status ?? {};
  const spec = model.spec.model;
  return {
    ...(s.stable?.modelSha
      ? {
          stable: {
            modelSha: s.stable.modelSha,
            // Status written before uris were recorded: the stable digest is the spec's then.
            uri: s.stable.uri ?? spec.uri,
            revision: s.stable.revision ?? 1,
            since: s.stable.since ?? '',
          },
        }
      : {}),
    ...(s.canary?.modelSha
      ? {
          canary: {
            modelSha: s.canary.modelSha,
            uri: s.canary.uri ?? spec.uri,
            revision: s.canary.revision ?? (s.stable?.revision ?? 0) + 1,
            startedAt: s.canary.startedAt ?? '',
            step: s.canary.step ?? 0,
            weight: s.canary.weight ?? 0,
            ...(s.canary.stepStartedAt ? { stepStartedAt: s.canary.stepStartedAt } : {}),
            failures: s.canary.failures ?? 0,
            analysis: (s.canary.analysis ?? []).map((a) => ({
              step: a.step ?? 0,
              verdict: a.verdict ?? 'Inconclusive',
              at: a.at ?? '',
              message: a.message ?? '',
            })),
          },
        }
      : {}),
    ...(s.promotion?.modelSha
      ? {
          promotion: {
            modelSha: s.promotion.modelSha,
            uri: s.promotion.uri ?? spec.uri,
            revision: s.promotion.revision ?? s.stable?.revision ?? 1,
            startedAt: s.promotion.startedAt ?? '',
            weight: s.promotion.weight ?? 0,
          },
        }
      : {}),
    ...(s.abortedModelSha ? { abortedModelSha: s.abortedModelSha } : {}),
    history: (s.history ?? []).map((h) => ({
      revision: h.revision ?? 0,
      modelSha: h.modelSha ?? '',
      ...(h.uri ? { uri: h.uri } : {}),
      ...(h.track ? { track: h.track } : {}),
      startedAt: h.startedAt ?? '',
      endedAt: h.endedAt ?? '',
      reason: h.reason ?? '',
    })),
  };
}

/** Sets condition `c` in `list`, keeping lastTransitionTime when the status did not change. */
export function setCondition(list: readonly Condition[], c: Condition, now: Date): Condition[] {
  const old = list.find((x) => x.type === c.type);
  const lastTransitionTime =
    old && old.status === c.status && old.lastTransitionTime ? old.lastTransitionTime : now.toISOString();
  return [...list.filter((x) => x.type !== c.type), { ...c, lastTransitionTime }].sort((a, b) =>
    a.type.localeCompare(b.type),
  );
}

/**
 * Whether Deployment `d`'s template carries model `sha` and has replaced every pod of an older
 * template (the Deployment controller has observed its latest spec).
 */
function templateRolledOut(d: ObservedDeployment | undefined, sha: string): d is ObservedDeployment {
  return (
    !!d &&
    d.modelSha === sha &&
    (d.observedGeneration ?? 0) >= (d.generation ?? 0) &&
    (d.updatedReplicas ?? 0) >= (d.replicas ?? 0)
  );
}

/**
 * Whether every pod of Deployment `d` runs model `sha` and is ready: the template rolled out,
 * and at least one replica, all of them ready and available.
 */
export function runsEverywhere(d: ObservedDeployment | undefined, sha: string): boolean {
  if (!templateRolledOut(d, sha)) return false;
  const replicas = d.replicas ?? 0;
  return replicas >= 1 && (d.readyReplicas ?? 0) >= replicas && (d.availableReplicas ?? 0) >= replicas;
}

/** The first rollout-health violation of a Deployment, or null when it serves. */
function deploymentProblem(d: ObservedDeployment | undefined): { reason: string; message: string } | null {
  if (!d) return { reason: 'DeploymentMissing', message: 'the stable Deployment does not exist yet' };
  const failed = d.conditions?.find(
    (c) =>
      (c.type === 'Progressing' && c.status === 'False') ||
      (c.type === 'ReplicaFailure' && c.status === 'True'),
  );
  if (failed)
    return {
      reason: failed.reason ?? 'DeploymentFailed',
      message: failed.message ?? 'the Deployment failed',
    };
  // One ready pod serves; how many more is the HPA's business.
  return (d.readyReplicas ?? 0) >= 1 ? null : { reason: 'WaitingForReplicas', message: '' };
}

/** Computes the full status of a model from its observed children and the rollout decision. */
export function computeStatus(input: StatusInput): RecommenderModelStatus {
  const { model, deployment: d, now, rollout } = input;
  const prev = model.status ?? {};
  const generation = model.metadata?.generation ?? 0;
  const { stable, canary, promotion, abortedModelSha, history } = rollout.state;
  const stableSha = stable?.modelSha ?? model.spec.model.sha256;
  const revision = stable?.revision ?? 1;

  const rolledOut = templateRolledOut(d, stableSha);
  const problem = deploymentProblem(d);
  const pods = input.podProblems ?? {};
  // What keeps the pods from serving, most specific first: a missing setting, then what the
  // stable pods show, then the Deployment's own conditions.
  const stableProblem = input.configProblem ?? pods.stable ?? null;

  let conditions: Condition[] = prev.conditions ?? [];
  const cond = (type: string, status: Condition['status'], reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      { type, status, reason, message, observedGeneration: generation },
      now,
    );
  };

  const failure = input.specError
    ? { reason: 'InvalidSpec', message: input.specError }
    : input.applyError
      ? { reason: 'ApplyFailed', message: input.applyError }
      : null;
  const degraded = [
    failure,
    stableProblem,
    problem && problem.reason !== 'WaitingForReplicas' && problem.reason !== 'DeploymentMissing'
      ? problem
      : null,
    pods.canary ?? null,
    pods.router ?? null,
  ].find((x) => x !== null);
  if (degraded) {
    cond('Degraded', 'True', degraded.reason, degraded.message);
  } else {
    cond('Degraded', 'False', 'AsExpected', 'children applied and healthy');
  }

  if (canary) {
    const where = `canary revision ${canary.revision} at step ${canary.step + 1}, weight ${canary.weight}%`;
    cond('Progressing', 'True', 'Canary', rollout.waiting ? `${where}: ${rollout.waiting}` : where);
  } else if (promotion) {
    cond(
      'Progressing',
      'True',
      'Promoting',
      rollout.waiting ??
        `revision ${promotion.revision} promoted; stable pods rolling to it (${d?.updatedReplicas ?? 0}/${d?.replicas ?? 0} updated)`,
    );
  } else if (!rolledOut) {
    cond('Progressing', 'True', 'RollingOut', `rolling out revision ${revision} (${stableSha.slice(0, 12)})`);
  } else if (problem) {
    cond(
      'Progressing',
      'True',
      'WaitingForReplicas',
      `revision ${revision} applied; ${d?.readyReplicas ?? 0} ready replicas, need 1`,
    );
  } else if (rollout.waiting) {
    cond('Progressing', 'False', 'Blocked', rollout.waiting);
  } else {
    cond('Progressing', 'False', 'RolloutComplete', `revision ${revision} rolled out`);
  }

  if (rollout.stableDrift) {
    cond('DriftDetected', 'True', 'FeatureDrift', rollout.stableDrift.message);
  } else if (conditions.some((c) => c.type === 'DriftDetected')) {
    cond('DriftDetected', 'False', 'NoDrift', 'no drift alert is firing for the stable revision');
  }

  const freeze = input.freeze;
  if (freeze) {
    const until = freeze.until.toISOString();
    cond(
      'Frozen',
      'True',
      rollout.heldByFreeze ? 'RolloutHeld' : 'FreezeWindow',
      rollout.heldByFreeze
        ? `rollout held until ${until}: StoreRegion freeze window ${freeze.name} is active (${rollout.waiting ?? 'no step advances'})`
        : `StoreRegion freeze window ${freeze.name} is active until ${until}; a new revision would wait for its end`,
    );
  } else if (conditions.some((c) => c.type === 'Frozen')) {
    cond('Frozen', 'False', 'NoFreeze', 'no StoreRegion freeze window is active');
  }

  if (rollout.rolledBack) {
    cond('RolledBack', 'True', rollout.rolledBack.reason, rollout.rolledBack.message);
  } else if (canary && conditions.some((c) => c.type === 'RolledBack' && c.status === 'True')) {
    cond('RolledBack', 'False', 'NewRollout', `canary revision ${canary.revision} started`);
  }

  // A refused spec leaves running pods as they are: Ready still says whether they serve.
  const ready = !input.applyError && rolledOut && !problem;
  // Not ready: say why in the most specific terms known (a pod's reason beats "waiting").
  const why =
    failure ?? stableProblem ?? (problem ? { reason: problem.reason, message: problem.message } : null);
  cond(
    'Ready',
    ready ? 'True' : 'False',
    ready ? 'Serving' : (why?.reason ?? 'RollingOut'),
    ready
      ? `revision ${revision} serving with ${d?.readyReplicas ?? 0} ready replicas`
      : why?.message || `waiting for revision ${revision} to roll out`,
  );

  const lineage = lineageOf(model);
  return {
    observedGeneration: generation,
    phase: derivePhase(conditions),
    conditions,
    ...(stable
      ? {
          stable: {
            modelSha: stable.modelSha,
            uri: stable.uri,
            revision: stable.revision,
            since: stable.since,
          },
        }
      : {}),
    ...(canary
      ? {
          canary: {
            modelSha: canary.modelSha,
            uri: canary.uri,
            revision: canary.revision,
            startedAt: canary.startedAt,
            step: canary.step,
            weight: rollout.canaryWeight,
            ...(canary.stepStartedAt ? { stepStartedAt: canary.stepStartedAt } : {}),
            failures: canary.failures,
            readyReplicas: input.canaryDeployment?.readyReplicas ?? 0,
            ...(canary.analysis.length ? { analysis: canary.analysis.map((a) => ({ ...a })) } : {}),
          },
        }
      : {}),
    ...(promotion ? { promotion: { ...promotion } } : {}),
    ...(freeze ? { freeze: { window: freeze.name, until: freeze.until.toISOString() } } : {}),
    ...(input.pendingCommand ? { pendingCommand: input.pendingCommand } : {}),
    ...(abortedModelSha ? { abortedModelSha } : {}),
    readyReplicas: d?.readyReplicas ?? 0,
    replicas: d?.replicas ?? 0,
    ...(history.length ? { history: history.map((h) => ({ ...h })) } : {}),
    ...(lineage ? { lineage } : {}),
  };
}

/** Phase is a summary of the conditions, never stored as the truth. */
export function derivePhase(conditions: readonly Condition[]): NonNullable<RecommenderModelStatus['phase']> {
  const is = (t: string) => conditions.find((c) => c.type === t)?.status === 'True';
  if (is('Degraded')) return 'Degraded';
  // A rollout a freeze window holds back says so in the phase (and the Frozen-Until column).
  if (conditions.find((c) => c.type === 'Frozen' && c.status === 'True')?.reason === 'RolloutHeld')
    return 'Frozen';
  const progressing = conditions.find((c) => c.type === 'Progressing');
  if (is('Progressing') && (progressing?.reason === 'Canary' || progressing?.reason === 'Promoting'))
    return 'Progressing';
  if (is('RolledBack')) return 'RolledBack';
  if (is('Ready')) return 'Ready';
  if (is('Progressing')) return 'Progressing';
  return 'Pending';
}

/** Lineage from the annotations training writes on the model resource. */
function lineageOf(model: RecommenderModel): RecommenderModelStatus['lineage'] | undefined {
  const lineage = lineageFromAnnotations(model.metadata?.annotations ?? {});
  return Object.keys(lineage).length ? lineage : undefined;
}
