/**
 * StoreRegion status from what one reconcile saw and did (pure). Conditions: Ready (the floor
 * reached the model's HPA), Degraded (a spec the floor cannot be computed from, a model that
 * does not exist), CapacityClamped (a maximum cut the floor). A spec error changes nothing
 * else: the last floor stays in status and on the HPA.
 */
import type { StoreRegion, StoreRegionStatus } from '../../api/v1alpha1/index.js';
import type { RegionEvaluation } from './floor.js';

type Condition = NonNullable<StoreRegionStatus['conditions']>[number];

/** What the reconcile observed and did, for the status. */
export interface RegionStatusInput {
  readonly region: StoreRegion;
  /** The region's own schedule at now; absent without spec.serving. */
  readonly evaluation?: RegionEvaluation;
  /** spec.serving.modelRef names no RecommenderModel. */
  readonly modelMissing?: boolean;
  /** The model exists but its HPA does not (yet). */
  readonly hpaMissing?: boolean;
  /** The floor written to (or found on) the model's HPA, with the sum it came from. */
  readonly model?: {
    readonly name: string;
    readonly floor: number;
    readonly sum: number;
    readonly regions: number;
    readonly minReplicas: number;
    readonly maxReplicas: number;
    readonly clamped: boolean;
  };
  readonly applyError?: string;
  readonly now: Date;
}

/** Sets condition `c`, keeping lastTransitionTime when its status did not change. */
function setCondition(list: readonly Condition[], c: Condition, now: Date): Condition[] {
  const old = list.find((x) => x.type === c.type);
  const lastTransitionTime =
    old && old.status === c.status && old.lastTransitionTime ? old.lastTransitionTime : now.toISOString();
  return [...list.filter((x) => x.type !== c.type), { ...c, lastTransitionTime }].sort((a, b) =>
    a.type.localeCompare(b.type),
  );
}

/** The region's status. */
export function computeRegionStatus(input: RegionStatusInput): StoreRegionStatus {
  const { region, evaluation: ev, now } = input;
  const old = region.status ?? {};
  const generation = region.metadata?.generation;
  let conditions = old.conditions ?? [];
  const set = (type: string, status: 'True' | 'False', reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      {
        type,
        status,
        reason,
        message,
        ...(generation !== undefined ? { observedGeneration: generation } : {}),
      },
      now,
    );
  };
  const modelRef = region.spec.serving?.modelRef;

  // A spec the schedule cannot be read from: say which field; the last floor stays.
  if (ev && !ev.ok) {
    set('Degraded', 'True', 'InvalidSpec', `${ev.error.message}; the floor stays where it was`);
    set('Ready', 'False', 'InvalidSpec', ev.error.message);
    const { conditions: _c, observedGeneration: _g, ...kept } = old;
    return { ...(generation !== undefined ? { observedGeneration: generation } : {}), conditions, ...kept };
  }

  const status: StoreRegionStatus = {
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
  };
  if (ev?.ok) {
    status.activeWindow = truncate(ev.now.active.join(', '), 256);
    status.desiredMinReplicas = ev.now.floor;
    if (ev.now.activePromotions.length) status.activePromotions = ev.now.activePromotions.slice(0, 32);
    if (ev.next) {
      status.nextChangeTime = ev.next.at.toISOString();
      status.nextMinReplicas = ev.next.floor;
    }
  }

  if (!modelRef) {
    set('Degraded', 'False', 'AsExpected', 'no spec.serving: nothing to scale');
    set(
      'Ready',
      'True',
      'NoModel',
      'no spec.serving.modelRef: freeze windows and menu only, no replica floor',
    );
    set('CapacityClamped', 'False', 'NoModel', 'no spec.serving.modelRef');
    return { ...status, conditions };
  }
  if (input.modelMissing) {
    const msg = `spec.serving.modelRef: RecommenderModel "${modelRef}" not found in namespace ${region.metadata?.namespace}`;
    set('Degraded', 'True', 'ModelNotFound', `${msg}; no floor is applied`);
    set('Ready', 'False', 'ModelNotFound', msg);
  } else {
    set('Degraded', 'False', 'AsExpected', 'the schedule and the model are valid');
    if (input.hpaMissing) {
      set(
        'Ready',
        'False',
        'WaitingForAutoscaler',
        `RecommenderModel ${modelRef} has no HorizontalPodAutoscaler yet`,
      );
    } else if (input.applyError) {
      set('Ready', 'False', 'ApplyFailed', input.applyError);
    } else if (input.model) {
      const m = input.model;
      set(
        'Ready',
        'True',
        'FloorApplied',
        `HorizontalPodAutoscaler of ${m.name} has minReplicas ${m.floor}: ${m.regions} region(s) ask ${replicas(m.sum)} in total${ev?.ok ? ` (this one ${replicas(ev.now.exact)})` : ''}, the model's own minimum is ${m.minReplicas}`,
      );
    }
  }

  // Clamped by this region's ceiling, or by the model's (the HPA refuses min > max).
  const m = input.model;
  if (ev?.ok && ev.now.clamped) {
    set(
      'CapacityClamped',
      'True',
      'RegionMaximum',
      `the schedule asks ${ev.now.demand} replicas; spec.serving.maxReplicas caps it at ${region.spec.serving?.maxReplicas}`,
    );
  } else if (m?.clamped) {
    set(
      'CapacityClamped',
      'True',
      'ModelMaximum',
      `the ${m.regions} region(s) serving ${m.name} ask ${replicas(m.sum)} replicas; RecommenderModel ${m.name} spec.serving.maxReplicas caps the floor at ${m.maxReplicas}`,
    );
  } else {
    set('CapacityClamped', 'False', 'WithinMaximum', 'the floor is below every maximum');
  }
  return { ...status, conditions };
}

/** A replica count that may be a share: 2, 0.25, 1.33. */
function replicas(n: number): string {
  return String(Math.round(n * 100) / 100);
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}
