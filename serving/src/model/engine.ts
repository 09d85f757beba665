/**
 * How serving runs ONNX graphs: a synchronous session on onnxruntime-node's native binding,
 * and a batcher that turns the inferences requested in one event-loop turn into one run.
 *
 * Why not `ort.InferenceSession.run`: the public API defers every run to a `setImmediate`,
 * validates and re-wraps feeds and outputs, and at serving load that hop costs more CPU than
 * the inference itself (bench/serving: 150 → 116 µs per request with the binding). The binding
 * (`onnxruntime-node/dist/binding.js`, typed in its `binding.d.ts`) is what the public API
 * calls; `openSession` checks its shape and fails loudly if an upgrade changes it.
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

/** Options of openSession. */
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
    const tensor = new ort.Tensor(
      'float32',
      data.length === rows * columns ? data : data.subarray(0, rows * columns),
      [rows, columns],
    );
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
  /** Rows per run at most; a larger backlog is split into several runs. Default 8192. */
  readonly maxRows?: number;
  /** Called after each run with the number of requests and rows it carried (for metrics). */
  readonly onRun?: (requests: number, rows: number) => void;
}

interface Pending {
  readonly input: Float32Array;
  readonly rows: number;
  readonly resolve: (scores: Float32Array) => void;
  readonly reject: (err: Error) => void;
}

/**
 * Coalesces `submit()` calls into one inference per event-loop turn. Requests whose
 * continuations run in the same turn (e.g. their Redis replies were read together) are
 * flushed together on the next tick, which runs after the current microtasks have drained.
 * If a batched run fails, each request is run alone, so one bad input fails only itself.
 */
export class InferenceBatcher {
  private pending: Pending[] = [];
  private pendingRows = 0;
  private scheduled = false;
  private buffer = new Float32Array(0);
  private readonly maxRows: number;

  constructor(
    private readonly runRows: (data: Float32Array, rows: number) => Float32Array,
    private readonly columns: number,
    private readonly opts: BatcherOptions = {},
  ) {
    this.maxRows = opts.maxRows ?? 8192;
    if (!(this.maxRows >= 1)) throw new RangeError('InferenceBatcher: maxRows must be >= 1');
  }

  /**
   * Scores `rows` rows of `input` (row-major, `columns` values per row). The input is read
   * when the batch runs, before the promise settles, so the caller keeps it untouched until
   * then. The result is a view of the batch's output; do not keep it past the request.
   */
  submit(input: Float32Array, rows: number): Promise<Float32Array> {
    if (!Number.isInteger(rows) || rows < 1)
      return Promise.reject(new RangeError(`rows must be >= 1, got ${rows}`));
    if (input.length < rows * this.columns) {
      return Promise.reject(
        new RangeError(`input holds ${input.length} values, ${rows} rows need ${rows * this.columns}`),
      );
    }
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.push({ input, rows, resolve, reject });
      this.pendingRows += rows;
      if (!this.scheduled) {
        this.scheduled = true;
        process.nextTick(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const all = this.pending;
    this.pending = [];
    this.pendingRows = 0;
    let start = 0;
    while (start < all.length) {
      let rows = all[start]!.rows;
      let end = start + 1;
      while (end < all.length && rows + all[end]!.rows <= this.maxRows) rows += all[end++]!.rows;
      this.runBatch(all.slice(start, end), rows);
      start = end;
    }
  }

  private runBatch(batch: Pending[], rows: number): void {
    const cols = this.columns;
    if (batch.length === 1) {
      const p = batch[0]!;
      try {
        const out = this.runRows(p.input, p.rows);
        if (out.length !== p.rows) throw new Error(`model returned ${out.length} values for ${p.rows} rows`);
        this.opts.onRun?.(1, p.rows);
        p.resolve(out);
      } catch (err) {
        p.reject(asError(err));
      }
      return;
    }
    if (this.buffer.length < rows * cols)
      this.buffer = new Float32Array(Math.max(rows * cols, this.buffer.length * 2));
    let offset = 0;
    for (const p of batch) {
      this.buffer.set(
        p.input.length === p.rows * cols ? p.input : p.input.subarray(0, p.rows * cols),
        offset * cols,
      );
      offset += p.rows;
    }
    let out: Float32Array;
    try {
      out = this.runRows(this.buffer, rows);
      if (out.length !== rows) throw new Error(`model returned ${out.length} values for ${rows} rows`);
    } catch {
      // Find the culprit: each request alone.
      for (const p of batch) this.runBatch([p], p.rows);
      return;
    }
    this.opts.onRun?.(batch.length, rows);
    offset = 0;
    for (const p of batch) {
      p.resolve(out.subarray(offset, offset + p.rows));
      offset += p.rows;
    }
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
