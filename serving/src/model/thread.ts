/**
 * One inference thread per serving process, when CREMA_INFERENCE_THREAD=1 (inference runs inline
 * by default). The main thread writes each batch's rows into a SharedArrayBuffer and posts a
 * small message; onnxruntime runs on the worker while the event loop keeps parsing requests,
 * reading Redis and writing answers. The messages cost more CPU than they take off the loop:
 * bench:serving-ab measured 168–189 CPU µs per request on the thread against 137–154 inline, and
 * 0.72–0.84x the throughput on one core (docs/serving.md).
 *
 * If the worker dies, the runs it held reject (the batcher then answers those requests on the
 * calling thread), runs are refused for RESTART_BACKOFF_MS, and the next run after that starts
 * a new worker and reopens every session from the bytes kept here.
 */
import { Worker } from 'node:worker_threads';

/** Messages to the worker. */
export type ThreadRequest =
  | { type: 'open'; session: number; bytes: Uint8Array; input: string; output: string }
  | { type: 'close'; session: number }
  | { type: 'exit' }
  | { type: 'run'; id: number; session: number; data: Float32Array; rows: number; columns: number };

/** Messages from the worker. */
export type ThreadReply = { id: number; scores: Float32Array } | { id: number; error: string };

/** How long after a worker died runs stay inline before a new worker is started. */
const RESTART_BACKOFF_MS = 2000;
/** How long stop() waits for the worker to end by itself before terminating it. */
const STOP_TIMEOUT_MS = 2000;

interface Open {
  readonly bytes: Uint8Array;
  readonly input: string;
  readonly output: string;
}

export class InferenceThread {
  private worker: Worker | undefined;
  private nextSession = 1;
  private nextRun = 1;
  private readonly open = new Map<number, Open>();
  private readonly waiting = new Map<
    number,
    { worker: Worker; resolve: (s: Float32Array) => void; reject: (e: Error) => void }
  >();
  /** Workers started so far (1 after the first run; more after crashes). */
  starts = 0;
  private lastLoss = -Infinity;
  private lastLossReason = '';
  private stopping = false;
  /** Called when the worker dies (not when stopped); serving logs it. */
  onLoss: ((why: string) => void) | undefined;

  /** Opens a session on the thread; returns its handle. */
  openSession(bytes: Uint8Array, input: string, output: string): number {
    const session = this.nextSession++;
    const o = { bytes, input, output };
    this.open.set(session, o);
    // The worker starts with the first session (it takes ~0.2 s), not on the first request.
    if (this.worker) this.worker.postMessage({ type: 'open', session, ...o } satisfies ThreadRequest);
    else this.start();
    return session;
  }

  closeSession(session: number): void {
    if (!this.open.delete(session)) return;
    this.worker?.postMessage({ type: 'close', session } satisfies ThreadRequest);
    if (this.open.size === 0) void this.stop();
  }

  /** Scores `rows` rows of `data` (a view of a SharedArrayBuffer) on the thread. */
  run(session: number, data: Float32Array, rows: number, columns: number): Promise<Float32Array> {
    if (!this.open.has(session))
      return Promise.reject(new Error(`inference thread: session ${session} is closed`));
    // A worker that just died is not restarted for every batch: for a few seconds the batcher
    // runs inline (its fallback for a failed remote run).
    if (!this.worker && performance.now() - this.lastLoss < RESTART_BACKOFF_MS) {
      return Promise.reject(new Error(`inference thread down: ${this.lastLossReason}`));
    }
    const w = this.worker ?? this.start();
    const id = this.nextRun++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { worker: w, resolve, reject });
      w.postMessage({ type: 'run', id, session, data, rows, columns } satisfies ThreadRequest);
    });
  }

  /** Stops the worker (a later run starts a new one). */
  async stop(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    this.stopping = true;
    this.worker = undefined;
    try {
      // The worker disposes its sessions and ends by itself: terminating it with onnxruntime
      // sessions alive can abort the process while the worker's environment is torn down.
      const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
      w.postMessage({ type: 'exit' } satisfies ThreadRequest);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
      });
      if (await Promise.race([exited.then(() => false), timedOut])) await w.terminate();
      clearTimeout(timer);
    } finally {
      this.stopping = false;
    }
  }

  /** Test hook: kills the worker as a crash would. */
  async crashForTest(): Promise<void> {
    await this.worker?.terminate();
  }

  private start(): Worker {
    // Compiled, the worker is a JS file. Under tsx or vitest this module is TypeScript and so is
    // the worker, which a worker thread cannot load by itself on Node 20 (loader hooks are not
    // inherited), so a two-line bootstrap imports it through tsx's tsImport (a devDependency).
    const ts = import.meta.url.endsWith('.ts');
    const entry = new URL(ts ? './inference-worker.ts' : './inference-worker.js', import.meta.url);
    const w = ts
      ? new Worker(
          `const { workerData } = require('node:worker_threads');
           import('tsx/esm/api').then((tsx) => tsx.tsImport(workerData.entry, workerData.entry));`,
          { eval: true, workerData: { entry: entry.href } },
        )
      : new Worker(entry);
    this.starts++;
    // Idle, it must not keep the process alive; serving's server keeps the loop busy anyway.
    w.unref();
    w.on('message', (m: ThreadReply) => {
      const p = this.waiting.get(m.id);
      if (!p) return;
      this.waiting.delete(m.id);
      if ('error' in m) p.reject(new Error(m.error));
      else p.resolve(m.scores);
    });
    const lost = (why: string) => {
      if (this.worker === w) {
        this.worker = undefined;
        if (!this.stopping) {
          this.lastLoss = performance.now();
          this.lastLossReason = why;
          this.onLoss?.(why);
        }
      }
      const err = new Error(`inference thread ${why}`);
      for (const [id, p] of this.waiting) {
        if (p.worker !== w) continue;
        this.waiting.delete(id);
        p.reject(err);
      }
    };
    w.on('error', (err) => lost(`failed: ${err.message}`));
    w.on('exit', (code) => lost(`exited with code ${code}`));
    for (const [session, o] of this.open)
      w.postMessage({ type: 'open', session, ...o } satisfies ThreadRequest);
    this.worker = w;
    return w;
  }
}

/** The process's inference thread. */
export const inferenceThread = new InferenceThread();
