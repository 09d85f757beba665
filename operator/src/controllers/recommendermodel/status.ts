/**
 * Pure status computation for a RecommenderModel: conditions from what the cluster shows
 * (never from the old status), the stable revision and its history, and the phase derived
 * from the conditions. lastTransitionTime only moves when a condition's status changes, so an
 * unchanged world computes an identical status and the reconcile writes nothing.
 */
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
  /** Error from applying children, if the apply step failed. */
  readonly applyError?: string;
  readonly now: Date;
}

const HISTORY_LIMIT = 10;

/** Sets condition `c` in `list`, keeping lastTransitionTime when the status did not change. */
export function setCondition(list: readonly Condition[], c: Condition, now: Date): Condition[] {
  const old = list.find((x) => x.type === c.type);
  const lastTransitionTime =
    old && old.status === c.status && old.lastTransitionTime ? old.lastTransitionTime : now.toISOString();
  return [...list.filter((x) => x.type !== c.type), { ...c, lastTransitionTime }].sort((a, b) =>
    a.type.localeCompare(b.type),
  );
}

/** The first rollout-health violation of the stable Deployment, or null when it serves. */
function deploymentProblem(
  d: ObservedDeployment | undefined,
  minReady: number,
): { reason: string; message: string } | null {
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
  return (d.readyReplicas ?? 0) >= minReady ? null : { reason: 'WaitingForReplicas', message: '' };
}

/** Computes the full status of a model from its observed children. */
export function computeStatus(input: StatusInput): RecommenderModelStatus {
  const { model, deployment: d, now } = input;
  const prev = model.status ?? {};
  const generation = model.metadata?.generation ?? 0;
  const sha = model.spec.model.sha256;
  // One ready pod serves; how many more is the HPA's business.
  const minReady = 1;

  // Revisions: a new digest starts a new stable revision; the old one goes to history.
  let stable = prev.stable;
  let history = prev.history ?? [];
  if (!stable?.modelSha) {
    stable = { modelSha: sha, revision: 1, since: now.toISOString() };
  } else if (stable.modelSha !== sha) {
    history = [
      {
        revision: stable.revision ?? 0,
        modelSha: stable.modelSha,
        startedAt: stable.since ?? '',
        endedAt: now.toISOString(),
        reason: 'Superseded by a new spec.model',
      },
      ...history,
    ].slice(0, HISTORY_LIMIT);
    stable = { modelSha: sha, revision: (stable.revision ?? 0) + 1, since: now.toISOString() };
  }

  const rolledOut =
    !!d &&
    d.modelSha === sha &&
    (d.observedGeneration ?? 0) >= (d.generation ?? 0) &&
    (d.updatedReplicas ?? 0) >= (d.replicas ?? 0);
  const problem = deploymentProblem(d, minReady);

  let conditions: Condition[] = prev.conditions ?? [];
  const cond = (type: string, status: Condition['status'], reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      { type, status, reason, message, observedGeneration: generation },
      now,
    );
  };

  if (input.applyError) {
    cond('Degraded', 'True', 'ApplyFailed', input.applyError);
  } else if (problem && problem.reason !== 'WaitingForReplicas' && problem.reason !== 'DeploymentMissing') {
    cond('Degraded', 'True', problem.reason, problem.message);
  } else {
    cond('Degraded', 'False', 'AsExpected', 'children applied and healthy');
  }

  if (!rolledOut) {
    cond(
      'Progressing',
      'True',
      'RollingOut',
      `rolling out revision ${stable.revision} (${sha.slice(0, 12)})`,
    );
  } else if (problem) {
    cond(
      'Progressing',
      'True',
      'WaitingForReplicas',
      `revision ${stable.revision} applied; ${d?.readyReplicas ?? 0} ready replicas, need ${minReady}`,
    );
  } else {
    cond('Progressing', 'False', 'RolloutComplete', `revision ${stable.revision} rolled out`);
  }

  const ready = !input.applyError && rolledOut && !problem;
  cond(
    'Ready',
    ready ? 'True' : 'False',
    ready ? 'Serving' : input.applyError ? 'ApplyFailed' : (problem?.reason ?? 'RollingOut'),
    ready
      ? `revision ${stable.revision} serving with ${d?.readyReplicas ?? 0} ready replicas`
      : input.applyError
        ? input.applyError
        : problem?.message || `waiting for revision ${stable.revision} to roll out`,
  );

  const status: RecommenderModelStatus = {
    observedGeneration: generation,
    phase: derivePhase(conditions),
    conditions,
    stable,
    readyReplicas: d?.readyReplicas ?? 0,
    replicas: d?.replicas ?? 0,
    ...(history.length ? { history } : {}),
    ...(prev.canary ? { canary: prev.canary } : {}),
    ...(lineageOf(model) ? { lineage: lineageOf(model) } : {}),
  };
  return status;
}

/** Phase is a summary of the conditions, never stored as the truth. */
export function derivePhase(conditions: readonly Condition[]): NonNullable<RecommenderModelStatus['phase']> {
  const is = (t: string) => conditions.find((c) => c.type === t)?.status === 'True';
  if (is('RolledBack')) return 'RolledBack';
  if (is('Degraded')) return 'Degraded';
  if (is('Ready')) return 'Ready';
  if (is('Progressing')) return 'Progressing';
  return 'Pending';
}

/** Lineage from the annotations training writes on the model resource. */
function lineageOf(model: RecommenderModel): RecommenderModelStatus['lineage'] | undefined {
  const a = model.metadata?.annotations ?? {};
  const lineage = {
    ...(a['crema.dev/dataset-hash'] ? { datasetHash: a['crema.dev/dataset-hash'] } : {}),
    ...(a['crema.dev/feature-job-version'] ? { featureJobVersion: a['crema.dev/feature-job-version'] } : {}),
    ...(a['crema.dev/code-version'] ? { codeVersion: a['crema.dev/code-version'] } : {}),
  };
  return Object.keys(lineage).length ? lineage : undefined;
}
