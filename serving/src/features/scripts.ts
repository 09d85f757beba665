/**
 * The event write path's script runner. The calls of one event-loop turn go out together
 * (evalScripts: one pipeline per node); with `durability.replicas > 0` each pipeline ends with
 * one WAIT, so every write in it is answered only once that many replicas have it (a group
 * commit). Only one batch is out at a time then: WAIT blocks its connection until the replicas
 * answer or the timeout passes, and calls arriving meanwhile go together in the next batch
 * instead of each queueing its own WAIT behind the blocked one. That connection should be the
 * runner's own, so a slow replica never delays feature reads.
 */
import {
  evalScripts,
  ReplicaAckError,
  type Durability,
  type RedisClient,
  type ScriptCall,
} from '../../../contracts/redis.js';

/** Runs one script call; rejects with the call's error (ReplicaAckError when not confirmed). */
export interface ScriptRunner {
  run(call: ScriptCall): Promise<unknown>;
}

interface Waiter {
  readonly call: ScriptCall;
  readonly resolve: (v: unknown) => void;
  readonly reject: (err: Error) => void;
}

/** Sends calls, answering each call's reply or Error in order: evalScripts bound to a client. */
export type SendScripts = (calls: readonly ScriptCall[]) => Promise<(unknown | Error)[]>;

/** Options of ScriptBatcher. */
export interface ScriptBatcherOptions {
  /** Only one batch out at a time; calls arriving meanwhile form the next (with WAIT). Default false. */
  readonly oneAtATime?: boolean;
  /** Calls per batch at most. Default 512. */
  readonly maxCalls?: number;
  /**
   * After a batch whose writes no replica confirmed, refuse new calls at once for this long
   * (ReplicasUnavailableError, nothing sent) instead of letting each wait out its WAIT; then one
   * batch probes again. 0 = never. Default 0.
   */
  readonly pauseAfterUnconfirmedMs?: number;
  readonly now?: () => number;
}

/** Not sent: the last batch's writes were confirmed by no replica, and the pause has not passed. */
export class ReplicasUnavailableError extends Error {
  override readonly name = 'ReplicasUnavailableError';
  constructor(retryInMs: number) {
    super(`no replica confirmed the last writes; not attempted (next try in ${Math.ceil(retryInMs)} ms)`);
  }
}

export class ScriptBatcher implements ScriptRunner {
  private pending: Waiter[] = [];
  private inFlight = 0;
  private scheduled = false;
  private readonly oneAtATime: boolean;
  private readonly maxCalls: number;
  private readonly pauseMs: number;
  private readonly now: () => number;
  private pausedUntil = 0;

  constructor(
    private readonly send: SendScripts,
    opts: ScriptBatcherOptions = {},
  ) {
    this.oneAtATime = opts.oneAtATime ?? false;
    this.maxCalls = opts.maxCalls ?? 512;
    this.pauseMs = opts.pauseAfterUnconfirmedMs ?? 0;
    this.now = opts.now ?? (() => performance.now());
    if (!(this.maxCalls >= 1)) throw new RangeError('ScriptBatcher: maxCalls must be >= 1');
    if (!(this.pauseMs >= 0)) throw new RangeError('ScriptBatcher: pauseAfterUnconfirmedMs must be >= 0');
  }

  /** Runs on `redis`, confirmed by `durability.replicas` replicas (one batch out at a time then). */
  static forClient(
    redis: RedisClient,
    durability: Durability = { replicas: 0, timeoutMs: 0 },
  ): ScriptBatcher {
    if (!(Number.isInteger(durability.replicas) && durability.replicas >= 0))
      throw new RangeError('event durability: replicas must be an integer >= 0');
    if (durability.replicas > 0 && !(durability.timeoutMs >= 1))
      throw new RangeError('event durability: timeoutMs must be >= 1 when replicas are required');
    return new ScriptBatcher((calls) => evalScripts(redis, calls, durability), {
      oneAtATime: durability.replicas > 0,
      // A primary without a replica (between a failover and the failed node's return) would
      // make every event wait out its WAIT; answer them 503 at once instead, probing every
      // 2 x timeout (200 ms by default), so writes resume soon after a replica is back.
      pauseAfterUnconfirmedMs: durability.replicas > 0 ? Math.max(200, 2 * durability.timeoutMs) : 0,
    });
  }

  run(call: ScriptCall): Promise<unknown> {
    const wait = this.pausedUntil - this.now();
    if (wait > 0) return Promise.reject(new ReplicasUnavailableError(wait));
    return new Promise((resolve, reject) => {
      this.pending.push({ call, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.pending.length === 0) return;
    if (this.oneAtATime && this.inFlight > 0) return; // sent when the batch out returns
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.oneAtATime && this.inFlight > 0) return;
    const batch = this.pending.splice(0, this.maxCalls);
    if (batch.length === 0) return;
    this.inFlight++;
    this.schedule(); // the rest of a turn larger than maxCalls (not while one batch is out)
    let sent: Promise<(unknown | Error)[]>;
    try {
      sent = this.send(batch.map((w) => w.call));
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent
      .then(
        (results) => {
          if (this.pauseMs > 0 && results.some((r) => r instanceof ReplicaAckError && r.confirmed === 0)) {
            // Calls waiting for the next batch would meet the same missing replica.
            this.pausedUntil = this.now() + this.pauseMs;
            const waiting = this.pending.splice(0);
            for (const w of waiting) w.reject(new ReplicasUnavailableError(this.pauseMs));
          }
          batch.forEach((w, i) => {
            const r = results[i];
            if (r instanceof Error) w.reject(r);
            else w.resolve(r);
          });
        },
        (err: unknown) => {
          const e = err instanceof Error ? err : new Error(String(err));
          for (const w of batch) w.reject(e);
        },
      )
      .finally(() => {
        this.inFlight--;
        this.schedule();
      });
  }
}
