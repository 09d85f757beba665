/**
 * A thin JSON client for the Kubernetes API: one keep-alive HTTPS agent configured from a
 * KubeConfig, typed errors, and the resource table the operator uses. Server-side apply,
 * status patches, lists and watches all go through `request`/`watch`, so every API call the
 * operator makes is visible in one place (and countable).
 */
import type * as k8s from '@kubernetes/client-node';
import { Agent, request as httpsRequest, type RequestOptions } from 'node:https';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { createInterface } from 'node:readline';

/** Minimal shape of any Kubernetes object. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: k8s.V1ObjectMeta;
}

/** A list response. */
export interface KubeList<T> {
  metadata?: { resourceVersion?: string; continue?: string };
  items: T[];
}

/** One event on a watch stream. */
export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

/** Describes one API resource: where it lives and what it is called. */
export interface ResourceDef {
  readonly group: string; // '' for core
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
}

/** The resources the operator reads or writes. */
export const RESOURCES = {
  configMap: { group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true },
  service: { group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true },
  pod: { group: '', version: 'v1', kind: 'Pod', plural: 'pods', namespaced: true },
  serviceAccount: {
    group: '',
    version: 'v1',
    kind: 'ServiceAccount',
    plural: 'serviceaccounts',
    namespaced: true,
  },
  role: {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    kind: 'Role',
    plural: 'roles',
    namespaced: true,
  },
  roleBinding: {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    kind: 'RoleBinding',
    plural: 'rolebindings',
    namespaced: true,
  },
  event: { group: '', version: 'v1', kind: 'Event', plural: 'events', namespaced: true },
  deployment: { group: 'apps', version: 'v1', kind: 'Deployment', plural: 'deployments', namespaced: true },
  hpa: {
    group: 'autoscaling',
    version: 'v2',
    kind: 'HorizontalPodAutoscaler',
    plural: 'horizontalpodautoscalers',
    namespaced: true,
  },
  pdb: {
    group: 'policy',
    version: 'v1',
    kind: 'PodDisruptionBudget',
    plural: 'poddisruptionbudgets',
    namespaced: true,
  },
  lease: { group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', plural: 'leases', namespaced: true },
  recommenderModel: {
    group: 'crema.dev',
    version: 'v1alpha1',
    kind: 'RecommenderModel',
    plural: 'recommendermodels',
    namespaced: true,
  },
  experiment: {
    group: 'crema.dev',
    version: 'v1alpha1',
    kind: 'Experiment',
    plural: 'experiments',
    namespaced: true,
  },
  storeRegion: {
    group: 'crema.dev',
    version: 'v1alpha1',
    kind: 'StoreRegion',
    plural: 'storeregions',
    namespaced: true,
  },
} as const satisfies Record<string, ResourceDef>;

/** apiVersion string of a resource. */
export function apiVersionOf(r: ResourceDef): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

/** The URL path of a collection, an object, or an object's subresource. */
export function resourcePath(
  r: ResourceDef,
  namespace?: string,
  name?: string,
  subresource?: string,
): string {
  let p = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
  if (r.namespaced && namespace) p += `/namespaces/${encodeURIComponent(namespace)}`;
  p += `/${r.plural}`;
  if (name) p += `/${encodeURIComponent(name)}`;
  if (subresource) p += `/${subresource}`;
  return p;
}

/** A non-2xx answer from the API server, with its Status reason and code. */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(`${method} ${path}: ${status} ${reason}: ${message}`);
  }
  get notFound(): boolean {
    return this.status === 404;
  }
  get conflict(): boolean {
    return this.status === 409;
  }
  get gone(): boolean {
    return this.status === 410;
  }
}

/** Options of one request. */
export interface RequestOpts {
  body?: unknown;
  contentType?: string;
  /** Abort after this many ms (default 30 000): a shutting-down server must not hang us. */
  timeoutMs?: number;
  query?: Record<string, string | number | boolean | undefined>;
  /**
   * Called when a socket is ready for this request, just before its first byte is written;
   * an Error it returns refuses the request unsent. A request can wait for a socket (a new
   * connection's TLS handshake, the agent's socket limit) long after it was issued; write
   * fencing must be checked at the moment of sending, not only at the call.
   */
  beforeSend?: () => Error | undefined;
}

/** Every API call the operator makes goes through this. */
export interface KubeClient {
  request<T>(method: string, path: string, opts?: RequestOpts): Promise<T>;
  /** Streams watch events until the server closes the stream or `signal` aborts. */
  watch<T>(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (e: WatchEvent<T>) => void,
    signal: AbortSignal,
  ): Promise<void>;
  /** Counts of requests sent, by HTTP method (for metrics and benchmarks). */
  readonly requestCounts: Record<string, number>;
  close(): void;
}

function buildUrl(server: string, path: string, query?: RequestOpts['query']): URL {
  const url = new URL(server + path);
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  return url;
}

async function readBody(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Creates a client for the current context of `kc`. */
export async function createKubeClient(
  kc: k8s.KubeConfig,
  opts: { userAgent?: string } = {},
): Promise<KubeClient> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const tls: RequestOptions = {};
  await kc.applyToHTTPSOptions(tls);
  const secure = cluster.server.startsWith('https:');
  const agent = secure
    ? new Agent({
        keepAlive: true,
        maxSockets: 32,
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        rejectUnauthorized: tls.rejectUnauthorized,
      })
    : undefined;
  const headers = {
    ...(tls.headers as Record<string, string> | undefined),
    'user-agent': opts.userAgent ?? 'crema-operator',
  };
  const requestCounts: Record<string, number> = {};

  const send = (
    method: string,
    url: URL,
    body: string | undefined,
    contentType: string | undefined,
    signal?: AbortSignal,
    beforeSend?: () => Error | undefined,
  ) =>
    new Promise<IncomingMessage>((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)(
        url,
        {
          method,
          agent,
          signal,
          headers: {
            ...headers,
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': contentType ?? 'application/json' } : {}),
          },
        },
        resolve,
      );
      req.on('error', reject);
      if (!beforeSend) {
        req.end(body);
        return;
      }
      // Nothing is written before end(): headers go out with the body. Wait until the socket
      // is connected (and TLS is established), then decide.
      req.once('socket', (socket) => {
        const go = () => {
          const refused = beforeSend();
          if (refused) req.destroy(refused);
          else req.end(body);
        };
        // A reused keep-alive socket is ready now; a new one was made for this request and is
        // still in its TCP (and TLS) handshake.
        if (req.reusedSocket) go();
        else if (secure) socket.once('secureConnect', go);
        else if (socket.connecting) socket.once('connect', go);
        else go();
      });
    });

  return {
    requestCounts,
    async request<T>(method: string, path: string, opts: RequestOpts = {}): Promise<T> {
      requestCounts[method] = (requestCounts[method] ?? 0) + 1;
      const url = buildUrl(cluster.server, path, opts.query);
      const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
      const res = await send(
        method,
        url,
        body,
        opts.contentType,
        AbortSignal.timeout(opts.timeoutMs ?? 30_000),
        opts.beforeSend,
      );
      const text = await readBody(res);
      const status = res.statusCode ?? 0;
      if (status < 200 || status >= 300) {
        let reason = 'Unknown';
        let message = text.slice(0, 500);
        try {
          const s = JSON.parse(text) as { reason?: string; message?: string };
          reason = s.reason ?? reason;
          message = s.message ?? message;
        } catch {
          /* not a Status object */
        }
        throw new KubeApiError(method, path, status, reason, message);
      }
      return (text ? JSON.parse(text) : undefined) as T;
    },
    async watch<T>(
      path: string,
      query: RequestOpts['query'],
      onEvent: (e: WatchEvent<T>) => void,
      signal: AbortSignal,
    ) {
      requestCounts['WATCH'] = (requestCounts['WATCH'] ?? 0) + 1;
      const url = buildUrl(cluster.server, path, { ...query, watch: true });
      const res = await send('GET', url, undefined, undefined, signal);
      if ((res.statusCode ?? 0) >= 300) {
        const text = await readBody(res);
        let reason = 'Unknown';
        try {
          reason = (JSON.parse(text) as { reason?: string }).reason ?? reason;
        } catch {
          /* ignore */
        }
        throw new KubeApiError('WATCH', path, res.statusCode ?? 0, reason, text.slice(0, 300));
      }
      const lines = createInterface({ input: res, crlfDelay: Infinity });
      try {
        for await (const line of lines) {
          if (!line.trim()) continue;
          onEvent(JSON.parse(line) as WatchEvent<T>);
        }
      } catch (err) {
        if (!signal.aborted) throw err;
      }
    },
    close() {
      agent?.destroy();
    },
  };
}

/** Key of an object in queues and caches: `namespace/name`. */
export function objectKey(obj: KubeObject): string {
  return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
}
