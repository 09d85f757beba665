/**
 * RecommenderModel reconcile, as numbered steps:
 *   1. load the model from the cache (gone → nothing to do: owner references clean up);
 *   2. gather what the cluster shows (reads only): stable and canary Deployments, manual
 *      commands, StoreRegion freeze windows, drift alerts, and (when due) a canary analysis;
 *   3. decide the rollout's next state (pure state machine);
 *   4. build the desired children for that decision (pure);
 *   5. when the decision moves the rollout (a step, a promotion, a rollback, an abort), write
 *      it to status first: the intent, so a restart at any later point resumes it;
 *   6. consume the manual command it acted on (or that had nothing to act on); one that cannot
 *      act yet stays, and says why;
 *   7. apply what differs; remove the canary's objects when no canary should exist;
 *   8. compute status from all of it (pure) and write it only if it changed; Events;
 *   9. say when to come back.
 */
import { ABORT_ANNOTATION, PROMOTE_ANNOTATION } from '../../../../contracts/kube-keys.js';
import type { StoreRegion } from '../../api/v1alpha1/index.js';
import { FIELD_MANAGER, applyOwned, consumeAnnotations, patchStatus } from '../../runtime/apply.js';
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
import { computeFreeze } from '../../rollout/freeze.js';
import { floorToReclaim, regionHoldsFloor, withoutRegionFloor } from '../storeregion/floor.js';
import {
  analysisDue,
  computeRolloutStep,
  parseDuration,
  type Command,
  type RolloutInput,
  type RolloutState,
} from '../../rollout/machine.js';
import {
  MANAGED_BY,
  MODEL_LABEL,
  MODEL_SHA_ANNOTATION,
  TRACK_LABEL,
  buildServingObjects,
  childNames,
  checkRedisAddress,
  type ServingDefaults,
  type ServingPlan,
} from './desired.js';
import { findPodProblem, type PodObject } from './pods.js';
import {
  buildRegionMenu,
  checkRegionMenu,
  checkRegionMenuPublished,
  itemCatalogOf,
  type RegionMenuTooLarge,
} from './regions.js';
import { computeStatus, rolloutStateOf, runsEverywhere, type ObservedDeployment } from './status.js';
import type { RecommenderModel } from './types.js';

/** Annotations users set to steer a rollout (removed by the operator once acted on). */
export { ABORT_ANNOTATION, PROMOTE_ANNOTATION };

/** Runs an analysis of the canary against stable; implemented over Prometheus. */
export interface CanaryAnalyzer {
  analyze(req: {
    namespace: string;
    model: RecommenderModel;
    stableSha: string;
    canarySha: string;
  }): Promise<{ verdict: 'Pass' | 'Fail' | 'Inconclusive'; message: string; at: string }>;
}

/** Firing drift alerts, as delivered by Alertmanager to the operator's webhook. */
export interface DriftAlerts {
  /** A firing drift alert for revision `sha` of model `namespace/name`, if any. */
  firing(namespace: string, name: string, sha: string): { message: string } | undefined;
}

/** What the reconcile needs from the outside world. */
export interface RecommenderModelDeps {
  readonly client: KubeClient;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly now: () => Date;
  readonly log: (msg: string) => void;
  readonly desiredCache: DesiredCache;
  /** Absent: analysed steps stay Inconclusive and wait (never promote unchecked). */
  readonly analyzer?: CanaryAnalyzer;
  readonly driftAlerts?: DriftAlerts;
  /** Cluster-wide serving settings (the Redis address models do not set themselves). */
  readonly servingDefaults?: ServingDefaults;
}

/**
 * Remembers the children built for each model (by key, uid, generation and serving plan):
 * synthesizing a cdk8s chart per resync of 1,000 models costs more CPU and memory churn than
 * the rest of the reconcile. Entries are replaced when any input moves; dropped on deletion.
 */
export class DesiredCache {
  private readonly byKey = new Map<string, { stamp: string; objects: KubeObject[] }>();
  get(key: string, model: RecommenderModel, plan: ServingPlan, build: () => KubeObject[]): KubeObject[] {
    const stamp = `${model.metadata?.uid}:${model.metadata?.generation}:${JSON.stringify(plan)}`;
    const hit = this.byKey.get(key);
    if (hit && hit.stamp === stamp) return hit.objects;
    const objects = build();
    this.byKey.set(key, { stamp, objects });
    return objects;
  }
  forget(key: string): void {
    this.byKey.delete(key);
  }
}

const CONTROLLER = 'recommendermodel';
const OWNED: ResourceDef[] = [
  RESOURCES.configMap,
  RESOURCES.deployment,
  RESOURCES.service,
  RESOURCES.hpa,
  RESOURCES.pdb,
  RESOURCES.serviceAccount,
  RESOURCES.role,
  RESOURCES.roleBinding,
];
const MANAGED_SELECTOR = Object.entries(MANAGED_BY)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');
const byKind = new Map<string, ResourceDef>(OWNED.map((r) => [r.kind, r]));

/** Reads the Deployment fields the status needs. */
function observeDeployment(obj: KubeObject | undefined): ObservedDeployment | undefined {
  if (!obj) return undefined;
  const { spec, status = {} } = obj as KubeObject & {
    spec?: { template?: { metadata?: { annotations?: Record<string, string> } } };
    status?: Omit<ObservedDeployment, 'generation' | 'modelSha'>;
  };
  const modelSha = spec?.template?.metadata?.annotations?.[MODEL_SHA_ANNOTATION];
  return {
    ...status,
    ...(obj.metadata?.generation !== undefined ? { generation: obj.metadata.generation } : {}),
    ...(modelSha ? { modelSha } : {}),
  };
}

/** The manual command on the model, if any (abort wins over promote). */
function commandOf(model: RecommenderModel): Command | undefined {
  const a = model.metadata?.annotations ?? {};
  if (a[ABORT_ANNOTATION] === 'true') return 'abort';
  if (a[PROMOTE_ANNOTATION] === 'full') return 'promote-full';
  if (a[PROMOTE_ANNOTATION] === 'step') return 'promote-step';
  return undefined;
}

/** The size last logged of each model's too-large regions ConfigMap (key: namespace/name). */
const tooLargeLogged = new Map<string, number>();

/** Reconciles one RecommenderModel `namespace/name`. */
export async function reconcileRecommenderModel(
  deps: RecommenderModelDeps,
  informers: InformerSet,
  key: string,
): Promise<WorkResult> {
  // 1. Load.
  const [namespace, name] = key.split('/') as [string, string];
  const model = informers.for<RecommenderModel>(RESOURCES.recommenderModel).get(namespace, name);
  if (!model || model.metadata?.deletionTimestamp) {
    deps.desiredCache.forget(key);
    return { kind: 'done' };
  }
  const now = deps.now();
  const names = childNames(name);

  // 2. Gather.
  const deployments = informers.for(RESOURCES.deployment);
  const stableDeployment = observeDeployment(deployments.get(namespace, names.deployment));
  const canaryDeployment = observeDeployment(deployments.get(namespace, names.canaryDeployment));
  const routerDeployment = observeDeployment(deployments.get(namespace, names.routerDeployment));
  // Traffic reaches the canary only through ready router pods (the Service moves to them then).
  const routerReady = (routerDeployment?.readyReplicas ?? 0) >= 1;
  const pods = informers
    .for<PodObject>(RESOURCES.pod, MANAGED_SELECTOR)
    .list()
    .filter((p) => p.metadata?.namespace === namespace && p.metadata?.labels?.[MODEL_LABEL] === name);
  const state = rolloutStateOf(model);
  const analysisSpec = model.spec.rollout?.analysis;
  // A command (annotation) is read here and consumed below only once the decision says it acts
  // (or has nothing to act on), before anything is applied: at most once, and never dropped
  // while it waits (an abort while stable has no ready pod, a promotion during a freeze).
  // A command a previous run already acted on (its decision is in status, marked
  // pendingCommand) is only removed now, never acted on twice.
  const given = commandOf(model);
  const alreadyActed = given !== undefined && given === model.status?.pendingCommand;
  const command = alreadyActed ? undefined : given;
  const regions = informers
    .for<StoreRegion>(RESOURCES.storeRegion)
    .list()
    .filter((r) => r.metadata?.namespace === namespace);
  // A freeze holds the canary where it is until its end; the reconcile wakes then (and when
  // the next one starts, so status says Frozen on time), not by polling.
  const freezeState = computeFreeze(regions, name, now);
  const freeze = freezeState.active && { name: freezeState.active.name, until: freezeState.active.until };
  const canaryDrift = state.canary && deps.driftAlerts?.firing(namespace, name, state.canary.modelSha);
  const stableDrift = state.stable && deps.driftAlerts?.firing(namespace, name, state.stable.modelSha);
  const base: Omit<RolloutInput, 'analysis'> = {
    spec: {
      modelSha: model.spec.model.sha256,
      uri: model.spec.model.uri,
      steps: model.spec.rollout?.steps ?? [],
      analysisConfigured: !!analysisSpec?.metrics && Object.keys(analysisSpec.metrics).length > 0,
      failureLimit: analysisSpec?.failureLimit ?? 2,
      analysisIntervalMs: parseDuration(analysisSpec?.interval ?? '1m'),
      paused: model.spec.paused ?? false,
    },
    state,
    observed: {
      stableReadyReplicas: stableDeployment?.readyReplicas ?? 0,
      // Terminating pods count too: they drain for a while and would answer with the old model.
      stableRolledOut:
        !!state.stable &&
        runsEverywhere(stableDeployment, state.stable.modelSha) &&
        !pods.some(
          (p) =>
            p.metadata?.labels?.[TRACK_LABEL] === 'stable' &&
            p.metadata?.annotations?.[MODEL_SHA_ANNOTATION] !== state.stable!.modelSha,
        ),
      // Only pods running the canary digest count, and only once the router can reach them.
      canaryReadyReplicas:
        canaryDeployment && canaryDeployment.modelSha === state.canary?.modelSha && routerReady
          ? (canaryDeployment.readyReplicas ?? 0)
          : 0,
    },
    ...(command ? { command } : {}),
    ...(canaryDrift ? { canaryDrift } : {}),
    ...(freeze ? { freeze } : {}),
    ...(stableDrift ? { stableDrift } : {}),
    driftAction: model.spec.drift?.action ?? 'Alert',
    now,
  };
  let analysis: RolloutInput['analysis'];
  // A stop signal (abort, a drift alert on the canary) decides on its own: no analysis query
  // (up to Prometheus' timeout) stands between an alert and the rollback.
  const stopSignal = command === 'abort' || !!canaryDrift;
  if (!stopSignal && analysisDue(base) && state.canary && state.stable) {
    // An analysis that cannot run (Prometheus down, a query refused) is no verdict: the step
    // waits, and Progressing says why.
    const { stable: s, canary: c } = state;
    analysis = deps.analyzer
      ? await deps.analyzer
          .analyze({ namespace, model, stableSha: s.modelSha, canarySha: c.modelSha })
          .catch((err: unknown) => ({
            verdict: 'Inconclusive' as const,
            message: `analysis could not run: ${err instanceof Error ? err.message : String(err)}`,
            at: now.toISOString(),
          }))
      : {
          verdict: 'Inconclusive',
          message: 'no analysis provider configured (set CREMA_PROMETHEUS_URL)',
          at: now.toISOString(),
        };
  }

  // 3. Decide.
  const decision = computeRolloutStep({ ...base, ...(analysis ? { analysis } : {}) });
  const stable = decision.state.stable!;
  // During a promotion the canary pods keep their share until every stable pod runs the model.
  const secondary = decision.state.canary ?? decision.state.promotion;
  const plan: ServingPlan = {
    stable: { sha256: stable.modelSha, uri: stable.uri },
    ...(secondary ? { canary: { sha256: secondary.modelSha, uri: secondary.uri } } : {}),
    canaryWeight: decision.canaryWeight,
    routeThroughRouter: !!secondary && routerReady,
  };

  // 4. Build the desired children (pure).
  const defaults = deps.servingDefaults ?? {};
  let specError: string | undefined;
  let desired: KubeObject[] = [];
  try {
    desired = deps.desiredCache.get(key, model, plan, () =>
      buildServingObjects(model, plan, undefined, defaults),
    );
  } catch (err) {
    // A spec the builder refuses (a request above its limit): nothing is applied or removed,
    // the pods keep running what they run, and the status names the field.
    specError = err instanceof Error ? err.message : String(err);
  }
  // The regional menus the serving pods read (ADR 0014): built from the regions every time
  // (cheap), applied only when they differ, and never when the API server would refuse them
  // (or nearly): then the last ConfigMap that fit stays, and the regions say why (MenuPublished).
  const regionMenu = buildRegionMenu(model, regions);
  // Logged once per size (the regions' MenuPublished condition says it for as long as it lasts).
  if (regionMenu.tooLarge && tooLargeLogged.get(key) !== regionMenu.tooLarge.bytes) {
    tooLargeLogged.set(key, regionMenu.tooLarge.bytes);
    deps.log(
      `RecommenderModel ${key}: ConfigMap ${regionMenu.tooLarge.configMap} not applied: ${regionMenu.tooLarge.bytes} bytes > ${regionMenu.tooLarge.limit}`,
    );
  } else if (!regionMenu.tooLarge) tooLargeLogged.delete(key);
  if (!specError && !regionMenu.tooLarge) desired = [...desired, regionMenu.configMap];
  const actedCommand = decision.command?.outcome === 'acted' ? command : undefined;
  const stablePods = findPodProblem(pods, 'stable', plan.stable.sha256);
  const canaryPods = plan.canary ? findPodProblem(pods, 'canary', plan.canary.sha256) : null;
  const routerPods = plan.canary ? findPodProblem(pods, 'router') : null;
  const redisProblem = checkRedisAddress(model, defaults);
  const statusOf = (
    applied: ObservedDeployment | undefined,
    extra: { applyError?: string; pendingCommand?: Command },
  ) =>
    computeStatus({
      model,
      deployment: applied,
      ...(canaryDeployment && plan.canary ? { canaryDeployment } : {}),
      // With a spec the builder refused nothing was applied: the rollout stays where it was.
      rollout: specError
        ? { state, canaryWeight: state.canary?.weight ?? 0, notices: [], wantsAnalysis: false }
        : decision,
      ...(extra.applyError ? { applyError: extra.applyError } : {}),
      ...(specError ? { specError } : {}),
      ...(extra.pendingCommand ? { pendingCommand: extra.pendingCommand } : {}),
      ...(redisProblem ? { configProblem: redisProblem } : {}),
      ...(freeze ? { freeze } : {}),
      podProblems: {
        ...(stablePods ? { stable: stablePods } : {}),
        ...(canaryPods ? { canary: { ...canaryPods, message: `canary: ${canaryPods.message}` } } : {}),
        ...(routerPods ? { router: { ...routerPods, message: `router: ${routerPods.message}` } } : {}),
      },
      now,
    });
  const target = eventTarget(model);
  let current = model;
  let noticesRecorded = false;
  /** Writes status when it differs; events for what changed. False on a conflict (requeue). */
  const writeStatus = async (status: RecommenderModel['status']): Promise<boolean> => {
    try {
      const written = await patchStatus(deps.client, RESOURCES.recommenderModel, current, status);
      if (!written) return true;
      deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'RecommenderModel/status' });
      const before = current;
      current = {
        ...current,
        metadata: { ...current.metadata, resourceVersion: written.metadata?.resourceVersion },
        ...(status ? { status } : {}),
      };
      if (!specError && !noticesRecorded) {
        noticesRecorded = true;
        for (const n of decision.notices) await deps.events.record(target, n.type, n.reason, n.message);
      }
      await recordTransitions(deps.events, before, status);
      return true;
    } catch (err) {
      // A conflict means our cached copy is stale; the watch brings the fresh one and re-queues.
      if (err instanceof KubeApiError && (err.conflict || err.notFound)) return false;
      throw err;
    }
  };

  // 5. Intent first: a decision that moves the rollout (a step, a promotion, a rollback, an
  // abort) is written to status before any child changes, so an operator killed half-way
  // through resumes that same transition from status instead of deciding again from the state
  // before it (which would undo a promotion and roll the fleet twice). The command it acted on
  // is marked in the same write, so a restart between this write and the command's removal
  // does not act on it twice.
  if (!specError && state.stable && rolloutMoved(state, decision.state)) {
    const intent = statusOf(stableDeployment, actedCommand ? { pendingCommand: actedCommand } : {});
    if (!(await writeStatus(intent))) return { kind: 'requeueAfter', ms: 200 };
  }

  // 6. The command is consumed once its decision is recorded (or it had nothing to act on, or
  // a previous run already acted on it), and only when the spec renders.
  const consume = alreadyActed || (!specError && decision.command && decision.command.outcome !== 'held');
  if (consume) {
    try {
      // A command a user adds meanwhile changes the resourceVersion: this then fails (409),
      // and the next reconcile sees both.
      current = await consumeAnnotations(deps.client, RESOURCES.recommenderModel, current, [
        ABORT_ANNOTATION,
        PROMOTE_ANNOTATION,
      ]);
      deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'RecommenderModel' });
    } catch (err) {
      if (err instanceof KubeApiError && (err.conflict || err.notFound))
        return { kind: 'requeueAfter', ms: 200 };
      throw err;
    }
    if (decision.command?.outcome === 'ignored') {
      await deps.events.record(target, 'Warning', 'CommandIgnored', decision.command.message);
    }
  }

  // 7. Apply what differs; remove canary objects that should no longer exist.
  let applyError: string | undefined;
  let deployment: KubeObject | undefined;
  for (const built of desired) {
    const resource = byKind.get(built.kind ?? '');
    if (!resource) throw new Error(`no resource for kind ${built.kind}`);
    const observed = informers.for(resource).get(namespace, built.metadata!.name!);
    // A StoreRegion's floor holds the HPA's minReplicas: leave it out, never take it back
    // while a region serves the model (ADR 0013).
    const isHpa = resource === RESOURCES.hpa;
    const obj =
      isHpa && regionHoldsFloor(observed, regions, namespace, name) ? withoutRegionFloor(built) : built;
    // The last region is gone: take minReplicas back even if its value already matches.
    const reclaim = isHpa && floorToReclaim(observed, regions, namespace, name, FIELD_MANAGER);
    try {
      const { object, wrote } = await applyOwned(deps.client, resource, obj, reclaim ? undefined : observed);
      if (wrote) deps.metrics.writes.inc({ controller: CONTROLLER, kind: resource.kind });
      if (resource === RESOURCES.deployment && obj.metadata?.name === names.deployment) deployment = object;
    } catch (err) {
      applyError = `applying ${resource.kind} ${obj.metadata?.name}: ${err instanceof KubeApiError ? err.message : String(err)}`;
      break;
    }
  }
  let retireRouterLater = false;
  if (!applyError && !specError) {
    // Children this model may own but should not have now (canary after promotion or rollback,
    // drift rules after spec.drift is removed).
    const wanted = new Set(desired.map((o) => `${o.kind}/${o.metadata?.name}`));
    // The router goes only once the model's Service is seen pointing at stable again: deleting
    // it in the same breath would let the endpoints controller see router pods terminating
    // under the old selector, leaving the Service without endpoints for a moment.
    const entry = informers.for(RESOURCES.service).get(namespace, names.service) as
      (KubeObject & { spec?: { selector?: Record<string, string> } }) | undefined;
    const routerStillInFront = entry?.spec?.selector?.[TRACK_LABEL] === 'router';
    for (const [resource, childName] of [
      [RESOURCES.deployment, names.canaryDeployment],
      [RESOURCES.deployment, names.routerDeployment],
      [RESOURCES.service, names.canaryService],
      [RESOURCES.configMap, names.driftRules],
    ] as const) {
      if (wanted.has(`${resource.kind}/${childName}`) || !informers.for(resource).get(namespace, childName))
        continue;
      if (childName === names.routerDeployment && routerStillInFront) {
        retireRouterLater = true;
        continue;
      }
      try {
        await deps.client.request('DELETE', resourcePath(resource, namespace, childName));
        deps.metrics.writes.inc({ controller: CONTROLLER, kind: resource.kind });
      } catch (err) {
        if (!(err instanceof KubeApiError && err.notFound)) {
          applyError = `removing ${resource.kind} ${childName}: ${err instanceof KubeApiError ? err.message : String(err)}`;
        }
      }
    }
  }

  // Each region naming this model says whether its menu items are in the model's catalog and
  // whether its menu reached serving.
  await patchRegionMenuConditions(deps, model, regions, regionMenu.tooLarge, now);

  // 8. Status from the cluster and the decision.
  const applied = observeDeployment(deployment) ?? stableDeployment;
  // The command marker stays only if the command could not be removed (a conflict returned above).
  if (!(await writeStatus(statusOf(applied, applyError ? { applyError } : {}))))
    return { kind: 'requeueAfter', ms: 200 };

  // 9. When to come back.
  if (applyError) return { kind: 'error', error: new Error(applyError) };
  if (retireRouterLater) return { kind: 'requeueAfter', ms: 1000 };
  const boundary = (freeze?.until ?? freezeState.nextStart)?.getTime();
  const wake = [decision.requeueAfterMs, boundary === undefined ? undefined : boundary - now.getTime()]
    .filter((ms): ms is number => ms !== undefined)
    .reduce<number | undefined>((a, b) => (a === undefined ? b : Math.min(a, b)), undefined);
  // setTimeout's ceiling is ~24.8 days; a freeze boundary is at most a week away.
  if (wake !== undefined) return { kind: 'requeueAfter', ms: Math.min(Math.max(200, wake), 2 ** 31 - 1) };
  return { kind: 'done' };
}

/**
 * Field manager of the MenuValid and MenuPublished conditions on StoreRegions (the region
 * controller owns the rest).
 */
const REGION_MENU_MANAGER = 'crema-region-menu';

/**
 * Sets the MenuValid and MenuPublished conditions of each region serving `model`, by server-side
 * apply of those two conditions (conditions are a map keyed by type, so other managers'
 * conditions stay), and only when one changed. A failure is logged and retried on the next reconcile: it never holds up the
 * model's own reconcile.
 */
async function patchRegionMenuConditions(
  deps: RecommenderModelDeps,
  model: RecommenderModel,
  regions: readonly StoreRegion[],
  tooLarge: RegionMenuTooLarge | undefined,
  now: Date,
): Promise<void> {
  const name = model.metadata!.name!;
  const catalog = itemCatalogOf(model);
  const published = checkRegionMenuPublished(name, tooLarge);
  for (const r of regions) {
    if (r.spec.serving?.modelRef !== name) continue;
    const wanted = [
      { type: 'MenuValid', ...checkRegionMenu(r, name, catalog) },
      { type: 'MenuPublished', ...published },
    ];
    const olds = wanted.map((c) => r.status?.conditions?.find((x) => x.type === c.type));
    const same = wanted.every((c, i) => {
      const old = olds[i];
      return old && old.status === c.status && old.reason === c.reason && old.message === c.message;
    });
    if (same) continue;
    const conditions = wanted.map((c, i) => {
      const old = olds[i];
      return {
        ...c,
        observedGeneration: r.metadata?.generation ?? 0,
        lastTransitionTime:
          old && old.status === c.status && old.lastTransitionTime
            ? old.lastTransitionTime
            : now.toISOString(),
      };
    });
    try {
      await deps.client.request(
        'PATCH',
        resourcePath(RESOURCES.storeRegion, r.metadata?.namespace, r.metadata?.name, 'status'),
        {
          body: {
            apiVersion: 'crema.dev/v1alpha1',
            kind: 'StoreRegion',
            metadata: { name: r.metadata?.name, namespace: r.metadata?.namespace },
            status: { conditions },
          },
          contentType: 'application/apply-patch+yaml',
          query: { fieldManager: REGION_MENU_MANAGER, force: true },
        },
      );
      deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'StoreRegion/status' });
    } catch (err) {
      deps.log(
        `StoreRegion ${r.metadata?.name}: MenuValid/MenuPublished not written: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }
}

/** Whether a decision moves the rollout (traffic, revisions, or what is remembered as rolled back). */
function rolloutMoved(before: RolloutState, after: RolloutState): boolean {
  const key = (s: RolloutState) =>
    JSON.stringify([
      s.stable?.modelSha,
      s.stable?.revision,
      s.canary?.modelSha,
      s.canary?.step,
      s.canary?.weight,
      s.promotion?.modelSha,
      s.abortedModelSha,
    ]);
  return key(before) !== key(after);
}

/** The model as an Event's involved object (cached objects may lack kind and apiVersion). */
function eventTarget(model: RecommenderModel): RecommenderModel {
  return { ...model, apiVersion: 'crema.dev/v1alpha1', kind: 'RecommenderModel' };
}

async function recordTransitions(
  events: EventRecorder,
  model: RecommenderModel,
  next: RecommenderModel['status'],
) {
  const before = new Map((model.status?.conditions ?? []).map((c) => [c.type, c]));
  const obj = eventTarget(model);
  for (const c of next?.conditions ?? []) {
    const old = before.get(c.type);
    if (old?.status === c.status && old?.reason === c.reason) continue;
    if (c.type === 'Ready' && c.status === 'True')
      await events.record(obj, 'Normal', 'Ready', c.message ?? '');
    if (c.type === 'Degraded' && c.status === 'True')
      await events.record(obj, 'Warning', c.reason ?? 'Degraded', c.message ?? '');
    if (c.type === 'DriftDetected' && c.status === 'True')
      await events.record(obj, 'Warning', 'DriftDetected', c.message ?? '');
    if (c.type === 'Ready' && c.status === 'False' && old?.status === 'True') {
      await events.record(obj, 'Warning', 'NotReady', c.message ?? '');
    }
  }
}

/** The controller definition the manager runs. */
export function recommenderModelController(deps: RecommenderModelDeps): ControllerDef {
  return {
    name: CONTROLLER,
    primary: RESOURCES.recommenderModel,
    owned: OWNED,
    ownedSelector: MANAGED_SELECTOR,
    watched: [
      {
        // Pods say why a Deployment has no ready replica (model fetch, image, crash).
        resource: RESOURCES.pod,
        labelSelector: MANAGED_SELECTOR,
        keysFor: (obj) => {
          const model = obj.metadata?.labels?.[MODEL_LABEL];
          return model ? [`${obj.metadata?.namespace}/${model}`] : [];
        },
      },
      {
        resource: RESOURCES.storeRegion,
        // A region's freeze windows gate promotion of the model it serves.
        keysFor: (obj) => {
          const ref = (obj as StoreRegion).spec?.serving?.modelRef;
          return ref ? [`${obj.metadata?.namespace}/${ref}`] : [];
        },
      },
    ],
    reconcile: (key, informers) => reconcileRecommenderModel(deps, informers, key),
  };
}
