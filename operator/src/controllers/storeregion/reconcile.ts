/**
 * StoreRegion reconcile, as numbered steps:
 *   1. load the region (gone → re-apply the floor of the model it served, from the regions left);
 *   2. gather: the referenced RecommenderModel, its HPA, the other regions serving it;
 *   3. compute (pure) the region's floor now and its next change, and the model's floor: the
 *      regions' exact demands added up and rounded up once, within the model's own minimum and
 *      maximum (a region without minReplicas has its share of the model's minimum by stores);
 *   4. apply the model's floor to its HPA's spec.minReplicas (own field manager, only when it
 *      differs);
 *   5. compute status and write it only if it changed;
 *   6. come back at the next change (the lead before a window, each step down), not by polling.
 */
import type { StoreRegion } from '../../api/v1alpha1/index.js';
import { patchStatus } from '../../runtime/apply.js';
import type { InformerEvent } from '../../runtime/informer.js';
import {
  KubeApiError,
  RESOURCES,
  resourcePath,
  type KubeClient,
  type KubeObject,
} from '../../runtime/kube.js';
import type { ControllerDef, InformerSet } from '../../runtime/manager.js';
import type { OperatorMetrics } from '../../runtime/metrics.js';
import type { WorkResult } from '../../runtime/queue.js';
import { MANAGED_BY, childNames } from '../recommendermodel/desired.js';
import type { RecommenderModel } from '../recommendermodel/types.js';
import { REGION_FIELD_MANAGER, RegionFloorCache, buildFloorApply, type RegionEvaluation } from './floor.js';
import {
  DEFAULT_SCHEDULE_OPTIONS,
  RegionSchedule,
  computeModelFloor,
  computeRegionBases,
  type ScheduleOptions,
} from './schedule.js';
import { computeRegionStatus, type RegionStatusInput } from './status.js';

const CONTROLLER = 'storeregion';
const MANAGED_SELECTOR = Object.entries(MANAGED_BY)
  .map(([k, v]) => `${k}=${v}`)
  .join(',');
/** Longest sleep between reconciles (a promotion months away still gets a look now and then). */
const MAX_SLEEP_MS = 6 * 3_600_000;

/** What the reconcile needs from the outside world. */
export interface StoreRegionDeps {
  readonly client: KubeClient;
  readonly metrics: OperatorMetrics;
  readonly now: () => Date;
  readonly log: (msg: string) => void;
  /** The manager's informers (for mapping model and HPA events to regions). */
  readonly informers: InformerSet;
  /** Lead time and step-down; default DEFAULT_SCHEDULE_OPTIONS. */
  readonly schedule?: ScheduleOptions;
}

type Hpa = KubeObject & { spec?: { minReplicas?: number; maxReplicas?: number } };

/** The model's own replica bounds, as its controller renders them. */
function modelBounds(model: RecommenderModel): { minReplicas: number; maxReplicas: number } {
  return {
    minReplicas: model.spec.serving?.minReplicas ?? 2,
    maxReplicas: model.spec.serving?.maxReplicas ?? 10,
  };
}

/** State kept between reconciles (in memory; rebuilt from the cluster after a restart). */
class RegionControllerState {
  /** The model each region last served: a deleted or re-pointed region frees its share. */
  readonly lastModel = new Map<string, string>();
  /** uid:generation of each model seen, so its status updates do not wake every region. */
  readonly modelStamps = new Map<string, string>();
  constructor(readonly cache: RegionFloorCache) {}
}

/** The regions (not being deleted) serving model `namespace/modelName`. */
function regionsServingModel(informers: InformerSet, namespace: string, modelName: string): StoreRegion[] {
  return informers
    .for<StoreRegion>(RESOURCES.storeRegion)
    .list()
    .filter(
      (r) =>
        r.metadata?.namespace === namespace &&
        !r.metadata?.deletionTimestamp &&
        r.spec.serving?.modelRef === modelName,
    );
}

/** Each region's base: its baseReplicas, its minReplicas, or its share of the model's minimum by stores. */
function regionBases(regions: readonly StoreRegion[], modelMinReplicas: number): Map<string, number> {
  return computeRegionBases(
    regions.map((r) => ({
      key: `${r.metadata?.namespace}/${r.metadata?.name}`,
      stores: r.spec.stores?.length ?? 0,
      ...(r.spec.serving?.minReplicas !== undefined ? { minReplicas: r.spec.serving.minReplicas } : {}),
      ...(r.spec.serving?.baseReplicas !== undefined ? { baseReplicas: r.spec.serving.baseReplicas } : {}),
    })),
    modelMinReplicas,
  );
}

/**
 * The floor of model `namespace/modelName` from every region serving it, applied to its HPA.
 * `evaluations` carries evaluations already made in this reconcile.
 */
async function applyModelFloor(
  deps: StoreRegionDeps,
  state: RegionControllerState,
  informers: InformerSet,
  namespace: string,
  modelName: string,
  now: Date,
): Promise<{ status: Omit<RegionStatusInput, 'region' | 'now' | 'evaluation'>; wrote: boolean }> {
  const model = informers.for<RecommenderModel>(RESOURCES.recommenderModel).get(namespace, modelName);
  if (!model || model.metadata?.deletionTimestamp) return { status: { modelMissing: true }, wrote: false };
  const bounds = modelBounds(model);
  const regions = regionsServingModel(informers, namespace, modelName);
  // No region left: the model controller takes the field back with its own minimum (floor.ts).
  if (regions.length === 0) return { status: {}, wrote: false };
  const bases = regionBases(regions, bounds.minReplicas);
  const demands = regions.map((r) => {
    const ev = state.cache.evaluate(r, bases.get(`${namespace}/${r.metadata?.name}`)!, now);
    // A region whose schedule cannot be read keeps asking what it asked last (nothing, if it
    // never could be read): a bad spec changes nothing.
    return ev.ok ? ev.now.exact : (r.status?.desiredMinReplicas ?? 0);
  });
  const total = computeModelFloor(demands, bounds);
  const model_ = { name: modelName, ...total, regions: regions.length, ...bounds };
  const hpaName = childNames(modelName).hpa;
  const hpa = informers.for<Hpa>(RESOURCES.hpa, MANAGED_SELECTOR).get(namespace, hpaName);
  if (!hpa) return { status: { hpaMissing: true, model: model_ }, wrote: false };
  if (hpa.spec?.minReplicas === total.floor) return { status: { model: model_ }, wrote: false };
  try {
    await deps.client.request('PATCH', resourcePath(RESOURCES.hpa, namespace, hpaName), {
      body: buildFloorApply(namespace, hpaName, total.floor),
      contentType: 'application/apply-patch+yaml',
      // Force: minReplicas is Crema's field; the model controller hands it over (floor.ts).
      query: { fieldManager: REGION_FIELD_MANAGER, force: true },
    });
    deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'HorizontalPodAutoscaler' });
    return { status: { model: model_ }, wrote: true };
  } catch (err) {
    // A HPA deleted meanwhile: the apply would create an invalid one (422); it comes back with its model.
    const message = err instanceof KubeApiError ? err.message : String(err);
    return {
      status: {
        model: model_,
        applyError: `applying minReplicas ${total.floor} to HPA ${hpaName}: ${message}`,
      },
      wrote: false,
    };
  }
}

/** Reconciles one StoreRegion `namespace/name`. */
export async function reconcileStoreRegion(
  deps: StoreRegionDeps,
  state: RegionControllerState,
  informers: InformerSet,
  key: string,
): Promise<WorkResult> {
  const now = deps.now();
  // 1. Load.
  const [namespace, name] = key.split('/') as [string, string];
  const region = informers.for<StoreRegion>(RESOURCES.storeRegion).get(namespace, name);
  const previousModel = state.lastModel.get(key);
  if (!region || region.metadata?.deletionTimestamp) {
    deps.metrics.setRegionFloor(namespace, name, undefined, undefined);
    state.lastModel.delete(key);
    state.cache.forget(key);
    // Its share leaves the model's floor; with no region left the model controller takes the
    // field back with the model's own minimum.
    if (previousModel) await applyModelFloor(deps, state, informers, namespace, previousModel, now);
    return { kind: 'done' };
  }

  // 2-4. Gather, compute, apply.
  const modelRef = region.spec.serving?.modelRef;
  const model = modelRef
    ? informers.for<RecommenderModel>(RESOURCES.recommenderModel).get(namespace, modelRef)
    : undefined;
  let evaluation: RegionEvaluation | undefined;
  if (modelRef) {
    // The same base the model's sum uses (its share of the model's minimum when unset).
    const base = model
      ? regionBases(regionsServingModel(informers, namespace, modelRef), modelBounds(model).minReplicas).get(
          key,
        )
      : undefined;
    evaluation = state.cache.evaluate(
      region,
      base ?? region.spec.serving?.baseReplicas ?? region.spec.serving?.minReplicas ?? 2,
      now,
    );
  }
  let applied: Omit<RegionStatusInput, 'region' | 'now' | 'evaluation'> = {};
  if (modelRef && evaluation?.ok) {
    applied = (await applyModelFloor(deps, state, informers, namespace, modelRef, now)).status;
    state.lastModel.set(key, modelRef);
  }
  if (previousModel && previousModel !== modelRef) {
    // Re-pointed: the old model loses this region's share.
    await applyModelFloor(deps, state, informers, namespace, previousModel, now);
    if (!modelRef) state.lastModel.delete(key);
  }

  // 5. Status (and the dashboards' gauge, the same floor).
  const status = computeRegionStatus({ region, now, ...(evaluation ? { evaluation } : {}), ...applied });
  deps.metrics.setRegionFloor(
    namespace,
    name,
    modelRef,
    evaluation?.ok ? status.desiredMinReplicas : undefined,
  );
  try {
    const written = await patchStatus(deps.client, RESOURCES.storeRegion, region, status);
    if (written) deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'StoreRegion/status' });
  } catch (err) {
    if (err instanceof KubeApiError && (err.conflict || err.notFound))
      return { kind: 'requeueAfter', ms: 200 };
    throw err;
  }

  // 6. When to come back.
  if (applied.applyError) return { kind: 'error', error: new Error(applied.applyError) };
  const next = evaluation?.ok ? evaluation.next : undefined;
  if (!next) return { kind: 'done' };
  // +1 ms: a timer never wakes us before the boundary the schedule counts as changed.
  const ms = next.at.getTime() - now.getTime() + 1;
  return { kind: 'requeueAfter', ms: Math.min(MAX_SLEEP_MS, Math.max(100, ms)) };
}

/** The controller definition the manager runs. */
export function storeRegionController(deps: StoreRegionDeps): ControllerDef {
  // Bad options fail at start, not in every reconcile.
  new RegionSchedule({ timezone: 'UTC', baseReplicas: 1 }, deps.schedule ?? DEFAULT_SCHEDULE_OPTIONS);
  const state = new RegionControllerState(new RegionFloorCache(deps.schedule ?? DEFAULT_SCHEDULE_OPTIONS));
  const regionsServing = (namespace: string | undefined, model: string | undefined) =>
    deps.informers
      .for<StoreRegion>(RESOURCES.storeRegion)
      .list()
      .filter((r) => r.metadata?.namespace === namespace && r.spec.serving?.modelRef === model)
      .map((r) => `${namespace}/${r.metadata?.name}`)
      .sort();
  return {
    name: CONTROLLER,
    primary: RESOURCES.storeRegion,
    owned: [],
    ownedSelector: MANAGED_SELECTOR,
    watched: [
      {
        // A model's bounds (or its existence) change every region's floor and conditions; its
        // status updates change nothing here.
        resource: RESOURCES.recommenderModel,
        keysFor: (obj: KubeObject, event: InformerEvent) => {
          const key = `${obj.metadata?.namespace}/${obj.metadata?.name}`;
          const stamp = event === 'delete' ? '' : `${obj.metadata?.uid}:${obj.metadata?.generation}`;
          if (state.modelStamps.get(key) === stamp) return [];
          if (stamp) state.modelStamps.set(key, stamp);
          else state.modelStamps.delete(key);
          return regionsServing(obj.metadata?.namespace, obj.metadata?.name);
        },
      },
      {
        // The HPA appearing (or someone changing its floor): one region re-applies the model's floor.
        resource: RESOURCES.hpa,
        labelSelector: MANAGED_SELECTOR,
        keysFor: (obj: KubeObject) => {
          const owner = obj.metadata?.ownerReferences?.find((r) => r.kind === 'RecommenderModel');
          return regionsServing(obj.metadata?.namespace, owner?.name).slice(0, 1);
        },
      },
    ],
    reconcile: (key, informers) => reconcileStoreRegion(deps, state, informers, key),
  };
}
