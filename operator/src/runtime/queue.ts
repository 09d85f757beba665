/**
 * A work queue keyed by `kind/namespace/name`: a key is queued at most once, never processed
 * by two workers at once (an add during processing marks it dirty and re-queues it after), and
 * failures are retried with per-key exponential backoff. Same contract as client-go's
 * rate-limiting workqueue, small enough to read in one sitting.
 */

export interface WorkQueueOptions {
  /** First retry delay after a failure, ms. Default 100. */
  readonly baseDelayMs?: number;
  /** Largest retry delay, ms. Default 60 000. */
  readonly maxDelayMs?: number;
  /** Called whenever the depth changes (for a gauge). */
  readonly onDepth?: (depth: number) => void;
}

/** What a worker tells the queue about one key. */
export type WorkResult =
  | { readonly kind: 'done' }
  | { readonly kind: 'requeueAfter'; readonly ms: number }
  | { readonly kind: 'error'; readonly error: unknown };

export class WorkQueue {
  private readonly queued: string[] = [];
  private readonly queuedSet = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, { timer: NodeJS.Timeout; due: number }>();
  private waiters: Array<() => void> = [];
  private shuttingDown = false;

  constructor(private readonly opts: WorkQueueOptions = {}) {}

  /** Keys waiting (not counting those being processed). */
  get depth(): number {
    return this.queued.length;
  }

  /** Number of consecutive failures recorded for `key`. */
  failuresOf(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Queues `key` now (no-op if already queued; deferred if being processed). */
  add(key: string): void {
    if (this.shuttingDown) return;
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queuedSet.has(key)) return;
    this.queuedSet.add(key);
    this.queued.push(key);
    this.opts.onDepth?.(this.queued.length);
    this.waiters.shift()?.();
  }

  /**
   * Queues `key` after `ms`; of two pending delayed adds for a key the sooner wins (a wake-up
   * days away, e.g. the next freeze window, must not delay a canary step due in a second).
   */
  addAfter(key: string, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) return this.add(key);
    const due = Date.now() + ms;
    const existing = this.timers.get(key);
    if (existing && existing.due <= due) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    timer.unref();
    this.timers.set(key, { timer, due });
  }

  /** Queues `key` after its backoff delay: base * 2^(failures-1), capped. */
  addRateLimited(key: string): number {
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n);
    const delay = Math.min((this.opts.baseDelayMs ?? 100) * 2 ** (n - 1), this.opts.maxDelayMs ?? 60_000);
    this.addAfter(key, delay);
    return delay;
  }

  /** Clears the failure count of `key` (after a success). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  private async next(): Promise<string | undefined> {
    for (;;) {
      if (this.shuttingDown) return undefined;
      const key = this.queued.shift();
      if (key !== undefined) {
        this.queuedSet.delete(key);
        this.processing.add(key);
        this.opts.onDepth?.(this.queued.length);
        return key;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  private done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.delete(key)) this.add(key);
  }

  /**
   * Runs `concurrency` workers until shutdown. Each key's result decides what happens next:
   * done → forget failures; requeueAfter → queue again later; error → backoff retry.
   */
  async run(concurrency: number, worker: (key: string) => Promise<WorkResult>): Promise<void> {
    const loop = async () => {
      for (;;) {
        const key = await this.next();
        if (key === undefined) return;
        let result: WorkResult;
        try {
          result = await worker(key);
        } catch (error) {
          result = { kind: 'error', error };
        }
        this.done(key);
        if (result.kind === 'done') this.forget(key);
        else if (result.kind === 'requeueAfter') {
          this.forget(key);
          this.addAfter(key, result.ms);
        } else this.addRateLimited(key);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, loop));
  }

  /** Stops handing out keys; in-flight work finishes (await `run`'s promise for that). */
  shutdown(): void {
    this.shuttingDown = true;
    for (const t of this.timers.values()) clearTimeout(t.timer);
    this.timers.clear();
    for (const w of this.waiters.splice(0)) w();
  }
}
