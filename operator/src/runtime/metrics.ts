/** Operator metrics on a registry the caller owns (no global default registry). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly reconciles: Counter<'controller' | 'result'>;
  readonly reconcileErrors: Counter<'controller'>;
  readonly reconcileDuration: Histogram<'controller'>;
  readonly queueDepth: Gauge<'controller'>;
  readonly leader: Gauge;
  readonly writes: Counter<'controller' | 'kind'>;
  /** Running experiments' latest look (dashboards; the same numbers as their status). */
  readonly experimentLift: Gauge<'namespace' | 'experiment' | 'variant'>;
  readonly experimentLiftCiLow: Gauge<'namespace' | 'experiment' | 'variant'>;
  readonly experimentLiftCiHigh: Gauge<'namespace' | 'experiment' | 'variant'>;
  readonly experimentSrmP: Gauge<'namespace' | 'experiment'>;
  /** Each StoreRegion's desired floor now (the regions dashboard; the same as its status). */
  readonly regionFloor: Gauge<'namespace' | 'storeregion' | 'model'>;
  private readonly regionModels = new Map<string, string>();
  private readonly experimentVariants = new Map<string, readonly string[]>();
  private apiRequestCounts: Record<string, number> = {};

  constructor(readonly registry: Registry = new Registry()) {
    collectDefaultMetrics({ register: registry, prefix: 'crema_operator_' });
    this.reconciles = new Counter({
      name: 'crema_operator_reconcile_total',
      help: 'Reconciles by controller and result (success, requeue, error).',
      labelNames: ['controller', 'result'],
      registers: [registry],
    });
    this.reconcileErrors = new Counter({
      name: 'crema_operator_reconcile_errors_total',
      help: 'Reconciles that failed and were retried with backoff.',
      labelNames: ['controller'],
      registers: [registry],
    });
    this.reconcileDuration = new Histogram({
      name: 'crema_operator_reconcile_duration_seconds',
      help: 'Time per reconcile.',
      labelNames: ['controller'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
    this.queueDepth = new Gauge({
      name: 'crema_operator_workqueue_depth',
      help: 'Keys waiting in the work queue.',
      labelNames: ['controller'],
      registers: [registry],
    });
    this.leader = new Gauge({
      name: 'crema_operator_leader',
      help: '1 when this replica holds the leader lease, else 0.',
      registers: [registry],
    });
    this.writes = new Counter({
      name: 'crema_operator_writes_total',
      help: 'Write requests sent (applies, status patches), by controller and object kind.',
      labelNames: ['controller', 'kind'],
      registers: [registry],
    });
    const lift = (name: string, help: string) =>
      new Gauge({ name, help, labelNames: ['namespace', 'experiment', 'variant'], registers: [registry] });
    this.experimentLift = lift(
      'crema_experiment_lift',
      'Relative lift of a variant over control at the last look.',
    );
    this.experimentLiftCiLow = lift(
      'crema_experiment_lift_ci_low',
      'Lower end of the always-valid interval of the lift (Holm level) at the last look.',
    );
    this.experimentLiftCiHigh = lift(
      'crema_experiment_lift_ci_high',
      'Upper end of the always-valid interval of the lift (Holm level) at the last look.',
    );
    this.experimentSrmP = new Gauge({
      name: 'crema_experiment_srm_p_value',
      help: 'Sample-ratio-mismatch p-value of a running experiment at the last look.',
      labelNames: ['namespace', 'experiment'],
      registers: [registry],
    });
    this.regionFloor = new Gauge({
      name: 'crema_storeregion_desired_min_replicas',
      help: "A StoreRegion's replica floor now for its model (status.desiredMinReplicas).",
      labelNames: ['namespace', 'storeregion', 'model'],
      registers: [registry],
    });
    const counts = () => this.apiRequestCounts;
    new Gauge({
      name: 'crema_operator_api_requests',
      help: 'Requests sent to the Kubernetes API since start, by method (WATCH = watch streams opened).',
      labelNames: ['method'],
      registers: [registry],
      collect() {
        for (const [method, n] of Object.entries(counts())) this.set({ method }, n);
      },
    });
  }

  /** Exposes a KubeClient's request counters as crema_operator_api_requests{method}. */
  trackApiRequests(counts: Record<string, number>): void {
    this.apiRequestCounts = counts;
  }

  /** Records an experiment's last look (replacing its previous variants' series). */
  setExperiment(
    namespace: string,
    experiment: string,
    look: {
      readonly srmPValue: number;
      readonly comparisons: readonly {
        variant: string;
        lift: number;
        liftInterval: readonly [number, number];
      }[];
    },
  ): void {
    this.dropExperiment(namespace, experiment);
    this.experimentSrmP.set({ namespace, experiment }, look.srmPValue);
    for (const c of look.comparisons) {
      const l = { namespace, experiment, variant: c.variant };
      this.experimentLift.set(l, c.lift);
      this.experimentLiftCiLow.set(l, c.liftInterval[0]);
      this.experimentLiftCiHigh.set(l, c.liftInterval[1]);
    }
    this.experimentVariants.set(
      `${namespace}/${experiment}`,
      look.comparisons.map((c) => c.variant),
    );
  }

  /** Removes an experiment's series (it ended or was deleted). */
  dropExperiment(namespace: string, experiment: string): void {
    const key = `${namespace}/${experiment}`;
    const variants = this.experimentVariants.get(key);
    if (!variants) return;
    this.experimentSrmP.remove({ namespace, experiment });
    for (const variant of variants) {
      const l = { namespace, experiment, variant };
      this.experimentLift.remove(l);
      this.experimentLiftCiLow.remove(l);
      this.experimentLiftCiHigh.remove(l);
    }
    this.experimentVariants.delete(key);
  }

  /** Records a region's floor now; `undefined` (no model, invalid spec, deleted) removes it. */
  setRegionFloor(
    namespace: string,
    storeregion: string,
    model: string | undefined,
    floor: number | undefined,
  ): void {
    const key = `${namespace}/${storeregion}`;
    const old = this.regionModels.get(key);
    if (old !== undefined && (old !== model || floor === undefined)) {
      this.regionFloor.remove({ namespace, storeregion, model: old });
      this.regionModels.delete(key);
    }
    if (model === undefined || floor === undefined) return;
    this.regionFloor.set({ namespace, storeregion, model }, floor);
    this.regionModels.set(key, model);
  }
}
