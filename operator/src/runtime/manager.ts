/**
 * Runs controllers: starts their informers (primary kind + owned kinds), maps events to work
 * queue keys, and runs reconcile workers only while this replica holds the leader lease.
 * SIGTERM (via `stop()`) stops handing out work, waits for in-flight reconciles, releases the
 * lease and closes watches.
 */
import { Informer, type InformerEvent } from './informer.js';
import type { KubeClient, KubeObject, ResourceDef } from './kube.js';
import { LeaderElector } from './leader.js';
import type { OperatorMetrics } from './metrics.js';
import { WorkQueue, type WorkResult } from './queue.js';

/** One controller: what it watches and how it reconciles one key (`namespace/name`). */
export interface ControllerDef {
  readonly name: string;
  readonly primary: ResourceDef;
  /** Kinds created by this controller; their events re-queue the owner (via ownerReferences). */
  readonly owned: readonly ResourceDef[];
  /** Label selector for owned kinds' informers. */
  readonly ownedSelector: string;
  /** Other kinds whose changes affect some primaries (e.g. StoreRegion freeze windows). */
  readonly watched?: ReadonlyArray<{
    readonly resource: ResourceDef;
    /** Only objects with these labels (e.g. the pods of the controller's workloads). */
    readonly labelSelector?: string;
    /** `event` tells a deletion apart (the object is its last state). */
    keysFor(obj: KubeObject, event: InformerEvent): string[];
  }>;
  /** Reconcile one key; the informers hold the observed state. */
  reconcile(key: string, informers: InformerSet): Promise<WorkResult>;
}

/** Informers by kind, shared by all controllers. */
export class InformerSet {
  private readonly byKind = new Map<string, Informer<KubeObject>>();
  constructor(
    private readonly client: KubeClient,
    private readonly opts: { namespace?: string; resyncMs?: number; log: (m: string) => void },
  ) {}

  /**
   * The informer for `r` (created on first use). Only primaries resync: re-emitting children
   * would just re-queue the same owners once per child kind.
   */
  for<T extends KubeObject>(r: ResourceDef, labelSelector?: string, resync = false): Informer<T> {
    let inf = this.byKind.get(r.kind);
    if (!inf) {
      inf = new Informer<KubeObject>(this.client, {
        resource: r,
        ...(this.opts.namespace ? { namespace: this.opts.namespace } : {}),
        ...(labelSelector ? { labelSelector } : {}),
        resyncMs: resync ? (this.opts.resyncMs ?? 0) : 0,
        log: this.opts.log,
      });
      this.byKind.set(r.kind, inf);
    }
    return inf as unknown as Informer<T>;
  }

  all(): Informer<KubeObject>[] {
    return [...this.byKind.values()];
  }
}

export interface ManagerOptions {
  readonly client: KubeClient;
  readonly metrics: OperatorMetrics;
  /** Watch one namespace only; default all. */
  readonly namespace?: string;
  /** Leader election; omit to run without (single replica, tests). */
  readonly leaderElection?: {
    namespace: string;
    name: string;
    identity: string;
    leaseDurationMs?: number;
    renewDeadlineMs?: number;
    retryPeriodMs?: number;
  };
  readonly concurrency?: number;
  readonly resyncMs?: number;
  readonly log?: (msg: string) => void;
  /** Called when the lease is lost; default exits the process (a non-leader must not act). */
  readonly onLostLeadership?: (reason: string) => void;
}

export class Manager {
  readonly informers: InformerSet;
  private readonly controllers: Array<{ def: ControllerDef; queue: WorkQueue }> = [];
  private elector: LeaderElector | undefined;
  private workers: Promise<void>[] = [];
  private started = false;
  private stopping = false;
  private readonly log: (m: string) => void;

  constructor(private readonly opts: ManagerOptions) {
    this.log = opts.log ?? ((m) => console.log(m));
    this.informers = new InformerSet(opts.client, {
      ...(opts.namespace ? { namespace: opts.namespace } : {}),
      ...(opts.resyncMs ? { resyncMs: opts.resyncMs } : {}),
      log: this.log,
    });
  }

  /**
   * Whether a write may be sent now: without leader election always; with it only while the
   * lease is held and valid by the monotonic clock (see `fenceWrites`).
   */
  mayWrite(): boolean {
    if (!this.opts.leaderElection) return true;
    return this.elector?.holdsLease() ?? false;
  }

  get isLeader(): boolean {
    return this.elector ? this.elector.isLeader : this.started;
  }

  /** True once every informer has listed. */
  get synced(): boolean {
    return this.informers.all().every((i) => i.hasSynced);
  }

  /** Queue depth per controller (for tests and metrics). */
  queueDepth(name: string): number {
    return this.controllers.find((c) => c.def.name === name)?.queue.depth ?? 0;
  }

  /** Queues `key` for controller `name` now (e.g. when an alert arrives). */
  enqueue(name: string, key: string): void {
    this.controllers.find((c) => c.def.name === name)?.queue.add(key);
  }

  add(def: ControllerDef): void {
    const queue = new WorkQueue({
      onDepth: (d) => this.opts.metrics.queueDepth.set({ controller: def.name }, d),
    });
    this.controllers.push({ def, queue });
    this.informers
      .for(def.primary, undefined, true)
      .on((_event, obj) => queue.add(`${obj.metadata?.namespace}/${obj.metadata?.name}`));
    for (const w of def.watched ?? []) {
      this.informers.for(w.resource, w.labelSelector).on((event, obj) => {
        for (const key of w.keysFor(obj, event)) queue.add(key);
      });
    }
    for (const owned of def.owned) {
      this.informers.for(owned, def.ownedSelector).on((_event, obj) => {
        for (const ref of obj.metadata?.ownerReferences ?? []) {
          if (ref.kind === def.primary.kind) queue.add(`${obj.metadata?.namespace}/${ref.name}`);
        }
      });
    }
  }

  /** Starts informers, then (once leader) the workers. Resolves when workers are running. */
  async start(): Promise<void> {
    await Promise.all(this.informers.all().map((i) => i.start()));
    this.log(`caches synced (${this.informers.all().length} informers)`);
    const le = this.opts.leaderElection;
    if (!le) {
      this.startWorkers();
      return;
    }
    this.elector = new LeaderElector(this.opts.client, { ...le, log: this.log });
    await new Promise<void>((resolve) => {
      void this.elector!.run(
        () => {
          this.opts.metrics.leader.set(1);
          this.startWorkers();
          resolve();
        },
        (reason) => {
          this.opts.metrics.leader.set(0);
          this.log(`lost leadership: ${reason}`);
          (this.opts.onLostLeadership ?? (() => process.exit(1)))(reason);
        },
      );
      // A standby resolves start() right away; it keeps campaigning in the background.
      resolve();
    });
  }

  private startWorkers(): void {
    if (this.started || this.stopping) return;
    this.started = true;
    for (const { def, queue } of this.controllers) {
      // Everything known gets one reconcile on becoming leader (level-triggered catch-up).
      for (const obj of this.informers.for(def.primary).list())
        queue.add(`${obj.metadata?.namespace}/${obj.metadata?.name}`);
      this.workers.push(
        queue.run(this.opts.concurrency ?? 4, async (key) => {
          const end = this.opts.metrics.reconcileDuration.startTimer({ controller: def.name });
          const result = await def
            .reconcile(key, this.informers)
            .catch((error: unknown): WorkResult => ({ kind: 'error', error }));
          end();
          const label =
            result.kind === 'error' ? 'error' : result.kind === 'requeueAfter' ? 'requeue' : 'success';
          this.opts.metrics.reconciles.inc({ controller: def.name, result: label });
          if (result.kind === 'error') {
            this.opts.metrics.reconcileErrors.inc({ controller: def.name });
            this.log(`reconcile ${def.name} ${key} failed (retrying with backoff): ${String(result.error)}`);
          }
          return result;
        }),
      );
    }
  }

  /** Graceful stop: no new work, finish in-flight reconciles, release the lease, close watches. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const { queue } of this.controllers) queue.shutdown();
    await Promise.all(this.workers);
    await this.elector?.release();
    this.opts.metrics.leader.set(0);
    await Promise.all(this.informers.all().map((i) => i.stop()));
  }
}
