import type { ModelTask } from '../../contracts/model-metadata.js';
import type { RedisClient } from '../../contracts/redis.js';
import type { DrainState } from './plugins/drain.js';
import type { Clock } from './clock.js';
import type { FeatureStore } from './features/store.js';
import type { ScriptRunner } from './features/scripts.js';
import type { ModelStore } from './model/store.js';
import type { LoadedModel } from './model/loader.js';
import type { ServingMetrics } from './metrics.js';
import type { LocalTimeResolver } from './ranking/context.js';
import type { DriftMonitor } from './drift/monitor.js';
import type { RankingPlan } from './ranking/plan.js';
import type { ExperimentCounting } from './experiments/counting.js';
import type { RegionMenu } from './menu/region-menu.js';

/** What every route of one app instance shares; built by `build()`, never a module singleton. */
export interface ServingContext {
  readonly redis: RedisClient;
  /** Runs the event path's scripts, confirmed by replicas when configured (features/scripts.ts). */
  readonly eventWrites: ScriptRunner;
  /** Exposures and orders of experiment users (requests the experiment router tagged). */
  readonly experiments: ExperimentCounting;
  readonly clock: Clock;
  readonly features: FeatureStore;
  readonly models: ModelStore;
  readonly metrics: ServingMetrics;
  readonly localTime: LocalTimeResolver;
  /** The variant this process serves (labels metrics, echoed in answers). */
  readonly variant: string;
  /** Budget for reading a request's features from Redis. */
  readonly featureDeadlineMs: number;
  /** Bearer token for erase and admin routes; undefined refuses them all. */
  readonly adminToken: string | undefined;
  /** Tasks whose model must be loaded for /readyz. */
  readonly requiredTasks: readonly ModelTask[];
  /** Active while the process drains before exit (/readyz says not ready). */
  readonly drain: DrainState;
  /** Most entries the events stream may hold; at this length new events are refused (503). */
  readonly eventsMaxLen: number;
  /** How long an event id is remembered for dedup, seconds. */
  readonly eventDedupTtlSeconds: number;
  /** The regional menus and capacity now in use (FULL_MENU without a file: ADR 0014). */
  readonly regionMenu: { readonly current: RegionMenu };
  /** The compiled input plan and drift monitor of each loaded ranking model. */
  readonly ranking: WeakMap<LoadedModel, RankingState>;
}

/** Per ranking model: how to build its input and where its drift is tracked. */
export interface RankingState {
  readonly plan: RankingPlan;
  readonly drift: DriftMonitor;
  /** Monitored features and their input column. */
  readonly monitored: readonly { readonly feature: string; readonly column: number }[];
}
