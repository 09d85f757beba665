/**
 * Leader election on a coordination.k8s.io/v1 Lease, like client-go's leaderelection: the
 * holder renews every `retryPeriod`; a candidate takes over only after it has seen the same
 * lease record unchanged for `leaseDuration` (its own clock, so clock skew between machines
 * does not matter); updates carry the resourceVersion, so two candidates racing for an
 * expired lease cannot both win (the loser gets 409 Conflict). Release on shutdown clears
 * the holder so a standby takes over at once.
 *
 * Fencing: `holdsLease` is true only until `renewDeadline` after the start of the last
 * successful acquire or renew, measured on a monotonic clock. A replica frozen past that
 * (SIGSTOP, a long GC pause, a stalled VM) finds it false the moment it runs again, before any
 * timer or callback of its own can write: a standby may already lead.
 */
import { KubeApiError, RESOURCES, apiVersionOf, resourcePath, type KubeClient } from './kube.js';

export interface LeaderElectorOptions {
  readonly namespace: string;
  readonly name: string;
  /** Unique per replica (pod name + random suffix). */
  readonly identity: string;
  readonly leaseDurationMs?: number; // default 15 000
  readonly renewDeadlineMs?: number; // default 10 000
  readonly retryPeriodMs?: number; // default 2 000
  readonly now?: () => Date;
  /** Monotonic milliseconds (default performance.now): never jumps with the wall clock. */
  readonly monotonicMs?: () => number;
  readonly log?: (msg: string) => void;
}

interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string | null;
    renewTime?: string | null;
    leaseTransitions?: number;
  };
}

function microTime(d: Date): string {
  // Lease times are MicroTime: RFC 3339 with microseconds.
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class LeaderElector {
  private leading = false;
  private observedRecord = '';
  private observedAt = 0;
  private stopped = false;
  private wake: (() => void) | undefined;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly now: () => Date;
  private readonly monotonicMs: () => number;
  /** Monotonic time until which this replica may act as leader. */
  private validUntil = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: LeaderElectorOptions,
  ) {
    this.leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    this.renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    this.now = opts.now ?? (() => new Date());
    this.monotonicMs = opts.monotonicMs ?? (() => performance.now());
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Whether this replica may write now: it leads and its last successful acquire or renew
   * started less than `renewDeadline` ago (monotonic clock). Others take over only after seeing
   * the lease unchanged for `leaseDuration`, which is longer.
   */
  holdsLease(): boolean {
    return this.leading && this.monotonicMs() < this.validUntil;
  }

  private path(name?: string): string {
    return resourcePath(RESOURCES.lease, this.opts.namespace, name);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(r, ms);
      this.wake = () => {
        clearTimeout(t);
        r();
      };
    });
  }

  /** One attempt to acquire or renew; true when we hold the lease afterwards. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const ok = await this.acquireOrRenew(this.monotonicMs());
    return ok;
  }

  private async acquireOrRenew(startedAt: number): Promise<boolean> {
    const held = () => {
      this.validUntil = startedAt + this.renewDeadlineMs;
      return true;
    };
    const now = this.now();
    const desired = {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      renewTime: microTime(now),
    };
    let lease: Lease;
    try {
      lease = await this.client.request<Lease>('GET', this.path(this.opts.name));
    } catch (err) {
      if (!(err instanceof KubeApiError && err.notFound)) throw err;
      try {
        await this.client.request('POST', this.path(), {
          body: {
            apiVersion: apiVersionOf(RESOURCES.lease),
            kind: 'Lease',
            metadata: { name: this.opts.name, namespace: this.opts.namespace },
            spec: { ...desired, acquireTime: microTime(now), leaseTransitions: 0 },
          },
        });
        return held();
      } catch (e) {
        if (e instanceof KubeApiError && (e.conflict || e.status === 409)) return false;
        throw e;
      }
    }
    // A read that took a renew deadline or more to come back (the process was frozen or the
    // server stalled) may be stale: another replica may hold the lease by now. No write on it.
    if (this.monotonicMs() - startedAt >= this.renewDeadlineMs) return false;
    const record = `${lease.spec.holderIdentity ?? ''}|${lease.spec.renewTime ?? ''}`;
    if (record !== this.observedRecord) {
      this.observedRecord = record;
      this.observedAt = now.getTime();
    }
    const holder = lease.spec.holderIdentity ?? '';
    const iHold = holder === this.opts.identity;
    const expired =
      holder === '' || now.getTime() - this.observedAt > (lease.spec.leaseDurationSeconds ?? 15) * 1000;
    if (!iHold && !expired) return false;
    const spec = {
      ...lease.spec,
      ...desired,
      ...(iHold
        ? {}
        : { acquireTime: microTime(now), leaseTransitions: (lease.spec.leaseTransitions ?? 0) + 1 }),
    };
    try {
      await this.client.request('PUT', this.path(this.opts.name), { body: { ...lease, spec } });
      this.observedRecord = `${spec.holderIdentity}|${spec.renewTime}`;
      this.observedAt = now.getTime();
      return held();
    } catch (e) {
      if (e instanceof KubeApiError && e.conflict) return false;
      throw e;
    }
  }

  /**
   * Campaigns until elected, calls `onStartedLeading`, renews until `stop()` or until renewal
   * fails for `renewDeadline` (then calls `onStoppedLeading`; the caller should exit, as a
   * replica that lost the lease may no longer act).
   */
  async run(onStartedLeading: () => void, onStoppedLeading: (reason: string) => void): Promise<void> {
    while (!this.stopped && !this.leading) {
      try {
        if (await this.tryAcquireOrRenew()) {
          this.leading = true;
          break;
        }
      } catch (err) {
        this.opts.log?.(`leader election: ${String(err)}`);
      }
      await this.sleep(this.retryPeriodMs);
    }
    if (this.stopped) return;
    this.opts.log?.(`became leader as ${this.opts.identity}`);
    onStartedLeading();
    while (!this.stopped) {
      await this.sleep(this.retryPeriodMs);
      if (this.stopped) break;
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
      } catch (err) {
        this.opts.log?.(`lease renewal failed: ${String(err)}`);
      }
      if (!ok && this.monotonicMs() >= this.validUntil) {
        this.leading = false;
        onStoppedLeading('lease renewal deadline exceeded');
        return;
      }
    }
  }

  /** Stops campaigning/renewing and, if leading, releases the lease so a standby takes over now. */
  async release(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    if (!this.leading) return;
    this.leading = false;
    try {
      // Short timeouts: on shutdown the API server may be going away too.
      const lease = await this.client.request<Lease>('GET', this.path(this.opts.name), { timeoutMs: 3000 });
      if (lease.spec.holderIdentity !== this.opts.identity) return;
      await this.client.request('PUT', this.path(this.opts.name), {
        timeoutMs: 3000,
        body: {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: '',
            leaseDurationSeconds: 1,
            renewTime: microTime(this.now()),
          },
        },
      });
    } catch (err) {
      this.opts.log?.(`releasing lease: ${String(err)}`);
    }
  }
}
