/**
 * How serving runs ONNX graphs: a synchronous session on onnxruntime-node's native binding,
 * and a batcher that turns the inferences requested in one event-loop turn into one run.
 *
 * Why not `ort.InferenceSession.run`: the public API defers every run to a `setImmediate`,
 * validates and re-wraps feeds and outputs, and at serving load that hop costs more CPU than
 * the inference itself (bench/serving: 150 → 116 µs per request with the binding). The binding
 * (`onnxruntime-node/dist/binding.js`, typed in its `binding.d.ts`) is what the public API
 * calls; `NativeSession.open` checks its shape at first use and fails loudly if an upgrade
 * changes it.
 *
 * Why batch: onnxruntime has a fixed cost per run (~7 µs) and the weights are re-read from
 * cache on each; concurrent requests that reach inference in the same turn (their Redis
 * replies arrive in one read) share one run. docs/serving.md has the numbers.
 */
import { createRequire } from 'node:module';
import * as ort from 'onnxruntime-node';
import type { Binding } from 'onnxruntime-node/dist/binding.js';

interface BindingModule {
  binding: { InferenceSession: Binding.InferenceSessionConstructor };
  initOrt: () => void;
}

let bindingModule: BindingModule | undefined;

function nativeBinding(): BindingModule {
  if (bindingModule) return bindingModule;
  const mod = createRequire(import.meta.url)('onnxruntime-node/dist/binding.js') as Partial<BindingModule>;
  if (typeof mod.initOrt !== 'function' || typeof mod.binding?.InferenceSession !== 'function') {
    throw new Error(
      'onnxruntime-node/dist/binding.js does not export initOrt and binding.InferenceSession; ' +
        'this onnxruntime-node version is not supported by serving/src/model/engine.ts',
    );
  }
  mod.initOrt();
  bindingModule = mod as BindingModule;
  return bindingModule;
}

/** Options of NativeSession.open. */
export interface SessionOptions {
  /** Threads per operator. Default 1: a serving process shares few cores with many small requests. */
  readonly intraOpNumThreads?: number;
}

/** An open ONNX graph with one float32 input and one float32 output used. */
export class NativeSession {
  private disposed = false;

  private constructor(
    private readonly native: Binding.InferenceSession,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {}

  /** Opens a graph from its bytes; throws onnxruntime's message when it cannot. */
  static open(bytes: Uint8Array, opts: SessionOptions = {}): NativeSession {
    const { binding } = nativeBinding();
    const native = new binding.InferenceSession();
    native.loadModel(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength, {
      intraOpNumThreads: opts.intraOpNumThreads ?? 1,
      interOpNumThreads: 1,
      executionMode: 'sequential',
    });
    return new NativeSession(
      native,
      native.inputMetadata.map((m) => m.name),
      native.outputMetadata.map((m) => m.name),
    );
  }

  /**
   * Runs `rows` rows of `columns` float32 values through the graph and returns `output`'s
   * values. Synchronous: it blocks the thread for the duration of the inference.
   */
  run(input: string, output: string, data: Float32Array, rows: number, columns: number): Float32Array {
    if (this.disposed) throw new Error('session is closed');
    let values = data.length === rows * columns ? data : data.subarray(0, rows * columns);
    // The binding refuses SharedArrayBuffer-backed arrays (batches written for the inference thread).
    if (values.buffer instanceof SharedArrayBuffer) values = new Float32Array(values);
    const tensor = new ort.Tensor('float32', values, [rows, columns]);
    const out = this.native.run({ [input]: tensor }, { [output]: null }, {})[output];
    if (!out || !('data' in out) || !(out.data instanceof Float32Array)) {
      throw new Error(`model output ${output}: not float32`);
    }
    return out.data;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.native.dispose();
  }
}

/** Options of InferenceBatcher. */
export interface BatcherOptions {
  /** Rows per run at most; a larger backlog is split into several runs. Default 4096. */
  readonly maxRows?: number;
  /** Called after each run with the number of requests and rows it carried (for metrics). */
  readonly onRun?: (requests: number, rows: number) => void;
  /**
   * Runs batches elsewhere (the inference thread): batch inputs are then SharedArrayBuffer
   * views it can read in place. If a remote run fails, its requests are run here one by one.
   */
  readonly remote?: (data: Float32Array, rows: number) => Promise<Float32Array>;
}

interface Pending {
  /** First row of this request in its segment's buffer. */
  readonly offset: number;
  readonly rows: number;
  readonly resolve: (scores: Float32Array) => void;
  readonly reject: (err: Error) => void;
}

/** Requests whose rows were written into one buffer, run as one inference. */
interface Segment {
  readonly buffer: Float32Array;
  rows: number;
  readonly pending: Pending[];
}

/**
 * Coalesces inferences into one run per event-loop turn. Each request writes its rows
 * straight into the turn's batch buffer (`submitWith`), so there is no per-request input
 * buffer and no copy; requests whose continuations run in the same turn (e.g. their Redis
 * replies were read together) are flushed together on the next tick, which runs after the
 * current microtasks have drained. If a batched run fails, each request is run alone, so one
 * bad input fails only itself.
 */
export class InferenceBatcher {
  private segments: Segment[] = [];
  private scheduled = false;
  private readonly free: Float32Array[] = [];
  private readonly maxRows: number;

  constructor(
    private readonly runRows: (data: Float32Array, rows: number) => Float32Array,
    private readonly columns: number,
    private readonly opts: BatcherOptions = {},
  ) {
    this.maxRows = opts.maxRows ?? 4096;
    if (!(this.maxRows >= 1)) throw new RangeError('InferenceBatcher: maxRows must be >= 1');
  }

  /**
   * Scores `rows` rows of `input` (row-major, `columns` values per row); the input is copied
   * at once. The result is a view of the batch's output; do not keep it past the request.
   */
  submit(input: Float32Array, rows: number): Promise<Float32Array> {
    if (input.length < rows * this.columns) {
      return Promise.reject(
        new RangeError(`input holds ${input.length} values, ${rows} rows need ${rows * this.columns}`),
      );
    }
    return this.submitWith(rows, (into) => into.set(input.subarray(0, into.length)));
  }

  /**
   * Scores `rows` rows that `fill` writes, synchronously, into the view it is given (exactly
   * rows x columns values, contents undefined until written). If `fill` throws, nothing is
   * queued and the promise rejects with its error.
   */
  submitWith(rows: number, fill: (into: Float32Array) => void): Promise<Float32Array> {
    if (!Number.isInteger(rows) || rows < 1)
      return Promise.reject(new RangeError(`rows must be >= 1, got ${rows}`));
    const cols = this.columns;
    let seg = this.segments.at(-1);
    if (
      !seg ||
      seg.rows + rows > Math.max(this.maxRows, rows) ||
      (seg.rows + rows) * cols > seg.buffer.length
    ) {
      seg = { buffer: this.bufferFor(Math.max(this.maxRows, rows) * cols), rows: 0, pending: [] };
      this.segments.push(seg);
    }
    const offset = seg.rows;
    try {
      fill(seg.buffer.subarray(offset * cols, (offset + rows) * cols));
    } catch (err) {
      if (seg.rows === 0 && seg.pending.length === 0) this.release(this.segments.pop()!);
      return Promise.reject(asError(err));
    }
    seg.rows += rows;
    const s = seg;
    const p = new Promise<Float32Array>((resolve, reject) =>
      s.pending.push({ offset, rows, resolve, reject }),
    );
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(() => this.flush());
    }
    return p;
  }

  private bufferFor(size: number): Float32Array {
    const b = this.free.pop();
    if (b && b.length >= size) return b;
    return this.opts.remote ? new Float32Array(new SharedArrayBuffer(size * 4)) : new Float32Array(size);
  }

  private release(seg: Segment): void {
    if (this.free.length < 4) this.free.push(seg.buffer);
  }

  private flush(): void {
    this.scheduled = false;
    const segments = this.segments;
    this.segments = [];
    for (const seg of segments) {
      if (this.opts.remote) {
        this.runRemote(seg, this.opts.remote);
        continue;
      }
      this.runSegment(seg);
      this.release(seg);
    }
  }

  private runRemote(seg: Segment, remote: NonNullable<BatcherOptions['remote']>): void {
    remote(seg.buffer.subarray(0, seg.rows * this.columns), seg.rows).then(
      (out) => {
        this.answer(seg, out);
        this.release(seg);
      },
      () => {
        this.answer(seg, undefined);
        this.release(seg);
      },
    );
  }

  private runSegment(seg: Segment): void {
    let out: Float32Array;
    try {
      out = this.runRows(seg.buffer.subarray(0, seg.rows * this.columns), seg.rows);
    } catch (err) {
      // A lone request has no others to spare: it fails with the run's error.
      if (seg.pending.length === 1) seg.pending[0]!.reject(asError(err));
      else this.runAlone(seg);
      return;
    }
    this.answer(seg, out);
  }

  /**
   * Gives each request its rows of the batch's output; when the batch failed (`out` undefined)
   * or returned the wrong number of scores, runs each request alone instead.
   */
  private answer(seg: Segment, out: Float32Array | undefined): void {
    if (!out || out.length !== seg.rows) {
      this.runAlone(seg);
      return;
    }
    this.opts.onRun?.(seg.pending.length, seg.rows);
    for (const p of seg.pending) p.resolve(out.subarray(p.offset, p.offset + p.rows));
  }

  /** Each request of a failed batch alone, here: finds the culprit, answers the others. */
  private runAlone(seg: Segment): void {
    const cols = this.columns;
    for (const p of seg.pending) {
      try {
        const one = this.runRows(seg.buffer.subarray(p.offset * cols, (p.offset + p.rows) * cols), p.rows);
        if (one.length !== p.rows) throw new Error(`model returned ${one.length} values for ${p.rows} rows`);
        this.opts.onRun?.(1, p.rows);
        p.resolve(one);
      } catch (err) {
        p.reject(asError(err));
      }
    }
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
