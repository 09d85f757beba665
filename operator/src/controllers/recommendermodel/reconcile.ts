/**
 * RecommenderModel reconcile, as numbered steps:
 *   1. load the model from the cache (gone → nothing to do: owner references clean up);
 *   2. build the desired children (pure);
 *   3. apply each child with server-side apply, skipping those already as desired;
 *   4. compute status from what the cluster shows (pure);
 *   5. write status only if it changed; record Events for transitions;
 *   6. say when to come back (errors → backoff; otherwise child events wake us).
 */
import type { EventRecorder } from '../../runtime/events.js';
import { applyOwned, patchStatus } from '../../runtime/apply.js';
import {
  KubeApiError,
  RESOURCES,
  type KubeClient,
  type KubeObject,
  type ResourceDef,
} from '../../runtime/kube.js';
import type { ControllerDef, InformerSet } from '../../runtime/manager.js';
import type { OperatorMetrics } from '../../runtime/metrics.js';
import type { WorkResult } from '../../runtime/queue.js';
import { MODEL_SHA_ANNOTATION, buildServingObjects } from './desired.js';
import { computeStatus, type ObservedDeployment } from './status.js';
import type { RecommenderModel } from './types.js';

/** What the reconcile needs from the outside world. */
export interface RecommenderModelDeps {
  readonly client: KubeClient;
  readonly events: EventRecorder;
  readonly metrics: OperatorMetrics;
  readonly now: () => Date;
  readonly log: (msg: string) => void;
  readonly desiredCache: DesiredCache;
}

/**
 * Remembers the children built for each model (by key, uid and generation): synthesizing a
 * cdk8s chart per resync of 1,000 models costs more CPU and memory churn than the rest of the
 * reconcile. Entries are replaced when the generation moves and dropped for deleted models.
 */
export class DesiredCache {
  private readonly byKey = new Map<string, { uid: string; generation: number; objects: KubeObject[] }>();
  get(key: string, model: RecommenderModel, build: () => KubeObject[]): KubeObject[] {
    const uid = model.metadata?.uid ?? '';
    const generation = model.metadata?.generation ?? 0;
    const hit = this.byKey.get(key);
    if (hit && hit.uid === uid && hit.generation === generation) return hit.objects;
    const objects = build();
    this.byKey.set(key, { uid, generation, objects });
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
];
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

  // 2. Desired children (pure in uid + generation, so a resync reuses the last build).
  const desired = deps.desiredCache.get(key, model, () => buildServingObjects(model));

  // 3. Apply what differs. An error stops here; status records it and the queue backs off.
  let applyError: string | undefined;
  let deployment: KubeObject | undefined;
  for (const obj of desired) {
    const resource = byKind.get(obj.kind ?? '');
    if (!resource) throw new Error(`no resource for kind ${obj.kind}`);
    const observed = informers.for(resource).get(namespace, obj.metadata!.name!);
    try {
      const { object, wrote } = await applyOwned(deps.client, resource, obj, observed);
      if (wrote) deps.metrics.writes.inc({ controller: CONTROLLER, kind: resource.kind });
      if (resource === RESOURCES.deployment) deployment = object;
    } catch (err) {
      applyError = `applying ${resource.kind} ${obj.metadata?.name}: ${err instanceof KubeApiError ? err.message : String(err)}`;
      break;
    }
  }

  // 4. Status from the cluster.
  const now = deps.now();
  const status = computeStatus({
    model,
    deployment: observeDeployment(
      deployment ?? informers.for(RESOURCES.deployment).get(namespace, `${name}-stable`),
    ),
    ...(applyError ? { applyError } : {}),
    now,
  });

  // 5. Save status if it changed; Events for transitions.
  try {
    if (await patchStatus(deps.client, RESOURCES.recommenderModel, model, status)) {
      deps.metrics.writes.inc({ controller: CONTROLLER, kind: 'RecommenderModel/status' });
      await recordTransitions(deps.events, model, status);
    }
  } catch (err) {
    // A conflict means our cached copy is stale; the watch brings the fresh one and re-queues.
    if (err instanceof KubeApiError && (err.conflict || err.notFound))
      return { kind: 'requeueAfter', ms: 200 };
    throw err;
  }

  // 6. When to come back.
  if (applyError) return { kind: 'error', error: new Error(applyError) };
  return { kind: 'done' };
}

async function recordTransitions(
  events: EventRecorder,
  model: RecommenderModel,
  next: RecommenderModel['status'],
) {
  const before = new Map((model.status?.conditions ?? []).map((c) => [c.type, c]));
  const obj = { ...model, apiVersion: 'crema.dev/v1alpha1', kind: 'RecommenderModel' };
  const prevRev = model.status?.stable?.revision;
  if (next?.stable?.revision !== undefined && prevRev !== undefined && next.stable.revision !== prevRev) {
    await events.record(
      obj,
      'Normal',
      'NewRevision',
      `revision ${next.stable.revision} (${next.stable.modelSha?.slice(0, 12)}) is rolling out to stable`,
    );
  }
  for (const c of next?.conditions ?? []) {
    const old = before.get(c.type);
    if (old?.status === c.status && old?.reason === c.reason) continue;
    if (c.type === 'Ready' && c.status === 'True')
      await events.record(obj, 'Normal', 'Ready', c.message ?? '');
    if (c.type === 'Degraded' && c.status === 'True')
      await events.record(obj, 'Warning', c.reason ?? 'Degraded', c.message ?? '');
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
    ownedSelector: 'app.kubernetes.io/managed-by=crema-operator',
    reconcile: (key, informers) => reconcileRecommenderModel(deps, informers, key),
  };
}
