/**
 * The admission decisions of the protection plugin, as small pure classes with an injected
 * clock (ADR 0007):
 *
 * - `ConcurrencyLimit`: how many requests may be in the works at once, adapted to measured
 *   latency (AIMD, as Netflix concurrency-limits' AIMDLimit and TCP congestion control): while
 *   the admitted requests of a window answer within the latency target (at the window's p90),
 *   the limit grows by one per window when it was used; when more than 10 % of a window is
 *   slower, it shrinks by a factor. Little's law does the rest: in-flight = throughput x
 *   latency, so a limit near throughput x target keeps admitted requests inside the target
 *   whatever the machine's speed today.
 * - `QueueDelayCheck`: CoDel (Nichols & Jacobson; as used for server queues in Facebook's
 *   "Fail at Scale"): a request that waited longer than the budget before it was read is
 *   refused, but only while there is a standing queue (every request of the last interval
 *   waited more than half the budget). One stall (a GC, a busy node, a new pod's first
 *   requests) makes no standing queue: the requests it held are served late, not refused.
 * - `QueueDelayEstimator`: how long a request waited, unread, before the event loop got to it.
 */

/** Options of ConcurrencyLimit. */
export interface ConcurrencyLimitOptions {
  /** Latency (ms, admission to answer) that at least 90 % of a window's requests must stay under. */
  readonly targetMs: number;
  /** Hard cap of the limit. */
  readonly max: number;
  /** Limit it never goes below. Default 4 (at most max). */
  readonly min?: number;
  /** Starting limit. Default 32 (between min and max). */
  readonly initial?: number;
  /** Factor applied on a slow window. Default 0.8. */
  readonly backoff?: number;
  /** A window ends after `limit` answers or this many ms (with at least one answer). Default 100. */
  readonly windowMs?: number;
}

/** An adaptive cap on requests in flight (AIMD on the latency of admitted requests). */
export class ConcurrencyLimit {
  private current: number;
  private inFlightNow = 0;
  private readonly min: number;
  private readonly max: number;
  private readonly backoff: number;
  private readonly windowMs: number;
  // The current window.
  private windowStart: number;
  private samples = 0;
  private slow = 0;
  /** Highest in-flight count seen in the window: was the limit in use? */
  private peak = 0;

  constructor(
    private readonly opts: ConcurrencyLimitOptions,
    private readonly now: () => number,
  ) {
    if (!(opts.targetMs > 0)) throw new RangeError('ConcurrencyLimit: targetMs must be > 0');
    if (!(opts.max >= 1)) throw new RangeError('ConcurrencyLimit: max must be >= 1');
    this.max = opts.max;
    this.min = Math.min(this.max, Math.max(1, opts.min ?? 4));
    this.backoff = opts.backoff ?? 0.8;
    if (!(this.backoff > 0 && this.backoff < 1))
      throw new RangeError('ConcurrencyLimit: backoff must be in (0, 1)');
    this.windowMs = opts.windowMs ?? 100;
    this.current = Math.min(this.max, Math.max(this.min, opts.initial ?? 32));
    this.windowStart = now();
  }

  /** The limit now (whole requests). */
  get limit(): number {
    return Math.floor(this.current);
  }

  get inFlight(): number {
    return this.inFlightNow;
  }

  /**
   * Admits one request (true) or refuses it (false: the limit is reached). `force` admits it
   * whatever the limit (the process is not saturated; the request is still counted in flight).
   */
  tryAcquire(force = false): boolean {
    if (!force && this.inFlightNow >= Math.floor(this.current)) {
      // Refusing means the limit is in use.
      this.peak = Math.max(this.peak, this.inFlightNow + 1);
      return false;
    }
    this.inFlightNow++;
    if (this.inFlightNow > this.peak) this.peak = this.inFlightNow;
    return true;
  }

  /**
   * An admitted request answered after `latencyMs`; `missed` when it missed its deadline (its
   * features came too late and the answer fell back): slow, whatever its latency. `saturated`:
   * whether the process is saturated now; a slow window of a process with CPU to spare comes
   * from a stall, not from the limit, and does not shrink it.
   */
  release(latencyMs: number, missed = false, saturated = true): void {
    this.inFlightNow = Math.max(0, this.inFlightNow - 1);
    this.samples++;
    if (missed || latencyMs > this.opts.targetMs) this.slow++;
    const now = this.now();
    if (this.samples < Math.max(1, Math.floor(this.current)) && now - this.windowStart < this.windowMs)
      return;
    if (this.slow > this.samples * 0.1) {
      if (saturated) this.current = Math.max(this.min, this.current * this.backoff);
    } else if (this.peak * 2 >= this.current) {
      // Grow only a limit that is used: an idle process keeps what it learned.
      this.current = Math.min(this.max, this.current + 1);
    }
    this.windowStart = now;
    this.samples = 0;
    this.slow = 0;
    this.peak = this.inFlightNow;
  }
}

/** Options of QueueDelayCheck. */
export interface QueueDelayCheckOptions {
  /** Longest wait (ms) before a request is read that is still served while a queue stands. */
  readonly maxMs: number;
  /** Window over which a standing queue is detected. Default 100 ms (CoDel's interval). */
  readonly intervalMs?: number;
}

/**
 * CoDel for requests: `shouldShed(delay)` is true when the request waited more than `maxMs`
 * while a queue stands, i.e. the smallest delay of the last complete interval was above
 * `maxMs / 2` (CoDel's target): even the luckiest request waited, so the process is not
 * keeping up and answers to old requests only add to it.
 */
export class QueueDelayCheck {
  private readonly intervalMs: number;
  private readonly target: number;
  private intervalEnd: number;
  private minDelay = Infinity;
  private standing = false;

  constructor(
    private readonly opts: QueueDelayCheckOptions,
    private readonly now: () => number,
  ) {
    if (!(opts.maxMs > 0)) throw new RangeError('QueueDelayCheck: maxMs must be > 0');
    this.intervalMs = opts.intervalMs ?? 100;
    this.target = opts.maxMs / 2;
    this.intervalEnd = now() + this.intervalMs;
  }

  /** Whether a queue stood over the last complete interval. */
  get overloaded(): boolean {
    return this.standing;
  }

  /** Records a request that waited `delayMs` before it was read; true when it should be refused. */
  shouldShed(delayMs: number): boolean {
    const now = this.now();
    if (now >= this.intervalEnd) {
      // An interval without requests had no queue: neither the one just ended nor, after a
      // quiet gap longer than an interval, the one before now.
      const gap = now >= this.intervalEnd + this.intervalMs;
      this.standing = !gap && this.minDelay !== Infinity && this.minDelay > this.target;
      this.minDelay = Infinity;
      // Intervals are counted from now: a quiet gap is one interval, not many.
      this.intervalEnd = now + this.intervalMs;
    }
    if (delayMs < this.minDelay) this.minDelay = delayMs;
    return this.standing && delayMs > this.opts.maxMs;
  }
}

/**
 * Estimates how long a request's bytes waited, unread, before the event loop read them. Node
 * does not know when bytes arrived, so this bounds it from two facts:
 *
 * - a keep-alive client sends its next request only after the previous answer on that
 *   connection, and a new connection's first request comes after it was accepted: the request
 *   arrived after the connection's last answer (or accept), `since`;
 * - bytes that arrive while the loop waits for I/O are read at once: the request arrived after
 *   the loop last waited. That moment is found from the loop's idle time
 *   (`performance.eventLoopUtilization().idle`, time spent waiting in epoll): if it grew by
 *   `d` since the previous look at `t`, the loop last waited at `t + d` or later.
 *
 * The delay is `now - max(since, lastIdle)`: exact for an eager client of a busy process,
 * small for any request of a process that keeps up, and never more than the loop's busy time.
 */
export class QueueDelayEstimator {
  private lastLook: number;
  private lastIdle: number;
  private idleSince: number;

  constructor(
    /** Monotonic ms. */
    private readonly now: () => number,
    /** Cumulative ms the loop spent waiting for I/O. */
    private readonly idleMs: () => number,
  ) {
    this.lastLook = now();
    this.lastIdle = idleMs();
    this.idleSince = this.lastLook;
  }

  /** Looks at the loop's idle time (cheap; every request may call it). */
  look(): void {
    const now = this.now();
    const idle = this.idleMs();
    const grew = idle - this.lastIdle;
    if (grew > 0) this.idleSince = Math.max(this.idleSince, Math.min(now, this.lastLook + grew));
    this.lastLook = now;
    this.lastIdle = idle;
  }

  /** Delay of a request on a connection whose last answer (or accept) was at `since` (ms, same clock). */
  delay(since: number | undefined): number {
    const from = since === undefined ? this.idleSince : Math.max(since, this.idleSince);
    return Math.max(0, this.now() - from);
  }
}

/** Cumulative CPU times (ms) of the event loop's thread: on a CPU, and runnable but waiting for one. */
export interface ThreadTimes {
  readonly runMs: number;
  readonly waitMs: number;
}

/**
 * The times of the calling thread from /proc/thread-self/schedstat (Linux with scheduler
 * statistics: "ns on a CPU, ns waiting on a run queue, time slices"); undefined elsewhere.
 * Called from the event loop, so these are the loop's own thread's times.
 */
export function readLoopThreadTimes(read: () => string): ThreadTimes | undefined {
  try {
    const [run, wait] = read().split(' ', 2).map(Number);
    if (!Number.isFinite(run) || !Number.isFinite(wait)) return undefined;
    return { runMs: run! / 1e6, waitMs: wait! / 1e6 };
  } catch {
    return undefined;
  }
}

/**
 * Whether the process is saturated: over the last two samples (500 ms when sampled every
 * 250 ms), it had no CPU to spare. Either of:
 *
 * - its event loop had no time to sleep: of the time the loop's thread was not waiting for a CPU
 *   (run queue), it ran at least `threshold` (from the kernel's scheduler times of the thread);
 * - its threads together (the loop, the inference thread and onnxruntime's, GC helpers) used at
 *   least `threshold` of the CPUs it may use (`cores`: its CPU affinity and cgroup quota). On a
 *   one-core pod the loop sleeps while inference takes the core, yet nothing is to spare.
 *
 * A process whose node is busy (its threads runnable but descheduled, or stopped) with little to
 * do sleeps most of the rest and uses little CPU, so it is not saturated, however late its
 * timers. Event loop utilization (the fallback for the first rule without scheduler times) counts
 * a callback descheduled by a neighbour as busy: on a starved node it called a mostly idle
 * process saturated.
 */
export class LoopSaturation {
  private readonly snapshots: Sample[] = [];
  private value: boolean;

  constructor(
    private readonly threshold: number,
    private readonly now: () => number,
    private readonly threadTimes: () => ThreadTimes | undefined,
    private readonly elu: () => EluSnapshot,
    /** Cumulative CPU ms of every thread of the process (process.cpuUsage()). */
    private readonly processCpuMs: () => number = () => 0,
    /** CPUs the process may use. */
    private readonly cores = Infinity,
  ) {
    this.value = threshold === 0;
    this.snapshots.push(this.take());
  }

  private take(): Sample {
    return { at: this.now(), times: this.threadTimes(), elu: this.elu(), cpu: this.processCpuMs() };
  }

  get saturated(): boolean {
    return this.value;
  }

  /** Takes a sample (every 250 ms) and decides from the oldest kept one. */
  sample(): void {
    const cur = this.take();
    const old = this.snapshots[0]!;
    const wall = cur.at - old.at;
    if (this.threshold === 0) this.value = true;
    else if (wall > 0 && (cur.cpu - old.cpu) / wall >= this.threshold * this.cores) this.value = true;
    else if (cur.times && old.times) {
      const run = cur.times.runMs - old.times.runMs;
      const wait = cur.times.waitMs - old.times.waitMs;
      const sleep = Math.max(0, wall - run - wait);
      this.value = run > 0 && run / (run + sleep) >= this.threshold;
    } else {
      const active = cur.elu.active - old.elu.active;
      const idle = cur.elu.idle - old.elu.idle;
      this.value = active + idle > 0 && active / (active + idle) >= this.threshold;
    }
    this.snapshots.push(cur);
    if (this.snapshots.length > 2) this.snapshots.shift();
  }
}

interface Sample {
  at: number;
  times: ThreadTimes | undefined;
  elu: EluSnapshot;
  cpu: number;
}

/**
 * CPUs the process may use: its affinity (`availableParallelism`), capped by its cgroup's CPU
 * quota (cgroup v2 `cpu.max` "quota period", v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`) when
 * `read` finds one.
 */
export function availableCores(affinity: number, read: (path: string) => string | undefined): number {
  let quota: number | undefined;
  const v2 = read('/sys/fs/cgroup/cpu.max')?.trim().split(/\s+/);
  if (v2 && v2[0] !== 'max' && Number(v2[0]) > 0 && Number(v2[1]) > 0) quota = Number(v2[0]) / Number(v2[1]);
  else {
    const q = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'));
    const per = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'));
    if (q > 0 && per > 0) quota = q / per;
  }
  return Math.max(0.1, quota === undefined ? affinity : Math.min(affinity, quota));
}

/** Cumulative ms of the event loop waiting for I/O (idle) and not (active). */
export interface EluSnapshot {
  readonly idle: number;
  readonly active: number;
}
