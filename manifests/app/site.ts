/**
 * What the GitOps app renders, in one place: the namespace, where the generator's store list and
 * the models and experiments come from, and the calendar every region shares. Change this file
 * (or the inputs it names) and run `npx cdk8s synth`; commit the output in manifests/gitops/.
 */
import type { StoreRegionSpec } from '../../operator/src/api/v1alpha1/storeregion.js';

export interface SiteConfig {
  /** Namespace of every rendered resource. */
  readonly namespace: string;
  /**
   * The generator's world: `crema-jobs generate --seed 1 --stores 840` gives the same store ids and
   * regions at any user count; users only size each store's capacity (0.4 orders/user/day: 5M users
   * are the chain's 2M orders/day).
   */
  readonly generator: { readonly seed: number; readonly stores: number; readonly users: number };
  /** Directories (relative to the repo root) whose RecommenderModel YAML is rendered, in order. */
  readonly modelDirs: readonly string[];
  /** Directory whose Experiment YAML is rendered. */
  readonly experimentDir: string;
  /** The model every region's floor applies to. */
  readonly regionModel: string;
  /** Replica floor outside peaks per this many stores (rounded up, at least 1). */
  readonly storesPerFloorReplica: number;
  /** Replica ceiling per this many stores (rounded up, at least the floor). */
  readonly storesPerMaxReplica: number;
  /** Rush hours in store-local time, the generator's peaks (feature-jobs/src/generate/orders.ts). */
  readonly peakWindows: NonNullable<StoreRegionSpec['peakWindows']>;
  /** No canary promotion during the weekday morning rush. */
  readonly freezeWindows: NonNullable<StoreRegionSpec['freezeWindows']>;
}

const WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri'] as const;
const WEEKEND = ['Sat', 'Sun'] as const;

export const SITE: SiteConfig = {
  namespace: 'crema',
  generator: { seed: 1, stores: 840, users: 5_000_000 },
  modelDirs: ['manifests/models', 'manifests/examples'],
  experimentDir: 'manifests/examples',
  regionModel: 'drink-ranking',
  storesPerFloorReplica: 100,
  storesPerMaxReplica: 10,
  // The generator weights 06-09 (commuters) and 14-16 (afternoon treat) x3.5, 09-12 x2.2 (weekend habit).
  peakWindows: [
    { days: [...WEEKDAYS], start: '06:00', end: '09:00', multiplier: 3 },
    { days: [...WEEKDAYS, ...WEEKEND], start: '14:00', end: '16:00', multiplier: 2 },
    { days: [...WEEKEND], start: '09:00', end: '12:00', multiplier: 2 },
  ],
  freezeWindows: [{ days: [...WEEKDAYS], start: '06:00', end: '09:30' }],
};
