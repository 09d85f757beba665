/**
 * Experiment reconcile, as numbered steps (the same shape as the RecommenderModel's):
 *   1. load the experiment from the cache (gone → nothing to do: owner references clean up);
 *   2. gather (reads only): the namespace's RecommenderModels and Experiments, the reference
 *      checks, a manual command, and — while running — serving's counts from Prometheus;
 *   3. decide (pure): statistics on the primary metric, guardrails, the step policy;
 *   4. when the step ends the experiment or acts on a command, write that to status first (the
 *      intent, with the command marked pending), so a restart neither loses nor repeats it;
 *   5. consume the command annotation;
 *   6. apply the router objects (the spec's split while running, all to the control otherwise);
 *   7. autoPromote: hand the winner's model to the control RecommenderModel's spec, so its own
 *      canary rollout and analysis take it out;
 *   8. compute status (pure) and write it only if it changed; Events on transitions;
 *   9. come back at the next look while running.
 */
import { CONCLUDE_ANNOTATION, STOP_ANNOTATION } from '../../../../contracts/kube-keys.js';
import type { PrometheusClient } from '../../analysis/prometheus.js';
import { applyOwned, consumeAnnotations, patchStatus } from '../../runtime/apply.js';
import type { EventRecorder } from '../../runtime/events.js';
import {
  KubeApiError,
  RESOURCES,
  resourcePath,
  type KubeClient,
  type KubeObject,
  type ResourceDef,
} from '../../runtime/kube.js';
import type { ControllerDef, InformerSet } from '../../runtime/manager.js';
import type { OperatorMetrics } from '../../runtime/metrics.js';
import type { WorkResult } from '../../runtime/queue.js';
import {
  buildAnalysisInput,
  checkReferences,
  computeExperimentStep,
  judgeGuardrails,
  parseMaxDuration,
  type GuardrailVerdict,
} from './decide.js';
import { buildExperimentObjects, buildExperimentRouterConfig } from './desired.js';
import { checkCountsFresh, fetchExperimentData, type ExperimentData } from './gather.js';
import { experimentTargetOf } from './queries.js';
import type { Analysis, AnalysisInput } from './stats-api.js';
import { computeExperimentStatus, endingOf, type ExperimentStatusInput } from './status.js';
import type { Experiment, ExperimentStatus, RecommenderModel } from './types.js';
import { MANAGED_BY } from '../../../../contracts/kube-keys.js';

/** What the reconcile needs from the outside world. */
export interface ExperimentDeps {
  readonly client: KubeClient;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly now: () => Date;
  readonly log: (msg: string) => void;
  /** The statistics (stats.ts `analyze`). */
  readonly analyze: (input: AnalysisInput) => Analysis;
  /** Absent: no look happens (DataAvailable False says why); commands and maxDuration still act. */
  readonly prometheus?: PrometheusClient;
  /** Time between looks while running, ms. Default 60 000. */
  readonly lookIntervalMs?: number;
  /** PromQL range of the guardrails. Default 5m. */
  readonly guardrailWindow?: string;
}

const CONTROLLER = 'experiment';
const OWNED: ResourceDef[] = [
  RESOURCES.configMap,
  RESOURCES.deployment,
  RESOURCES.service,
  RESOURCES.serviceAccount,
  RESOURCES.role,
  RESOURCES.roleBinding,
];
const byKind = new Map<string, ResourceDef>(OWNED.map((r) => [r.kind, r]));
const MANAGED_SELECTOR = Object.entries(MANAGED_BY)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');

type Command = 'conclude' | 'stop';

/** The manual command on the experiment, if any (stop wins over conclude). */
function commandOf(exp: Experiment): Command | undefined {
  const a = exp.metadata?.annotations ?? {};
  if (a[STOP_ANNOTATION] === 'true') return 'stop';
  if (a[CONCLUDE_ANNOTATION] === 'true') return 'conclude';
  return undefined;
}

/** Reconciles one Experiment. */
export async function reconcileExperiment(
  deps: ExperimentDeps,
  informers: InformerSet,
  key: string,
): Promise<WorkResult> {
  // 1. Load.
  const [namespace, name] = key.split('/') as [string, string];
  const exp = informers.for<Experiment>(RESOURCES.experiment).get(namespace, name);
  if (!exp || exp.metadata?.deletionTimestamp) {
    deps.metrics.dropExperiment(namespace, name);
    return { kind: 'done' };
  }
  const now = deps.now();

  // 2. Gather.
  const models = new Map(
    informers
      .for<RecommenderModel>(RESOURCES.recommenderModel)
      .list()
      .filter((m) => m.metadata?.namespace === namespace)
      .map((m) => [m.metadata!.name!, m]),
  );
  const others = informers
    .for<Experiment>(RESOURCES.experiment)
    .list()
    .filter((e) => e.metadata?.namespace === namespace && e.metadata?.name !== name);
  const problem = checkReferences({ experiment: exp, models, others });
  const annotated = commandOf(exp);
  // A command already recorded in status (its annotation not yet removed) is not acted on again.
  const alreadyActed = !!exp.status?.pendingCommand && annotated === exp.status.pendingCommand;
  const command = alreadyActed ? undefined : annotated;
  const ending = endingOf(exp);
  const startedAt = exp.status?.startedAt;
  let data: ExperimentData | undefined;
  let analysis: Analysis | undefined;
  let dataError: string | undefined;
  // Counts of this look, only when they are new (never absent or below status's).
  let fresh: ExperimentData['sums'];
  let noNewData: string | undefined;
  const guardrails = new Map<string, GuardrailVerdict[]>();
  const running = !problem && !ending && !!startedAt;
  // One look per interval, whatever woke the reconcile (its own status write, a model's status,
  // the router Deployment rolling): between looks nothing is read or written, and the reconcile
  // comes back when the next look is due.
  const lookIntervalMs = deps.lookIntervalMs ?? 60_000;
  const lastLookAt = exp.status?.lastLookAt ? Date.parse(exp.status.lastLookAt) : NaN;
  // At most one interval away, whatever lastLookAt says (another leader's clock may run ahead).
  const nextLookInMs = Number.isFinite(lastLookAt)
    ? Math.min(lookIntervalMs, lastLookAt + lookIntervalMs - now.getTime())
    : 0;
  // A conclude/stop command or the end of maxDuration decides on the latest counts, not the last look's.
  const timeUp =
    !!startedAt && now.getTime() - Date.parse(startedAt) >= parseMaxDuration(exp.spec.maxDuration ?? '14d');
  // Timers fire a little late, never much early: a look due within 1 % of the interval is due.
  const lookDue = nextLookInMs <= lookIntervalMs * 0.01 || !!command || timeUp;
  if (running && lookDue) {
    if (!deps.prometheus)
      dataError = 'no Prometheus configured (set CREMA_PROMETHEUS_URL): no look, no decision';
    else {
      try {
        data = await fetchExperimentData(
          deps.prometheus,
          // This object's run only: an earlier Experiment of the same name counted in its own.
          experimentTargetOf(exp, deps.guardrailWindow ?? '5m'),
          exp.spec.variants.map((v) => v.name),
        );
      } catch (err) {
        dataError = `reading serving's counts failed: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    if (data) {
      // 3. Decide: the statistics (on new counts only), then the guardrails per variant's model.
      noNewData = checkCountsFresh(data, exp.status?.variants) ?? undefined;
      if (!noNewData && data.sums) {
        fresh = data.sums;
        try {
          analysis = deps.analyze(buildAnalysisInput(exp, fresh));
        } catch (err) {
          // Counts the statistics refuse (inconsistent sums) are no decision; status says why.
          dataError = `the statistics refused the counts: ${err instanceof Error ? err.message : String(err)}`;
        }
      }
      for (const v of exp.spec.variants)
        guardrails.set(v.name, judgeGuardrails(exp.spec.guardrails, data.health.get(v.modelRef)));
    }
  }
  const step = computeExperimentStep({
    experiment: exp,
    now,
    ...(startedAt ? { startedAt } : {}),
    ...(ending ? { ending } : {}),
    ...(command ? { command } : {}),
    // A broken split (SRM) or invalid references decide nothing; guardrails still stop.
    ...(analysis && !problem ? { analysis } : {}),
    guardrails,
  });
  const control = models.get(exp.spec.variants[0]!.modelRef);
  const split = !problem && !step.ending;
  const desired = control
    ? buildExperimentObjects(exp, control, buildExperimentRouterConfig(exp, split))
    : [];

  let current = exp;
  const statusInput = (extra: Partial<ExperimentStatusInput>): ExperimentStatusInput => ({
    experiment: current,
    now,
    problem,
    splitting: split && !!startedAt,
    ...(startedAt ? { startedAt } : {}),
    ...(step.ending ? { ending: step.ending } : {}),
    looked: !!fresh,
    read: running && lookDue,
    ...(fresh ? { sums: fresh } : {}),
    ...(data ? { guardrails } : {}),
    ...(noNewData ? { noNewData } : {}),
    ...(analysis ? { analysis } : {}),
    ...(dataError ? { dataError } : {}),
    ...(exp.status?.promotion ? { promotion: exp.status.promotion } : {}),
    ...extra,
  });
  const writeStatus = async (status: ExperimentStatus): Promise<boolean> => {
    try {
      const before = current;
      const written = await patchStatus(deps.client, RESOURCES.experiment, current, status);
      if (!written) return true;
      deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'Experiment/status' });
      current = {
        ...current,
        metadata: { ...current.metadata, resourceVersion: written.metadata?.resourceVersion },
        status,
      };
      await recordTransitions(deps.events, before, status);
      return true;
    } catch (err) {
      if (err instanceof KubeApiError && (err.conflict || err.notFound)) return false;
      throw err;
    }
  };

  // 4. Intent first: the ending (and the command that caused it) before traffic or models move.
  if (step.endsNow || command) {
    const intent = computeExperimentStatus(
      statusInput({ ...(annotated ? { pendingCommand: annotated } : {}) }),
    );
    if (!(await writeStatus(intent))) return { kind: 'requeueAfter', ms: 200 };
  }

  // 5. Consume the command annotation once its effect is recorded.
  if (annotated) {
    try {
      current = await consumeAnnotations(deps.client, RESOURCES.experiment, current, [
        STOP_ANNOTATION,
        CONCLUDE_ANNOTATION,
      ]);
      deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'Experiment' });
      if (step.commandIgnored)
        await deps.events.record(
          target(exp),
          'Warning',
          'CommandIgnored',
          `${annotated}: the experiment has already ended`,
        );
    } catch (err) {
      if (err instanceof KubeApiError && (err.conflict || err.notFound))
        return { kind: 'requeueAfter', ms: 200 };
      throw err;
    }
  }

  // 6. Apply the router objects.
  let applyError: string | undefined;
  for (const obj of desired) {
    const resource = byKind.get(obj.kind ?? '')!;
    try {
      const { wrote } = await applyOwned(
        deps.client,
        resource,
        obj,
        informers.for(resource).get(namespace, obj.metadata!.name!),
      );
      if (wrote) deps.metrics.writes.inc({ controller: CONTROLLER, kind: resource.kind });
    } catch (err) {
      applyError = `applying ${resource.kind} ${obj.metadata?.name}: ${err instanceof KubeApiError ? err.message : String(err)}`;
      break;
    }
  }
  const started = startedAt ?? (split && !applyError && desired.length ? now.toISOString() : undefined);

  // 7. autoPromote: the winner's model to the control RecommenderModel (its canary does the rest).
  let promotion = exp.status?.promotion;
  const winner = step.ending?.winner;
  const controlVariant = exp.spec.variants[0]!;
  if (
    !applyError &&
    winner &&
    winner !== controlVariant.name &&
    exp.spec.decision?.autoPromote &&
    !promotion?.at &&
    control
  ) {
    const winnerModel = models.get(exp.spec.variants.find((v) => v.name === winner)!.modelRef);
    if (!winnerModel) applyError = `promoting ${winner}: its RecommenderModel is gone`;
    else {
      const { uri, sha256 } = winnerModel.spec.model;
      try {
        if (control.spec.model.sha256 !== sha256) {
          await deps.client.request(
            'PATCH',
            resourcePath(RESOURCES.recommenderModel, namespace, controlVariant.modelRef),
            {
              contentType: 'application/merge-patch+json',
              body: { spec: { model: { uri, sha256 } } },
            },
          );
          deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'RecommenderModel' });
          await deps.events.record(
            target(exp),
            'Normal',
            'Promoted',
            `winner ${winner}: ${controlVariant.modelRef} now rolls out ${sha256.slice(0, 12)} through its canary`,
          );
        }
        promotion = { model: controlVariant.modelRef, sha256, at: now.toISOString() };
      } catch (err) {
        applyError = `promoting ${winner} to ${controlVariant.modelRef}: ${err instanceof KubeApiError ? err.message : String(err)}`;
      }
    }
  }

  // 8. Status.
  const final = computeExperimentStatus(
    statusInput({
      splitting: split && !!started && !applyError,
      ...(started ? { startedAt: started } : {}),
      ...(promotion ? { promotion } : {}),
      ...(applyError ? { applyError } : {}),
    }),
  );
  if (!(await writeStatus(final))) return { kind: 'requeueAfter', ms: 200 };

  // 9. When to come back.
  // The dashboards' lift and SRM panels: the last look of a running experiment.
  if (final.phase === 'Running' && analysis)
    deps.metrics.setExperiment(namespace, name, {
      srmPValue: analysis.srm.pValue,
      comparisons: analysis.comparisons,
    });
  else if (final.phase !== 'Running') deps.metrics.dropExperiment(namespace, name);
  if (applyError) return { kind: 'error', error: new Error(applyError) };
  if (final.phase === 'Running')
    return { kind: 'requeueAfter', ms: running && !lookDue ? nextLookInMs : lookIntervalMs };
  return { kind: 'done' };
}

function target(exp: Experiment): Experiment {
  return { ...exp, apiVersion: 'crema.dev/v1alpha1', kind: 'Experiment' };
}

async function recordTransitions(
  events: EventRecorder,
  exp: Experiment,
  next: ExperimentStatus,
): Promise<void> {
  const before = new Map((exp.status?.conditions ?? []).map((c) => [c.type, c]));
  for (const c of next.conditions ?? []) {
    const old = before.get(c.type);
    if (old?.status === c.status && old?.reason === c.reason) continue;
    if (c.status !== 'True' && c.type !== 'Valid') continue;
    const warning =
      c.type === 'Stopped' ||
      c.type === 'SampleRatioMismatch' ||
      (c.type === 'Valid' && c.status === 'False');
    if (c.type === 'Valid' && c.status === 'True') continue;
    await events.record(target(exp), warning ? 'Warning' : 'Normal', c.reason ?? c.type, c.message ?? '');
  }
}

/** The experiments that reference model `namespace/name`. */
function experimentsOf(informers: () => InformerSet, obj: KubeObject): string[] {
  const ns = obj.metadata?.namespace;
  const model = obj.metadata?.name;
  return informers()
    .for<Experiment>(RESOURCES.experiment)
    .list()
    .filter((e) => e.metadata?.namespace === ns && e.spec.variants.some((v) => v.modelRef === model))
    .map((e) => `${ns}/${e.metadata?.name}`);
}

/** The controller definition the manager runs. */
export function experimentController(deps: ExperimentDeps, informers: () => InformerSet): ControllerDef {
  return {
    name: CONTROLLER,
    primary: RESOURCES.experiment,
    owned: OWNED,
    ownedSelector: MANAGED_SELECTOR,
    watched: [
      // A model appearing, going or changing task re-checks the experiments that name it.
      { resource: RESOURCES.recommenderModel, keysFor: (obj) => experimentsOf(informers, obj) },
      {
        // Another experiment starting or ending changes which models are claimed: only the
        // experiments sharing a model with it care (no fan-out between unrelated ones).
        resource: RESOURCES.experiment,
        keysFor: (obj) => {
          const mine = new Set((obj as Experiment).spec?.variants?.map((v) => v.modelRef) ?? []);
          return informers()
            .for<Experiment>(RESOURCES.experiment)
            .list()
            .filter(
              (e) =>
                e.metadata?.namespace === obj.metadata?.namespace &&
                e.metadata?.name !== obj.metadata?.name &&
                e.spec.variants.some((v) => mine.has(v.modelRef)),
            )
            .map((e) => `${e.metadata?.namespace}/${e.metadata?.name}`);
        },
      },
    ],
    reconcile: (key, inf) => reconcileExperiment(deps, inf, key),
  };
}
