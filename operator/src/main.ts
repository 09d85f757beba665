/**
 * crema-operator entry point: configuration from the environment, then `startOperator`.
 * SIGTERM/SIGINT: finish in-flight reconciles, release the lease, exit 0.
 *
 *   KUBECONFIG                 kubeconfig path (default ~/.kube/config, else in-cluster)
 *   CREMA_NAMESPACE            watch one namespace (default: all)
 *   CREMA_HEALTH_PORT          /healthz /readyz /metrics port (default 8081)
 *   CREMA_LEADER_ELECTION      "false" to disable (single replica only)
 *   CREMA_LEASE_NAMESPACE      namespace of the Lease (default: POD_NAMESPACE or "default")
 *   CREMA_LEASE_DURATION_MS    lease duration (default 15000)
 *   CREMA_CONCURRENCY          reconcile workers (default 4)
 *   CREMA_RESYNC_MS            re-check every object this often (default 600000)
 *   CREMA_PROMETHEUS_URL       Prometheus for canary analysis (without it analysed steps wait)
 *   CREMA_ALERT_WEBHOOK_PORT   Alertmanager webhook port (default off); needs CREMA_ALERT_WEBHOOK_TOKEN
 *   CREMA_ALERT_WEBHOOK_HOST   address the webhook listens on (default 0.0.0.0: reachable in-cluster)
 *   CREMA_ALERT_WEBHOOK_TOKEN  bearer token Alertmanager must send
 *   CREMA_DRIFT_ALERT_TTL_MS   a recorded drift alert counts this long after its last notification (default 600000)
 *   CREMA_SERVING_REDIS_URL    Redis for serving pods of models without spec.serving.redisUrl
 *   CREMA_REGION_LEAD_TIME_MS  StoreRegion floors rise this long before a window (default 120000)
 *   CREMA_REGION_STEP_DOWN_MS  ... and step down over this long after it, in 3 steps (default 900000)
 *   CREMA_IDENTITY             leader-election identity (default: hostname + random suffix)
 */
import {
  DEFAULT_LEAD_MS,
  DEFAULT_STEP_DOWN_MS,
  DEFAULT_STEP_DOWN_STEPS,
} from './controllers/storeregion/schedule.js';
import { startOperator } from './operator.js';

const env = process.env;
const num = (v: string | undefined) => (v ? Number(v) : undefined);

function webhookConfig(): { port: number; host: string; bearerToken: string } {
  const token = env['CREMA_ALERT_WEBHOOK_TOKEN'];
  if (!token) {
    console.error(
      'CREMA_ALERT_WEBHOOK_PORT is set but CREMA_ALERT_WEBHOOK_TOKEN is empty: refusing an unauthenticated webhook',
    );
    process.exit(2);
  }
  return {
    port: Number(env['CREMA_ALERT_WEBHOOK_PORT']),
    host: env['CREMA_ALERT_WEBHOOK_HOST'] || '0.0.0.0',
    bearerToken: token,
  };
}

const op = await startOperator({
  ...(env['KUBECONFIG'] ? { kubeconfigPath: env['KUBECONFIG'] } : {}),
  ...(env['CREMA_NAMESPACE'] ? { namespace: env['CREMA_NAMESPACE'] } : {}),
  healthPort: num(env['CREMA_HEALTH_PORT']) ?? 8081,
  leaderElection: env['CREMA_LEADER_ELECTION'] !== 'false',
  leaseNamespace: env['CREMA_LEASE_NAMESPACE'] ?? env['POD_NAMESPACE'] ?? 'default',
  ...(num(env['CREMA_LEASE_DURATION_MS']) ? { leaseDurationMs: num(env['CREMA_LEASE_DURATION_MS'])! } : {}),
  concurrency: num(env['CREMA_CONCURRENCY']) ?? 4,
  ...(num(env['CREMA_RESYNC_MS']) ? { resyncMs: num(env['CREMA_RESYNC_MS'])! } : {}),
  ...(env['CREMA_PROMETHEUS_URL'] ? { prometheusUrl: env['CREMA_PROMETHEUS_URL'] } : {}),
  ...(env['CREMA_ALERT_WEBHOOK_PORT'] ? { alertWebhook: webhookConfig() } : {}),
  ...(num(env['CREMA_DRIFT_ALERT_TTL_MS']) ? { driftAlertTtlMs: num(env['CREMA_DRIFT_ALERT_TTL_MS'])! } : {}),
  ...(env['CREMA_IDENTITY'] ? { identity: env['CREMA_IDENTITY'] } : {}),
  ...(env['CREMA_SERVING_REDIS_URL'] ? { servingRedisUrl: env['CREMA_SERVING_REDIS_URL'] } : {}),
  ...(env['CREMA_REGION_LEAD_TIME_MS'] || env['CREMA_REGION_STEP_DOWN_MS']
    ? {
        regionSchedule: {
          leadMs: num(env['CREMA_REGION_LEAD_TIME_MS']) ?? DEFAULT_LEAD_MS,
          stepDownMs: num(env['CREMA_REGION_STEP_DOWN_MS']) ?? DEFAULT_STEP_DOWN_MS,
          stepDownSteps: DEFAULT_STEP_DOWN_STEPS,
        },
      }
    : {}),
});

let exiting = false;
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    if (exiting) return;
    exiting = true;
    console.log(`${sig}: finishing in-flight reconciles and releasing the lease`);
    op.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  });
}
