/**
 * The environment a serving pod reads its models from: the operator renders it, serving's
 * server.ts reads it. One URI and one pinned digest per task.
 */
import { MODEL_TASKS, type ModelTask } from './model-metadata.js';

export { MODEL_TASKS };

const PREFIX: Record<ModelTask, string> = {
  'drink-ranking': 'CREMA_RANKING_MODEL',
  'addon-attach': 'CREMA_ADDON_MODEL',
  'pickup-time': 'CREMA_PICKUP_MODEL',
  churn: 'CREMA_CHURN_MODEL',
};

/** Names of the env vars holding the model URI and its expected sha256 for `task`. */
export function modelEnvNames(task: ModelTask): { readonly uri: string; readonly sha256: string } {
  const p = PREFIX[task];
  if (!p) throw new RangeError(`unknown model task ${JSON.stringify(task)}`);
  return { uri: `${p}_URI`, sha256: `${p}_SHA256` };
}

/**
 * Every other setting the operator renders into a serving or router container (and serving's
 * server.ts reads). Docs: docs/serving.md.
 */
export const SERVING_ENV = {
  /** The RecommenderModel's name: the `model` label of the metrics the operator queries. */
  modelName: 'CREMA_MODEL_NAME',
  /** stable | canary: the `variant` label of request metrics. */
  variant: 'CREMA_VARIANT',
  /** serving | router | proxy (the admission proxy in front of serving, ADR 0019). */
  mode: 'CREMA_MODE',
  port: 'PORT',
  /** One URL, or a Redis Cluster's seeds separated by commas (contracts/redis-target.ts). */
  redisUrl: 'REDIS_URL',
  /** Bearer token of the admin routes (erase, model swap), from a Secret. */
  adminToken: 'CREMA_ADMIN_TOKEN',
  /** Where the feature snapshot is saved, so a restart with Redis down still answers. */
  snapshotPath: 'CREMA_SNAPSHOT_PATH',
  /** Seconds a terminating process keeps answering (with `Connection: close`) before it closes. */
  drainSeconds: 'CREMA_DRAIN_SECONDS',
  /**
   * Seconds closing waits for open connections after the drain (in-flight requests, clients that
   * stopped mid-request or never sent one) before it closes them; default 5.
   */
  closeTimeoutSeconds: 'CREMA_CLOSE_TIMEOUT_SECONDS',
  /**
   * Client connections older than this many seconds are closed after their next answer, so a
   * Service that moved (new pods, the router in front for a canary) reaches every client.
   */
  maxConnectionAgeSeconds: 'CREMA_MAX_CONNECTION_AGE_SECONDS',
  /** Router mode: the ConfigMap (in POD_NAMESPACE) whose router.json it watches through the API. */
  routerConfigMap: 'CREMA_ROUTER_CONFIGMAP',
  /** Router mode: a config file to watch instead (local runs). */
  routerConfigPath: 'CREMA_ROUTER_CONFIG',
  /**
   * Serving mode: the regions.json file of the model's regional menus and capacity
   * (contracts/region-menu.ts); absent or unreadable = the full menu, no capacity bound.
   */
  regionMenuPath: 'CREMA_REGION_MENU_PATH',
  /**
   * The pod's namespace (downward API). Serving mode: the `namespace` label of its metrics;
   * router mode: where its ConfigMap is.
   */
  podNamespace: 'POD_NAMESPACE',
  /** Proxy mode: the port of the serving container it passes requests to (on 127.0.0.1). */
  proxyUpstreamPort: 'CREMA_PROXY_UPSTREAM_PORT',
  /** Proxy mode: requests passed to serving at once; the rest are answered 503 by the proxy. */
  proxyMaxConcurrency: 'CREMA_PROXY_MAX_CONCURRENCY',
  /**
   * A file in a volume both containers mount: the proxy writes how many requests it refused,
   * serving publishes it as crema_requests_rejected_total{reason="proxy"}.
   */
  proxyStatsPath: 'CREMA_PROXY_STATS_PATH',
  /** Proxy mode: the nginx binary (default /usr/sbin/nginx). */
  nginxPath: 'CREMA_NGINX',
} as const;

/**
 * Share of a serving or router container's memory limit given to V8's old generation; the rest
 * is the young generation (3 x 16 MiB semi-spaces), code, the inference thread's isolate,
 * onnxruntime, buffers and sockets (ADR 0007).
 */
export const HEAP_SHARE_OF_MEMORY_LIMIT = 0.5;

/**
 * NODE_OPTIONS for a container with this memory limit (bytes). Node 20 sizes its heap from the
 * node's memory (4 GiB on a large node), not from the cgroup limit, so under a spike V8 lets
 * garbage pile up far past a 512Mi limit before it collects hard; a heap limit from the
 * container's limit makes it collect in time instead.
 */
export function nodeOptionsForMemoryLimit(bytes: number): string {
  const mib = Math.floor((bytes / 2 ** 20) * HEAP_SHARE_OF_MEMORY_LIMIT);
  return `--max-old-space-size=${Math.max(32, mib)}`;
}

/** The key of the router config in the router's ConfigMap. */
export const ROUTER_CONFIG_KEY = 'router.json';

/**
 * The init container that delivers a model into the pod: it fetches `uri` (http, https or
 * file), checks the bytes against the pinned sha256 and the metadata, and writes
 * `<dir>/<task>.onnx` and `<dir>/<task>.meta.json` for the serving container to load.
 */
export const FETCH_ENV = {
  uri: 'CREMA_FETCH_URI',
  sha256: 'CREMA_FETCH_SHA256',
  /** Optional: where the metadata is, when it is not `<model>.meta.json` beside the model. */
  metadataUri: 'CREMA_FETCH_METADATA_URI',
  task: 'CREMA_FETCH_TASK',
  dir: 'CREMA_FETCH_DIR',
} as const;

/** The volume the fetch init container fills and the serving container reads (read-only). */
export const MODEL_DIR = '/var/lib/crema/models';

/** The `file://` URI of the verified model of `task` inside a serving pod. */
export function fetchedModelUri(task: ModelTask, dir = MODEL_DIR): string {
  return `file://${dir}/${task}.onnx`;
}
