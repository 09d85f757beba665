/**
 * The router's config in a cluster: the operator writes router.json into a ConfigMap, and the
 * router watches that one ConfigMap through the API (list + watch, field selector on its name,
 * with the pod's service account). A mounted ConfigMap volume would also work, but the kubelet
 * refreshes those only every sync period (about a minute), and a rollback that moves traffic a
 * minute late is not a rollback. With a watch the router applies a change within a second.
 */
import * as k8s from '@kubernetes/client-node';
import { ROUTER_CONFIG_KEY } from '../../../contracts/serving-env.js';

/** Options of watchRouterConfigMap. */
export interface ConfigMapSourceOptions {
  readonly namespace: string;
  readonly name: string;
  /** Called with router.json's text on every add or update (also the first list). */
  readonly onText: (text: string) => void;
  /** The ConfigMap was deleted, or has no router.json: keep the current config. */
  readonly onMissing?: () => void;
  readonly onError?: (err: unknown) => void;
  /** Default: in-cluster (service account), else the default kubeconfig. */
  readonly kubeConfig?: k8s.KubeConfig;
  /** Delay before re-listing after the watch failed, ms. Default 1000. */
  readonly retryMs?: number;
}

/** A running watch; `first` settles once the ConfigMap was listed (found or not). */
export interface ConfigMapSource {
  readonly first: Promise<void>;
  stop(): Promise<void>;
}

function defaultKubeConfig(): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (process.env['KUBERNETES_SERVICE_HOST']) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

/** Watches ConfigMap `namespace/name` and reports its router.json; restarts after errors. */
export function watchRouterConfigMap(opts: ConfigMapSourceOptions): ConfigMapSource {
  const kc = opts.kubeConfig ?? defaultKubeConfig();
  const api = kc.makeApiClient(k8s.CoreV1Api);
  const fieldSelector = `metadata.name=${opts.name}`;
  const lw = new k8s.ListWatch<k8s.V1ConfigMap>(
    `/api/v1/namespaces/${encodeURIComponent(opts.namespace)}/configmaps`,
    new k8s.Watch(kc),
    () => api.listNamespacedConfigMap({ namespace: opts.namespace, fieldSelector }),
    false,
    undefined,
    fieldSelector,
  );
  const report = (cm: k8s.V1ConfigMap) => {
    const text = cm.data?.[ROUTER_CONFIG_KEY];
    if (text === undefined) opts.onMissing?.();
    else opts.onText(text);
  };
  lw.on(k8s.ADD, report);
  lw.on(k8s.UPDATE, report);
  lw.on(k8s.DELETE, () => opts.onMissing?.());
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  lw.on(k8s.ERROR, (err) => {
    opts.onError?.(err);
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!stopped) lw.start().catch((e: unknown) => opts.onError?.(e));
    }, opts.retryMs ?? 1000);
  });
  const first = lw.start().then(() => {
    if (!lw.get(opts.name, opts.namespace)) opts.onMissing?.();
  });
  return {
    first,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await lw.stop();
    },
  };
}
