/**
 * How region floors reach a model's HPA, and how that composes with the RecommenderModel
 * controller's own apply of the same HPA (ADR 0013).
 *
 * One field, two writers: the RecommenderModel controller applies the whole HPA (manager
 * `crema-operator`) with minReplicas = the model's own minimum; the StoreRegion controller
 * applies only `spec.minReplicas` (manager `crema-storeregion`, force) with the regions' floor,
 * never below that minimum. Once the region manager owns minReplicas, the model controller
 * leaves the field out of its apply (`withoutRegionFloor`), so the two never take it from each
 * other; when no region serves the model any more, the model controller puts its minimum back
 * (force moves the field to it). Every other HPA field keeps its owner: an SRE's `behavior` or
 * annotations survive both.
 */
import type { StoreRegion } from '../../api/v1alpha1/index.js';
import type { KubeObject } from '../../runtime/kube.js';
import {
  RegionSchedule,
  ScheduleSpecError,
  type FloorAt,
  type FloorChange,
  type ScheduleOptions,
} from './schedule.js';

/** Field manager of the region floor (only `spec.minReplicas` of the model's HPA). */
export const REGION_FIELD_MANAGER = 'crema-storeregion';

type ManagedFields = NonNullable<NonNullable<KubeObject['metadata']>['managedFields']>;

/** Whether `manager` owns `spec.minReplicas` of `hpa` (from its managedFields). */
export function ownsMinReplicas(hpa: KubeObject | undefined, manager: string): boolean {
  const entries: ManagedFields = hpa?.metadata?.managedFields ?? [];
  return entries.some((e) => {
    if (e.manager !== manager) return false;
    const spec = (e.fieldsV1 as Record<string, Record<string, unknown>> | undefined)?.['f:spec'];
    return !!spec && 'f:minReplicas' in spec;
  });
}

/** Whether a region currently holds the floor of model `modelName`'s HPA. */
export function regionHoldsFloor(
  hpa: KubeObject | undefined,
  regions: readonly StoreRegion[],
  namespace: string,
  modelName: string,
): boolean {
  const served = regions.some(
    (r) =>
      r.metadata?.namespace === namespace &&
      !r.metadata?.deletionTimestamp &&
      r.spec.serving?.modelRef === modelName,
  );
  return served && ownsMinReplicas(hpa, REGION_FIELD_MANAGER);
}

/**
 * Whether the model controller must take `spec.minReplicas` back: no region serves the model
 * any more but the region manager still owns the field alone. Its apply then has to be sent
 * even when the value already matches (a matching value is not a matching owner).
 */
export function floorToReclaim(
  hpa: KubeObject | undefined,
  regions: readonly StoreRegion[],
  namespace: string,
  modelName: string,
  modelManager: string,
): boolean {
  return (
    !regionHoldsFloor(hpa, regions, namespace, modelName) &&
    ownsMinReplicas(hpa, REGION_FIELD_MANAGER) &&
    !ownsMinReplicas(hpa, modelManager)
  );
}

/** The model controller's HPA without `spec.minReplicas` (a region holds it). */
export function withoutRegionFloor<T extends KubeObject>(hpa: T): T {
  const { spec, ...rest } = hpa as T & { spec?: Record<string, unknown> };
  if (!spec) return hpa;
  const { minReplicas: _dropped, ...specRest } = spec;
  return { ...rest, spec: specRest } as unknown as T;
}

/** The server-side apply body that sets only the HPA's floor. */
export function buildFloorApply(namespace: string, hpaName: string, minReplicas: number): KubeObject {
  return {
    apiVersion: 'autoscaling/v2',
    kind: 'HorizontalPodAutoscaler',
    metadata: { name: hpaName, namespace },
    spec: { minReplicas },
  } as KubeObject;
}

/** One region's floor now and until when it holds. */
export type RegionEvaluation =
  | { readonly ok: true; readonly now: FloorAt; readonly next: FloorChange | undefined }
  | { readonly ok: false; readonly error: ScheduleSpecError };

/**
 * Per-region schedules and their last evaluation. A region's floor is constant until its next
 * change, so summing the floors of 800 regions serving one model costs a map lookup each, not
 * 800 time-zone conversions; compiling (Intl formatter, windows) happens once per spec.
 */
export class RegionFloorCache {
  private readonly byKey = new Map<
    string,
    {
      stamp: string;
      schedule?: RegionSchedule;
      error?: ScheduleSpecError;
      at?: number;
      value?: RegionEvaluation;
    }
  >();

  constructor(private readonly opts: ScheduleOptions) {}

  /** Evaluates `region` (whose base is `baseReplicas`) at `now`. */
  evaluate(region: StoreRegion, baseReplicas: number, now: Date): RegionEvaluation {
    const key = `${region.metadata?.namespace}/${region.metadata?.name}`;
    const max = region.spec.serving?.maxReplicas;
    const stamp = `${region.metadata?.uid}:${region.metadata?.generation}:${baseReplicas}:${max}`;
    let entry = this.byKey.get(key);
    if (!entry || entry.stamp !== stamp) {
      entry = { stamp };
      try {
        entry.schedule = new RegionSchedule(
          {
            timezone: region.spec.timezone,
            peakWindows: region.spec.peakWindows ?? [],
            promotions: region.spec.promotions ?? [],
            baseReplicas,
            ...(region.spec.serving?.minReplicas !== undefined
              ? { minReplicas: region.spec.serving.minReplicas }
              : {}),
            ...(max !== undefined ? { maxReplicas: max } : {}),
          },
          this.opts,
        );
      } catch (err) {
        if (!(err instanceof ScheduleSpecError)) throw err;
        entry.error = err;
      }
      this.byKey.set(key, entry);
    }
    if (entry.error) return { ok: false, error: entry.error };
    const t = now.getTime();
    const v = entry.value;
    // Still inside the constant stretch computed last time (and not before it: clocks in tests move back).
    if (v?.ok && entry.at !== undefined && t >= entry.at && (v.next === undefined || t < v.next.at.getTime()))
      return v;
    const value: RegionEvaluation = {
      ok: true,
      now: entry.schedule!.floorAt(t),
      next: entry.schedule!.nextChange(t),
    };
    entry.at = t;
    entry.value = value;
    return value;
  }

  forget(key: string): void {
    this.byKey.delete(key);
  }
}
