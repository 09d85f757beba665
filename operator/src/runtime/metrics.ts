/** Operator metrics on a registry the caller owns (no global default registry). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly reconciles: Counter<'controller' | 'result'>;
  readonly reconcileErrors: Counter<'controller'>;
  readonly reconcileDuration: Histogram<'controller'>;
  readonly queueDepth: Gauge<'controller'>;
  readonly leader: Gauge;
  readonly writes: Counter<'controller' | 'kind'>;
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
}
