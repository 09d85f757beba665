/**
 * Firing drift alerts received from Alertmanager, kept in memory per model revision. Alerts
 * are re-sent while they fire (repeat interval), so an entry expires after `ttlMs` without a
 * refresh; a restarted operator learns them again on Alertmanager's next notification.
 */
import type { DriftAlerts } from '../controllers/recommendermodel/reconcile.js';
import type { DriftAlert } from '../webhooks/alertmanager.js';

export class DriftAlertStore implements DriftAlerts {
  private readonly byRevision = new Map<string, { message: string; until: number }>();

  constructor(
    private readonly ttlMs = 10 * 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a firing alert; returns the model key (`namespace/name`) to reconcile. */
  record(alert: DriftAlert): string {
    const what = alert.feature ? `feature ${alert.feature}` : 'model inputs';
    const value = alert.value !== undefined ? ` PSI ${alert.value.toFixed(3)}` : '';
    const summary = alert.annotations['summary'] ?? `${alert.alertname} on ${what}${value}`;
    this.byRevision.set(`${alert.namespace}/${alert.model}/${alert.revision}`, {
      message: `${alert.alertname} (${alert.variant ?? 'unknown'} revision ${alert.revision.slice(0, 12)}): ${summary}`,
      until: this.now() + this.ttlMs,
    });
    return `${alert.namespace}/${alert.model}`;
  }

  firing(namespace: string, name: string, sha: string): { message: string } | undefined {
    const e = this.byRevision.get(`${namespace}/${name}/${sha}`);
    if (!e) return undefined;
    if (e.until < this.now()) {
      this.byRevision.delete(`${namespace}/${name}/${sha}`);
      return undefined;
    }
    return { message: e.message };
  }
}
