/**
 * The models a serving process holds, one per task. A new revision is loaded, verified and
 * warmed beside the current one and then swapped in with one assignment; requests already
 * running keep the model they acquired, which closes once they release it.
 */
import type { ModelMetadata, ModelTask } from '../../../contracts/model-metadata.js';
import { loadModel, type LoadedModel } from './loader.js';
import type { InferenceThread } from './thread.js';

/** Options of ModelStore. */
export interface ModelStoreOptions {
  /** Per-task metadata checks run before a model may be swapped in (e.g. known feature names). */
  readonly checks?: Partial<Record<ModelTask, (meta: ModelMetadata) => void>>;
  readonly fetchImpl?: typeof fetch;
  /** Inference thread for the models' batches; without it they run on the event loop. */
  readonly thread?: InferenceThread;
}

/** Called after a model has been swapped in (previous is undefined on the first load). */
export type SwapListener = (task: ModelTask, next: LoadedModel, previous: LoadedModel | undefined) => void;

export class ModelStore {
  private readonly current = new Map<ModelTask, LoadedModel>();
  private readonly listeners: SwapListener[] = [];
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: ModelStoreOptions = {}) {}

  /** The current model of a task, acquired: the caller must `release()` it. */
  acquire(task: ModelTask): LoadedModel | undefined {
    return this.current.get(task)?.acquire();
  }

  /** The current model of a task, for inspection only. */
  peek(task: ModelTask): LoadedModel | undefined {
    return this.current.get(task);
  }

  /** Every current model. */
  all(): LoadedModel[] {
    return [...this.current.values()];
  }

  onSwap(listener: SwapListener): void {
    this.listeners.push(listener);
  }

  /**
   * Loads `uri` for `task` and swaps it in. Loads are serialized; a failed load leaves the
   * current model in place and rejects with ModelLoadError.
   */
  load(task: ModelTask, uri: string, expectedSha256?: string): Promise<LoadedModel> {
    const run = async () => {
      const next = await loadModel(uri, {
        task,
        check: this.opts.checks?.[task],
        fetchImpl: this.opts.fetchImpl,
        ...(this.opts.thread ? { thread: this.opts.thread } : {}),
        ...(expectedSha256 ? { expectedSha256 } : {}),
      });
      const previous = this.current.get(task);
      this.current.set(task, next);
      for (const l of this.listeners) l(task, next, previous);
      previous?.retire();
      return next;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Retires every model (sessions close when their last request finishes). */
  close(): void {
    for (const m of this.current.values()) m.retire();
    this.current.clear();
  }
}
