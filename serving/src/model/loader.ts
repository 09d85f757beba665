/**
 * Fetches an ONNX model and its metadata from a `file://` or `http(s)://` URI, checks the
 * sha256 against the metadata, opens an onnxruntime session and warms it. The serving code
 * never cares who produced the model, only that the bytes match their metadata.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { FEATURE_SCHEMA_VERSION } from '../../../contracts/features.js';
import {
  validateModelMetadata,
  type ModelMetadata,
  type ModelTask,
} from '../../../contracts/model-metadata.js';
import { InferenceBatcher, NativeSession, type BatcherOptions } from './engine.js';
import type { InferenceThread } from './thread.js';
import { checkModelUri } from './uri.js';

/** Why a model could not be loaded; the message names the problem. */
export class ModelLoadError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ModelLoadError';
  }
}

/** Reads the bytes behind a `file://`, `http://` or `https://` URI. */
export async function fetchUri(uri: string, fetchImpl: typeof fetch = fetch): Promise<Buffer> {
  const url = parseModelUri(uri);
  if (url.protocol === 'file:') {
    try {
      return await readFile(fileURLToPath(url));
    } catch (err) {
      throw new ModelLoadError(`model uri ${uri}: ${(err as Error).message}`, { cause: err });
    }
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') {
    let res: Response;
    try {
      res = await fetchImpl(url, { signal: AbortSignal.timeout(30_000) });
    } catch (err) {
      throw new ModelLoadError(`model uri ${uri}: ${(err as Error).message}`, { cause: err });
    }
    if (!res.ok) throw new ModelLoadError(`model uri ${uri}: HTTP ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  }
  throw new ModelLoadError(`model uri ${uri}: scheme ${url.protocol} is not supported (file, http, https)`);
}

/** The URL of a model URI; throws ModelLoadError with the reason checkModelUri gives. */
export function parseModelUri(uri: string): URL {
  const problem = checkModelUri(uri);
  if (problem !== null) throw new ModelLoadError(`model uri ${uri} ${problem}`);
  return new URL(uri);
}

/** `<x>.onnx` → `<x>.meta.json` (any other name gets `.meta.json` appended). */
export function metadataUriOf(modelUri: string): string {
  const u = parseModelUri(modelUri);
  u.pathname = u.pathname.endsWith('.onnx')
    ? u.pathname.slice(0, -5) + '.meta.json'
    : u.pathname + '.meta.json';
  return u.toString();
}

/** sha256 hex of bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * An open model. Requests `acquire()` it for the duration of one inference and `release()`
 * afterwards; a retired model releases its native session only once no request holds it.
 */
export class LoadedModel {
  private refs = 0;
  private retired = false;
  private closed = false;
  /** Number of feature columns of the first input. */
  readonly columns: number;
  private readonly inputName: string;
  private readonly outputName: string;
  private readonly batcher: InferenceBatcher;

  private readonly remote: { thread: InferenceThread; session: number } | undefined;

  /**
   * `thread`: run batches on the inference thread (it opens its own session from `bytes`);
   * without it they run on the calling thread.
   */
  constructor(
    readonly uri: string,
    readonly meta: ModelMetadata,
    private readonly session: NativeSession,
    batching: BatcherOptions = {},
    thread?: { thread: InferenceThread; bytes: Uint8Array },
  ) {
    this.columns = meta.inputs[0]!.features.length;
    this.inputName = meta.inputs[0]!.name;
    this.outputName = meta.outputs[0]?.name ?? session.outputNames[0]!;
    if (thread) {
      const handle = thread.thread.openSession(thread.bytes, this.inputName, this.outputName);
      const remote = { thread: thread.thread, session: handle };
      this.remote = remote;
      batching = {
        ...batching,
        remote: (data, rows) => remote.thread.run(remote.session, data, rows, this.columns),
      };
    }
    this.batcher = new InferenceBatcher((data, rows) => this.runNow(data, rows), this.columns, batching);
  }

  /** The model revision: its sha256. */
  get revision(): string {
    return this.meta.sha256;
  }

  acquire(): this {
    this.refs++;
    return this;
  }

  release(): void {
    this.refs--;
    if (this.retired && this.refs === 0) this.close();
  }

  /** Marks the model replaced; its session closes when the last in-flight request releases it. */
  retire(): void {
    this.retired = true;
    if (this.refs === 0) this.close();
  }

  /** Requests currently holding the model. */
  get inFlight(): number {
    return this.refs;
  }

  /**
   * Scores `rows` rows of `columns` features; returns the first output's values, one per row.
   * Runs made in the same event-loop turn share one inference (InferenceBatcher); `input` must
   * stay untouched until the promise settles, and the result is only valid for this request.
   */
  run(input: Float32Array, rows: number): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new Error(`model ${this.describe()} is closed`));
    return this.batcher.submit(input, rows);
  }

  /**
   * Like run(), for rows that `fill` writes straight into the batch's input (exactly rows x
   * columns values); no input buffer of the caller's own and no copy.
   */
  runWith(rows: number, fill: (into: Float32Array) => void): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new Error(`model ${this.describe()} is closed`));
    return this.batcher.submitWith(rows, fill);
  }

  /** One inference now, on this thread (warm-up, tests). */
  runNow(input: Float32Array, rows: number): Float32Array {
    if (this.closed) throw new Error(`model ${this.describe()} is closed`);
    return this.session.run(this.inputName, this.outputName, input, rows, this.columns);
  }

  private describe(): string {
    return `${this.meta.name}@${this.revision.slice(0, 12)}`;
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.session.dispose();
    if (this.remote) this.remote.thread.closeSession(this.remote.session);
  }
}

/** Options of loadModel. */
export interface LoadModelOptions {
  /** The task the model must declare. */
  readonly task: ModelTask;
  /** Extra checks of the metadata (e.g. every feature is one serving can compute); throw to refuse. */
  readonly check?: (meta: ModelMetadata) => void;
  /** Rows of the zero batch used to warm the session. Default 200. */
  readonly warmRows?: number;
  readonly fetchImpl?: typeof fetch;
  /** How concurrent inferences are batched. */
  readonly batching?: BatcherOptions;
  /** Run inference on this thread instead of the caller's (serving uses the process's one). */
  readonly thread?: InferenceThread;
  /** The digest the deployment pins (RecommenderModel spec.model.sha256); a different model is refused. */
  readonly expectedSha256?: string;
}

/** A model's bytes and metadata, fetched and checked against each other and the pin. */
export interface VerifiedArtifacts {
  readonly bytes: Buffer;
  readonly metaBytes: Buffer;
  readonly meta: ModelMetadata;
}

/**
 * Fetches a model and its metadata (`metadataUri`, default `<model>.meta.json` beside it) and
 * checks them: metadata valid, the expected task, serving's feature schema version, sha256 of
 * the bytes equal to the metadata's and to the pinned digest, the `check` hook. Throws
 * ModelLoadError naming the URI and the first problem.
 */
export async function fetchVerifiedArtifacts(
  uri: string,
  opts: Pick<LoadModelOptions, 'task' | 'check' | 'fetchImpl' | 'expectedSha256'> & { metadataUri?: string },
): Promise<VerifiedArtifacts> {
  // Every check that can throw runs before the first fetch starts: a throw between starting
  // the two fetches left the first one's rejection unhandled, which ends the process.
  parseModelUri(uri);
  const metadataUri = opts.metadataUri ?? metadataUriOf(uri);
  parseModelUri(metadataUri);
  // Both at once; when both fail, the model's own failure is the one reported.
  const [model, metadata] = await Promise.allSettled([
    fetchUri(uri, opts.fetchImpl),
    fetchUri(metadataUri, opts.fetchImpl),
  ]);
  if (model.status === 'rejected') throw model.reason;
  if (metadata.status === 'rejected') throw metadata.reason;
  const bytes = model.value;
  const metaBytes = metadata.value;
  let meta: ModelMetadata;
  try {
    meta = JSON.parse(metaBytes.toString('utf8')) as ModelMetadata;
  } catch (err) {
    throw new ModelLoadError(`model ${uri}: metadata is not JSON`, { cause: err });
  }
  const problems = validateModelMetadata(meta);
  if (problems.length > 0) throw new ModelLoadError(`model ${uri}: metadata: ${problems.join('; ')}`);
  if (meta.task !== opts.task)
    throw new ModelLoadError(`model ${uri}: task is ${meta.task}, expected ${opts.task}`);
  if (meta.featureSchemaVersion !== FEATURE_SCHEMA_VERSION) {
    throw new ModelLoadError(
      `model ${uri}: featureSchemaVersion ${meta.featureSchemaVersion}, serving reads ${FEATURE_SCHEMA_VERSION}`,
    );
  }
  const digest = sha256Hex(bytes);
  if (opts.expectedSha256 && digest !== opts.expectedSha256) {
    throw new ModelLoadError(
      `model ${uri}: sha256 ${digest} is not the pinned digest ${opts.expectedSha256}`,
    );
  }
  if (digest !== meta.sha256) {
    throw new ModelLoadError(`model ${uri}: sha256 ${digest} does not match metadata ${meta.sha256}`);
  }
  const input = meta.inputs[0]!;
  if (!Array.isArray(input.features) || input.features.length === 0) {
    throw new ModelLoadError(`model ${uri}: inputs[0].features is empty`);
  }
  try {
    opts.check?.(meta);
  } catch (err) {
    throw new ModelLoadError(`model ${uri}: ${(err as Error).message}`, { cause: err });
  }
  return { bytes, metaBytes, meta };
}

/**
 * Loads, verifies and warms a model: the checks of fetchVerifiedArtifacts, then input/output
 * names exist in the graph and a warm-up batch runs. Throws ModelLoadError naming the first
 * problem.
 */
export async function loadModel(uri: string, opts: LoadModelOptions): Promise<LoadedModel> {
  const { bytes, meta } = await fetchVerifiedArtifacts(uri, opts);
  const input = meta.inputs[0]!;
  let session: NativeSession;
  try {
    session = NativeSession.open(bytes);
  } catch (err) {
    throw new ModelLoadError(`model ${uri}: onnxruntime cannot open it: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!session.inputNames.includes(input.name)) {
    session.dispose();
    throw new ModelLoadError(`model ${uri}: graph has no input ${input.name}`);
  }
  const outName = meta.outputs[0]?.name;
  if (outName !== undefined && !session.outputNames.includes(outName)) {
    session.dispose();
    throw new ModelLoadError(`model ${uri}: graph has no output ${outName}`);
  }
  const model = new LoadedModel(
    uri,
    meta,
    session,
    opts.batching,
    opts.thread ? { thread: opts.thread, bytes } : undefined,
  );
  const rows = opts.warmRows ?? 200;
  const zeros = new Float32Array(rows * model.columns);
  try {
    for (let i = 0; i < 5; i++) {
      const out = model.runNow(zeros, rows);
      if (out.length !== rows) throw new Error(`${out.length} values for ${rows} rows`);
    }
    // Through the batcher too, so the inference thread (if any) has started and run this model
    // before the first request (a thread that cannot start makes the batcher run inline).
    const viaBatch = await model.run(zeros, rows);
    if (viaBatch.length !== rows) throw new Error(`${viaBatch.length} values for ${rows} rows`);
  } catch (err) {
    model.retire();
    throw new ModelLoadError(`model ${uri}: warm-up inference failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return model;
}
