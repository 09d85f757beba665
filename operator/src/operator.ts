/**
 * Assembles the operator from its parts: Kubernetes client, metrics, manager with the
 * controllers, health server and leader election. `main.ts` only reads configuration and
 * calls `startOperator`; tests and `npm start` call it the same way.
 */
import * as k8s from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { analyzeCanary } from './analysis/analyze.js';
import { createPrometheusClient } from './analysis/prometheus.js';
import {
  DesiredCache,
  recommenderModelController,
  type CanaryAnalyzer,
} from './controllers/recommendermodel/reconcile.js';
import { MANAGED_BY } from './controllers/recommendermodel/desired.js';
import { storeRegionController } from './controllers/storeregion/reconcile.js';
import type { ScheduleOptions } from './controllers/storeregion/schedule.js';
import { experimentController } from './controllers/experiment/reconcile.js';
import { analyze as analyzeExperiment } from './controllers/experiment/stats.js';
import {
  ClusterDriftAlerts,
  DEFAULT_DRIFT_ALERT_TTL_MS,
  DRIFT_ALERTS_CONFIGMAP,
  checkRecordable,
} from './rollout/alerts.js';
import { patchDriftAlert, startDriftAlertPruning } from './webhooks/alert-state.js';
import { startAlertWebhook } from './webhooks/alertmanager.js';
import { createEventRecorder } from './runtime/events.js';
import { startHealthServer } from './runtime/health.js';
import { fenceWrites } from './runtime/fence.js';
import { RESOURCES, createKubeClient, type KubeClient, type KubeObject } from './runtime/kube.js';
import { Manager } from './runtime/manager.js';
import { OperatorMetrics } from './runtime/metrics.js';

export interface OperatorConfig {
  /** Path to a kubeconfig; default: KUBECONFIG, ~/.kube/config or in-cluster. */
  readonly kubeconfigPath?: string;
  /** Watch only this namespace; default all. */
  readonly namespace?: string;
  /** Health/metrics port; 0 picks a free one. Default 8081. */
  readonly healthPort?: number;
  readonly healthHost?: string;
  /** Leader election; default on, lease `crema-operator` in `leaseNamespace`. */
  readonly leaderElection?: boolean;
  readonly leaseNamespace?: string;
  readonly leaseDurationMs?: number;
  readonly identity?: string;
  readonly concurrency?: number;
  /** Re-check every object this often, ms (default 10 minutes). */
  readonly resyncMs?: number;
  readonly log?: (msg: string) => void;
  readonly onLostLeadership?: (reason: string) => void;
  /** Prometheus base URL for canary analysis; without it analysed steps wait (Inconclusive). */
  readonly prometheusUrl?: string;
  /** Alertmanager webhook receiver (drift alerts → rollback). Port 0 picks a free one. */
  readonly alertWebhook?: { readonly port: number; readonly host?: string; readonly bearerToken: string };
  /** Redis the serving pods use when a model's spec.serving.redisUrl is not set. */
  readonly servingRedisUrl?: string;
  /**
   * A recorded drift alert counts this long after Alertmanager last sent it (default 10 minutes);
   * Alertmanager's repeat_interval must be shorter.
   */
  readonly driftAlertTtlMs?: number;
  /** StoreRegion floors: lead time before a window and step-down after (default ADR 0013). */
  readonly regionSchedule?: ScheduleOptions;
  /** The StoreRegion controller's clock (tests move it); default the wall clock. */
  readonly regionClock?: () => Date;
  /** Experiments: time between looks while running (default 60 s), guardrail window (default 5m). */
  readonly experiments?: { readonly lookIntervalMs?: number; readonly guardrailWindow?: string };
}

export interface RunningOperator {
  readonly manager: Manager;
  /** Port of the Alertmanager webhook receiver, when enabled. */
  readonly alertWebhookPort?: number;
  readonly client: KubeClient;
  readonly metrics: OperatorMetrics;
  readonly health: Server;
  readonly healthPort: number;
  readonly identity: string;
  stop(): Promise<void>;
}

/** Starts the operator; resolves once caches are synced (and, if elected, workers run). */
export async function startOperator(cfg: OperatorConfig = {}): Promise<RunningOperator> {
  const log = cfg.log ?? ((m: string) => console.log(`${new Date().toISOString()} ${m}`));
  const kc = new k8s.KubeConfig();
  if (cfg.kubeconfigPath) kc.loadFromFile(cfg.kubeconfigPath);
  else kc.loadFromDefault();
  const identity = cfg.identity ?? `${hostname()}-${randomBytes(3).toString('hex')}`;
  const client = await createKubeClient(kc, { userAgent: `crema-operator/${identity}` });
  const metrics = new OperatorMetrics();
  metrics.trackApiRequests(client.requestCounts);
  // Controllers and events write through a fenced client: no write without a valid lease.
  // (The manager itself reads, watches and renews the lease with the plain one.)
  let fence: () => boolean = () => false;
  const writer = fenceWrites(client, () => fence());
  const events = createEventRecorder(writer, { instance: identity, log });
  const manager = new Manager({
    client,
    metrics,
    ...(cfg.namespace ? { namespace: cfg.namespace } : {}),
    ...(cfg.leaderElection === false
      ? {}
      : {
          leaderElection: {
            namespace: cfg.leaseNamespace ?? 'default',
            name: 'crema-operator',
            identity,
            ...(cfg.leaseDurationMs
              ? {
                  leaseDurationMs: cfg.leaseDurationMs,
                  renewDeadlineMs: Math.round(cfg.leaseDurationMs * 0.66),
                  retryPeriodMs: Math.max(200, Math.round(cfg.leaseDurationMs / 7)),
                }
              : {}),
          },
        }),
    concurrency: cfg.concurrency ?? 4,
    resyncMs: cfg.resyncMs ?? 600_000,
    log,
    ...(cfg.onLostLeadership ? { onLostLeadership: cfg.onLostLeadership } : {}),
  });
  fence = () => manager.mayWrite();
  const driftAlertTtlMs = cfg.driftAlertTtlMs ?? DEFAULT_DRIFT_ALERT_TTL_MS;
  const prometheus = cfg.prometheusUrl
    ? createPrometheusClient(cfg.prometheusUrl, { timeoutMs: 10_000 })
    : undefined;
  const analyzer: CanaryAnalyzer | undefined = prometheus && {
    async analyze({ namespace, model, stableSha, canarySha }) {
      const a = model.spec.rollout?.analysis;
      const result = await analyzeCanary(prometheus, {
        model: model.metadata!.name!,
        namespace,
        stableSha,
        canarySha,
        window: a?.interval ?? '1m',
        analysis: a,
        ...(model.spec.drift?.features ? { driftFeatures: model.spec.drift.features } : {}),
      });
      return { verdict: result.verdict, message: result.message, at: result.at };
    },
  };
  // Drift alert state lives in ConfigMaps (ADR 0004), read from the controller's ConfigMap
  // informer (managed-by label): the leader sees what any replica's webhook recorded.
  const configMaps = manager.informers.for<KubeObject & { data?: Record<string, string> }>(
    RESOURCES.configMap,
    Object.entries(MANAGED_BY)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
  );
  const driftAlerts = new ClusterDriftAlerts(
    (namespace) => configMaps.get(namespace, DRIFT_ALERTS_CONFIGMAP),
    () => new Date(),
  );
  configMaps.on((event, obj) => {
    for (const key of driftAlerts.keysFor(event, obj)) manager.enqueue('recommendermodel', key);
  });
  manager.add(
    recommenderModelController({
      client: writer,
      events,
      metrics,
      now: () => new Date(),
      log,
      desiredCache: new DesiredCache(),
      driftAlerts,
      ...(analyzer ? { analyzer } : {}),
      servingDefaults: { ...(cfg.servingRedisUrl ? { redisUrl: cfg.servingRedisUrl } : {}) },
    }),
  );
  manager.add(
    storeRegionController({
      client: writer,
      metrics,
      now: cfg.regionClock ?? (() => new Date()),
      log,
      informers: manager.informers,
      ...(cfg.regionSchedule ? { schedule: cfg.regionSchedule } : {}),
    }),
  );
  manager.add(
    experimentController(
      {
        client: writer,
        events,
        metrics,
        now: () => new Date(),
        log,
        analyze: analyzeExperiment,
        ...(prometheus ? { prometheus } : {}),
        ...(cfg.experiments?.lookIntervalMs ? { lookIntervalMs: cfg.experiments.lookIntervalMs } : {}),
        ...(cfg.experiments?.guardrailWindow ? { guardrailWindow: cfg.experiments.guardrailWindow } : {}),
      },
      () => manager.informers,
    ),
  );
  // After add: the controller created the primary's informer (with its resync).
  const models = manager.informers.for(RESOURCES.recommenderModel);
  const webhook = cfg.alertWebhook
    ? await startAlertWebhook({
        port: cfg.alertWebhook.port,
        ...(cfg.alertWebhook.host ? { host: cfg.alertWebhook.host } : {}),
        bearerToken: cfg.alertWebhook.bearerToken,
        // Answered (200) only once the alert is in the cluster; a failed write answers 500 and
        // Alertmanager retries. Any replica records; the leader acts through its informer.
        onAlert: async (alert) => {
          const what = `${alert.alertname} ${alert.status} for ${alert.namespace}/${alert.model} revision ${alert.revision.slice(0, 12)} (${alert.variant ?? '?'})`;
          log(`drift alert ${what}`);
          if (!manager.synced) throw new Error('caches not synced yet: retry');
          const skip = checkRecordable(alert, !!models.get(alert.namespace, alert.model));
          if (skip) {
            log(`ignored drift alert ${what}: ${skip}`);
            return 'ignored';
          }
          await patchDriftAlert(client, alert, { now: new Date(), ttlMs: driftAlertTtlMs });
        },
      })
    : undefined;
  const health = await startHealthServer({
    port: cfg.healthPort ?? 8081,
    ...(cfg.healthHost ? { host: cfg.healthHost } : {}),
    registry: metrics.registry,
    live: () => true,
    ready: () =>
      manager.synced
        ? { ok: true, reason: manager.isLeader ? 'leader' : 'standby' }
        : { ok: false, reason: 'caches not synced' },
  });
  const addr = health.address();
  const healthPort = typeof addr === 'object' && addr ? addr.port : 0;
  await manager.start();
  const pruning = startDriftAlertPruning({
    client: writer,
    configMaps: () => configMaps.list().filter((cm) => cm.metadata?.name === DRIFT_ALERTS_CONFIGMAP),
    mayWrite: () => manager.mayWrite(),
    now: () => new Date(),
    intervalMs: Math.max(500, Math.min(30_000, Math.round(driftAlertTtlMs / 4))),
    log,
  });
  log(`crema-operator ${identity} running (health and metrics on :${healthPort})`);
  let stopping: Promise<void> | undefined;
  return {
    manager,
    client,
    metrics,
    health,
    healthPort,
    identity,
    ...(webhook ? { alertWebhookPort: webhook.port } : {}),
    stop() {
      stopping ??= (async () => {
        await webhook?.close();
        await pruning.stop();
        await manager.stop();
        await new Promise<void>((r) => health.close(() => r()));
        client.close();
      })();
      return stopping;
    },
  };
}
