/**
 * List+watch informer with a local cache. It lists once (paged), then watches from the list's
 * resourceVersion; when a watch ends it resumes from the last seen resourceVersion (bookmarks
 * keep it fresh), and when the server answers 410 Gone it relists and emits the difference.
 * An optional resync re-emits every cached object as an update, so controllers re-check state
 * that nothing changed (level-triggered reconciles; a no-op resync must cause no writes).
 */
import {
  KubeApiError,
  apiVersionOf,
  objectKey,
  resourcePath,
  type KubeClient,
  type KubeList,
  type KubeObject,
  type ResourceDef,
  type WatchEvent,
} from './kube.js';

export type InformerEvent = 'add' | 'update' | 'delete';
export type InformerHandler<T> = (event: InformerEvent, obj: T) => void;

export interface InformerOptions {
  readonly resource: ResourceDef;
  /** Restrict to one namespace; default all namespaces. */
  readonly namespace?: string;
  readonly labelSelector?: string;
  /** Re-emit every cached object this often (ms); 0 disables. Default 0. */
  readonly resyncMs?: number;
  /** Server-side watch timeout, seconds (the stream ends and is resumed). Default 300. */
  readonly watchTimeoutSeconds?: number;
  readonly log?: (msg: string) => void;
}

/** Watches one resource type and keeps an up-to-date cache of it. */
export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private resourceVersion = '';
  private abort = new AbortController();
  private stopped = false;
  private synced = false;
  private resyncTimer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  /** How many times the informer listed from scratch (1 + relists after 410 Gone). */
  lists = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly opts: InformerOptions,
  ) {}

  /** Registers a handler for add/update/delete. */
  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  /** All cached objects. */
  list(): T[] {
    return [...this.cache.values()];
  }

  /** The cached object `namespace/name`, if any. */
  get(namespace: string, name: string): T | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  /** Lists, then keeps watching in the background; resolves once the cache is synced. */
  async start(): Promise<void> {
    await this.relist();
    this.synced = true;
    this.loop = this.watchLoop();
    if (this.opts.resyncMs) {
      this.resyncTimer = setInterval(() => {
        for (const obj of this.cache.values()) this.emit('update', obj);
      }, this.opts.resyncMs);
      this.resyncTimer.unref();
    }
  }

  /** Stops watching; the cache stays readable. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resyncTimer);
    this.abort.abort();
    await this.loop?.catch(() => {});
  }

  private emit(event: InformerEvent, obj: T): void {
    for (const h of this.handlers) {
      try {
        h(event, obj);
      } catch (err) {
        this.opts.log?.(`informer handler for ${this.opts.resource.kind} threw: ${String(err)}`);
      }
    }
  }

  private collectionPath(): string {
    return resourcePath(this.opts.resource, this.opts.namespace);
  }

  /** Lists everything (paged) and reconciles the cache with it, emitting the differences. */
  private async relist(): Promise<void> {
    this.lists++;
    const fresh = new Map<string, T>();
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await this.client.request<KubeList<T>>('GET', this.collectionPath(), {
        query: { labelSelector: this.opts.labelSelector, limit: 500, continue: cont },
      });
      // A list's items carry no kind and apiVersion (the list has them); watch events' objects
      // do. Cached objects must look the same whichever way they came, or every comparison with
      // a desired object (which has both) fails and a restarted operator rewrites everything.
      const typed = { apiVersion: apiVersionOf(this.opts.resource), kind: this.opts.resource.kind };
      for (const item of page.items) fresh.set(objectKey(item), { ...item, ...typed });
      cont = page.metadata?.continue || undefined;
      rv = page.metadata?.resourceVersion ?? rv;
    } while (cont);
    for (const [key, old] of this.cache) {
      if (!fresh.has(key)) {
        this.cache.delete(key);
        this.emit('delete', old);
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.cache.get(key);
      this.cache.set(key, obj);
      if (!old) this.emit('add', obj);
      else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.emit('update', obj);
    }
    this.resourceVersion = rv;
  }

  private async watchLoop(): Promise<void> {
    let backoff = 200;
    while (!this.stopped) {
      try {
        let gone = false;
        await this.client.watch<T>(
          this.collectionPath(),
          {
            labelSelector: this.opts.labelSelector,
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds: this.opts.watchTimeoutSeconds ?? 300,
          },
          (e) => {
            if (this.handleEvent(e) === 'gone') {
              gone = true;
              this.abort.abort();
            }
          },
          this.abort.signal,
        );
        if (this.stopped) return;
        if (this.abort.signal.aborted) this.abort = new AbortController();
        if (gone) await this.relist();
        backoff = 200;
      } catch (err) {
        if (this.stopped) return;
        if (this.abort.signal.aborted) this.abort = new AbortController();
        if (err instanceof KubeApiError && err.gone) {
          await this.relist().catch((e: unknown) =>
            this.opts.log?.(`relist ${this.opts.resource.kind}: ${String(e)}`),
          );
          continue;
        }
        this.opts.log?.(`watch ${this.opts.resource.kind} failed, retrying in ${backoff} ms: ${String(err)}`);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 10_000);
      }
    }
  }

  /** Applies one watch event to the cache; returns 'gone' when the server says our resourceVersion expired. */
  private handleEvent(e: WatchEvent<T>): 'gone' | void {
    if (e.type === 'ERROR') {
      const status = e.object as unknown as { code?: number; message?: string };
      if (status.code === 410) return 'gone';
      this.opts.log?.(
        `watch ${this.opts.resource.kind} error event: ${status.message ?? JSON.stringify(status)}`,
      );
      return;
    }
    const rv = e.object.metadata?.resourceVersion;
    if (rv) this.resourceVersion = rv;
    if (e.type === 'BOOKMARK') return;
    const key = objectKey(e.object);
    if (e.type === 'DELETED') {
      this.cache.delete(key);
      this.emit('delete', e.object);
      return;
    }
    const existed = this.cache.has(key);
    this.cache.set(key, e.object);
    this.emit(existed ? 'update' : 'add', e.object);
  }
}
