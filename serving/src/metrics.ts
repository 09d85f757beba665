/**
 * The serving tier's Prometheus metrics, on a registry owned by one app instance. Labels carry
 * routes, variants, reasons, model names and revisions, never user ids.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelTask } from '../../contracts/model-metadata.js';
import type { DriftMonitor, DriftReading } from './drift/monitor.js';

/** Keeps a label's cardinality bounded: values beyond the first `max` distinct ones become 'other'. */
export class BoundedLabel {
  private readonly seen = new Set<string>();
  constructor(private readonly max = 20) {}
  value(v: string | undefined): string {
    if (v === undefined || v === '') return 'none';
    if (this.seen.has(v)) return v;
    if (this.seen.size >= this.max || !/^[A-Za-z0-9_.-]{1,40}$/.test(v)) return 'other';
    this.seen.add(v);
    return v;
  }
}

export class ServingMetrics {
  readonly registry = new Registry();
  readonly httpDuration: Histogram<'route' | 'method' | 'status_code' | 'variant'>;
  readonly fallbacks: Counter<'route' | 'reason'>;
  readonly modelInfo: Gauge<'task' | 'model' | 'revision'>;
  readonly modelLoads: Counter<'task' | 'outcome'>;
  readonly scores: Histogram<'model'>;
  readonly coldStarts: Counter;
  readonly shed: Counter<'reason'>;
  readonly events: Counter<'type' | 'outcome'>;
  readonly exposures: Counter<'variant'>;
  readonly conversions: Counter<'variant'>;
  readonly conversionValue: Counter<'variant'>;
  readonly variantLabel = new BoundedLabel();
  private drift: DriftMonitor | undefined;

  /**
   * `modelName`: the `model` label of the drift gauges — the RecommenderModel's name, which the
   * operator's drift rules and analysis select on; default the model metadata's own name.
   */
  constructor(
    prefix = 'crema_',
    private readonly modelName?: string,
  ) {
    const r = [this.registry];
    const label = (d: DriftMonitor) => this.modelName ?? d.meta.name;
    collectDefaultMetrics({ register: this.registry });
    this.httpDuration = new Histogram({
      name: `${prefix}http_request_duration_seconds`,
      help: 'Request latency by route template, method, status code and variant.',
      labelNames: ['route', 'method', 'status_code', 'variant'],
      buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    });
    this.fallbacks = new Counter({
      name: `${prefix}fallbacks_total`,
      help: 'Requests answered by the popularity fallback, by route and reason.',
      labelNames: ['route', 'reason'],
      registers: r,
    });
    this.modelInfo = new Gauge({
      name: `${prefix}model_info`,
      help: 'The model revision currently serving each task (value 1).',
      labelNames: ['task', 'model', 'revision'],
      registers: r,
    });
    this.modelLoads = new Counter({
      name: `${prefix}model_loads_total`,
      help: 'Model load attempts by task and outcome (loaded, failed).',
      labelNames: ['task', 'outcome'],
      registers: r,
    });
    this.scores = new Histogram({
      name: `${prefix}recommendation_score`,
      help: 'Ranking model scores of the drinks returned to users.',
      labelNames: ['model'],
      buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
      registers: r,
    });
    this.coldStarts = new Counter({
      name: `${prefix}cold_start_requests_total`,
      help: 'Recommendations for users without batch features (segment features used).',
      registers: r,
    });
    this.shed = new Counter({
      name: `${prefix}requests_rejected_total`,
      help: 'Requests refused before handling: overload (503: in_flight, event_loop_delay) or per-client rate limit (429: rate_limit).',
      labelNames: ['reason'],
      registers: r,
    });
    this.events = new Counter({
      name: `${prefix}events_total`,
      help: 'App events received, by type and outcome (accepted, duplicate).',
      labelNames: ['type', 'outcome'],
      registers: r,
    });
    this.exposures = new Counter({
      name: `${prefix}experiment_exposures_total`,
      help: 'Impression events per variant.',
      labelNames: ['variant'],
      registers: r,
    });
    this.conversions = new Counter({
      name: `${prefix}experiment_conversions_total`,
      help: 'Order events per variant.',
      labelNames: ['variant'],
      registers: r,
    });
    this.conversionValue = new Counter({
      name: `${prefix}experiment_conversion_value_dollars_total`,
      help: 'Order value in dollars per variant.',
      labelNames: ['variant'],
      registers: r,
    });
    const current = () => this.drift;
    // One series per monitored feature of the current model; `value` undefined → no series.
    const perFeature = (name: string, help: string, value: (x: DriftReading) => number | undefined) =>
      new Gauge({
        name: `${prefix}${name}`,
        help,
        labelNames: ['model', 'revision', 'feature'],
        registers: r,
        collect() {
          this.reset();
          const d = current();
          if (!d) return;
          for (const x of d.featureReadings()) {
            const v = value(x);
            if (v !== undefined)
              this.set({ model: label(d), revision: d.meta.sha256, feature: x.feature }, v);
          }
        },
      });
    // No PSI series until the window is big enough to mean something (DRIFT_MIN_OBSERVATIONS).
    perFeature(
      'feature_drift_psi',
      'Population stability index of a monitored feature over the rolling window vs the model baseline.',
      (x) => x.psi,
    );
    perFeature(
      'feature_drift_observations',
      'Values of a monitored feature in the drift window (PSI is published from DRIFT_MIN_OBSERVATIONS on).',
      (x) => x.observations,
    );
    new Gauge({
      name: `${prefix}score_drift_psi`,
      help: 'Population stability index of ranking scores over the rolling window vs the model baseline.',
      labelNames: ['model', 'revision'],
      registers: r,
      collect() {
        this.reset();
        const d = current();
        const x = d?.scoreReading();
        if (d && x?.psi !== undefined) this.set({ model: label(d), revision: d.meta.sha256 }, x.psi);
      },
    });
    new Gauge({
      name: `${prefix}feature_window_share`,
      help: 'Share of the rolling window in each baseline bin of a monitored feature (the live distribution).',
      labelNames: ['model', 'feature', 'bin'],
      registers: r,
      collect() {
        this.reset();
        const d = current();
        if (!d) return;
        for (const x of d.featureReadings()) {
          x.shares.forEach((s, bin) =>
            this.set({ model: label(d), feature: x.feature, bin: String(bin) }, s),
          );
        }
      },
    });
  }

  /** Points the drift gauges at a new model's monitor. */
  setDriftMonitor(d: DriftMonitor | undefined): void {
    this.drift = d;
  }

  /** Records a swap in the model info gauge. */
  modelSwapped(
    task: ModelTask,
    next: { name: string; sha256: string },
    prev?: { name: string; sha256: string },
  ): void {
    if (prev) this.modelInfo.remove({ task, model: prev.name, revision: prev.sha256 });
    this.modelInfo.set({ task, model: next.name, revision: next.sha256 }, 1);
    this.modelLoads.inc({ task, outcome: 'loaded' });
  }
}
