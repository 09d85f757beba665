/**
 * The serving tier's Prometheus metrics, on a registry owned by one app instance. Names and label
 * names come from contracts/metrics.ts, which the operator's analysis queries select on. Labels
 * carry routes, variants, reasons, models and revisions, never user ids.
 *
 * Every series that analysis or an SRE slices by model carries the identity labels `model`
 * (RecommenderModel name), `namespace` and `revision` (sha256 of the served task's model that
 * answered), so concurrent canaries of different models are never pooled (docs/adr/0005).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import {
  type IDENTITY_LABELS,
  SERVING_METRICS as M,
  type LabelsOf,
  type MetricSpec,
} from '../../contracts/metrics.js';
import type { ModelTask } from '../../contracts/model-metadata.js';
import type { DriftMonitor, DriftReading } from './drift/monitor.js';

/** `model` and `namespace` of a process started without the operator's environment (a local run). */
export const LOCAL_LABEL = 'local';
/** `revision` while no model of the served task is loaded. */
export const NO_REVISION = 'none';

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

/** Which process this is, for the identity labels. */
export interface ServingIdentity {
  /** The RecommenderModel served (CREMA_MODEL_NAME). Default LOCAL_LABEL. */
  readonly model?: string;
  /** Its namespace (POD_NAMESPACE, from the downward API). Default LOCAL_LABEL. */
  readonly namespace?: string;
  /** The RecommenderModel's task: its model's sha256 is the `revision` label. Default 'drink-ranking'. */
  readonly task?: ModelTask;
}

/** Values of the identity labels. */
export type IdentityLabelValues = Record<(typeof IDENTITY_LABELS)[number], string>;

/** prom-client's `name`, `labelNames` of a metric from the contract. */
const spec = <L extends string>(m: MetricSpec<L>) => ({ name: m.name, labelNames: m.labels });

export class ServingMetrics {
  readonly registry = new Registry();
  readonly httpDuration: Histogram<LabelsOf<'httpRequestDuration'>>;
  readonly fallbacks: Counter<LabelsOf<'fallbacks'>>;
  readonly modelInfo: Gauge<LabelsOf<'modelInfo'>>;
  readonly modelLoads: Counter<LabelsOf<'modelLoads'>>;
  readonly scores: Histogram<LabelsOf<'recommendationScore'>>;
  readonly coldStarts: Counter<LabelsOf<'coldStartRequests'>>;
  readonly shed: Counter<LabelsOf<'requestsRejected'>>;
  readonly events: Counter<LabelsOf<'events'>>;
  readonly eventsRefused: Counter<LabelsOf<'eventsRefused'>>;
  readonly exposures: Counter<LabelsOf<'experimentExposures'>>;
  readonly conversions: Counter<LabelsOf<'experimentConversions'>>;
  readonly conversionValue: Counter<LabelsOf<'experimentConversionValue'>>;
  readonly regionMenuState: Gauge<LabelsOf<'regionMenuState'>>;
  readonly variantLabel = new BoundedLabel();
  readonly model: string;
  readonly namespace: string;
  /** The task whose model's sha256 is the `revision` label. */
  readonly task: ModelTask;
  private drift: DriftMonitor | undefined;
  /** Identity labels with the served task's current revision. */
  private current: IdentityLabelValues;
  /** The revision that answered each request, where it acquired the served task's model. */
  private readonly answered = new WeakMap<object, string>();

  /** Records which regional menu serving uses now (one series at 1, the others at 0). */
  setRegionMenuState(state: 'ok' | 'missing' | 'invalid'): void {
    for (const s of ['ok', 'missing', 'invalid'] as const)
      this.regionMenuState.set(
        { model: this.model, namespace: this.namespace, state: s },
        s === state ? 1 : 0,
      );
  }

  constructor(identity: ServingIdentity = {}) {
    this.model = identity.model || LOCAL_LABEL;
    this.namespace = identity.namespace || LOCAL_LABEL;
    this.task = identity.task ?? 'drink-ranking';
    this.current = { model: this.model, namespace: this.namespace, revision: NO_REVISION };
    const r = [this.registry];
    const self = () => ({ model: this.model, namespace: this.namespace });
    collectDefaultMetrics({ register: this.registry });
    this.httpDuration = new Histogram({
      ...spec(M.httpRequestDuration),
      help: 'Request latency by model, namespace, revision, variant, route template, method and status code.',
      buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    });
    this.fallbacks = new Counter({
      ...spec(M.fallbacks),
      help: 'Requests answered by the popularity fallback, by route and reason.',
      registers: r,
    });
    this.modelInfo = new Gauge({
      ...spec(M.modelInfo),
      help: 'The model revision currently loaded for each task (value 1); metadata_name is the name in its metadata.',
      registers: r,
    });
    this.modelLoads = new Counter({
      ...spec(M.modelLoads),
      help: 'Model load attempts by task and outcome (loaded, failed).',
      registers: r,
    });
    this.scores = new Histogram({
      ...spec(M.recommendationScore),
      help: 'Ranking model scores of the drinks returned to users.',
      buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
      registers: r,
    });
    this.coldStarts = new Counter({
      ...spec(M.coldStartRequests),
      help: 'Recommendations for users without batch features (segment features used).',
      registers: r,
    });
    this.shed = new Counter({
      ...spec(M.requestsRejected),
      help: 'Requests refused before handling: overload (503: queue_time, concurrency_limit, in_flight, event_loop_delay; proxy: by the admission proxy in front) or per-client rate limit (429: rate_limit).',
      registers: r,
      collect: () => this.beforeShedCollect?.(),
    });
    this.events = new Counter({
      ...spec(M.events),
      help: 'App events received, by type and outcome (accepted, duplicate).',
      registers: r,
    });
    this.eventsRefused = new Counter({
      ...spec(M.eventsRefused),
      help: 'App events refused with 503 and not stored, by reason (stream_full: the events stream holds its maximum of unprocessed entries).',
      registers: r,
    });
    this.regionMenuState = new Gauge({
      ...spec(M.regionMenuState),
      help: 'The regional menu in use: 1 for its state (ok; missing or invalid serve the full menu without a capacity bound).',
      registers: r,
    });
    this.exposures = new Counter({
      ...spec(M.experimentExposures),
      help: 'Impression events per variant (the variant named in the event).',
      registers: r,
    });
    this.conversions = new Counter({
      ...spec(M.experimentConversions),
      help: 'Order events per variant (the variant named in the event).',
      registers: r,
    });
    this.conversionValue = new Counter({
      ...spec(M.experimentConversionValue),
      help: 'Order value in dollars per variant (the variant named in the event).',
      registers: r,
    });
    const current = () => this.drift;
    // The drift gauges describe the ranking model the monitor watches: its own revision.
    const driftLabels = (d: DriftMonitor) => ({ ...self(), revision: d.meta.sha256 });
    // One series per monitored feature of the current model; `value` undefined → no series.
    const perFeature = (
      m: MetricSpec<LabelsOf<'featureDriftPsi'>>,
      help: string,
      value: (x: DriftReading) => number | undefined,
    ) =>
      new Gauge({
        ...spec(m),
        help,
        registers: r,
        collect() {
          this.reset();
          const d = current();
          if (!d) return;
          for (const x of d.featureReadings()) {
            const v = value(x);
            if (v !== undefined) this.set({ ...driftLabels(d), feature: x.feature }, v);
          }
        },
      });
    // No PSI series until the window is big enough to mean something (DRIFT_MIN_OBSERVATIONS).
    perFeature(
      M.featureDriftPsi,
      'Population stability index of a monitored feature over the rolling window vs the model baseline.',
      (x) => x.psi,
    );
    perFeature(
      M.featureDriftObservations,
      'Values of a monitored feature in the drift window (PSI is published from DRIFT_MIN_OBSERVATIONS on).',
      (x) => x.observations,
    );
    new Gauge({
      ...spec(M.scoreDriftPsi),
      help: 'Population stability index of ranking scores over the rolling window vs the model baseline.',
      registers: r,
      collect() {
        this.reset();
        const d = current();
        const x = d?.scoreReading();
        if (d && x?.psi !== undefined) this.set(driftLabels(d), x.psi);
      },
    });
    new Gauge({
      ...spec(M.featureWindowShare),
      help: 'Share of the rolling window in each baseline bin of a monitored feature (the live distribution).',
      registers: r,
      collect() {
        this.reset();
        const d = current();
        if (!d) return;
        for (const x of d.featureReadings()) {
          x.shares.forEach((s, bin) =>
            this.set({ ...driftLabels(d), feature: x.feature, bin: String(bin) }, s),
          );
        }
      },
    });
  }

  private beforeShedCollect: (() => void) | undefined;

  /**
   * Publishes the admission proxy's refusals as `reason="proxy"`: `read` gives the proxy's own
   * running count (undefined when unknown), read at every scrape. A count that went down is a
   * restarted proxy: it counts on from there, and the published counter never goes down.
   */
  publishProxyRefusals(read: () => number | undefined): void {
    let last = 0;
    this.beforeShedCollect = () => {
      const n = read();
      if (n === undefined) return;
      if (n > last) this.shed.inc({ ...this.labelsFor(), reason: 'proxy' }, n - last);
      last = n;
    };
  }

  /**
   * The identity labels of `req`: the revision of the served task's model that answered it (see
   * `answeredBy`), else the one loaded now. Without `req`, the process's labels now.
   */
  labelsFor(req?: object): IdentityLabelValues {
    const answered = req === undefined ? undefined : this.answered.get(req);
    return answered === undefined || answered === this.current.revision
      ? this.current
      : { model: this.model, namespace: this.namespace, revision: answered };
  }

  /**
   * Records that `model` of `task` answers `req`. For the served task this fixes the request's
   * `revision`, so a request that started before a hot swap is counted for the model it used.
   */
  answeredBy(req: object, task: ModelTask, model: { readonly revision: string }): void {
    if (task === this.task) this.answered.set(req, model.revision);
  }

  /** Points the drift gauges at a new model's monitor. */
  setDriftMonitor(d: DriftMonitor | undefined): void {
    this.drift = d;
  }

  /** Records a swap in the model info gauge (and, for the served task, the current revision). */
  modelSwapped(
    task: ModelTask,
    next: { name: string; sha256: string },
    prev?: { name: string; sha256: string },
  ): void {
    const info = (m: { name: string; sha256: string }) => ({
      model: this.model,
      namespace: this.namespace,
      revision: m.sha256,
      task,
      metadata_name: m.name,
    });
    if (prev) this.modelInfo.remove(info(prev));
    this.modelInfo.set(info(next), 1);
    this.modelLoads.inc({ model: this.model, namespace: this.namespace, task, outcome: 'loaded' });
    if (task === this.task)
      this.current = { model: this.model, namespace: this.namespace, revision: next.sha256 };
  }
}
