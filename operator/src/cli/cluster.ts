/**
 * The plugin's view of the cluster: a KubeConfig chosen by the kubectl flags, the operator's
 * JSON client on top of it, and the translation of every failure into one line a person can
 * act on (not found, no Crema CRDs, refused credentials, unreachable server).
 */
import { existsSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import type { Experiment, RecommenderModel, StoreRegion } from '../api/v1alpha1/index.js';
import {
  KubeApiError,
  RESOURCES,
  createKubeClient,
  resourcePath,
  type KubeClient,
  type KubeList,
  type ResourceDef,
} from '../runtime/kube.js';
import type { GlobalOptions, Kind } from './args.js';
import { CliError } from './errors.js';

/** The resource of each kind the plugin shows. */
export const KIND_RESOURCES: Readonly<Record<Kind, ResourceDef>> = {
  models: RESOURCES.recommenderModel,
  experiments: RESOURCES.experiment,
  regions: RESOURCES.storeRegion,
};

export interface KindObjects {
  models: RecommenderModel;
  experiments: Experiment;
  regions: StoreRegion;
}

/** A connected cluster: the client, the namespace the flags chose, and where the server is. */
export interface Cluster {
  readonly client: KubeClient;
  /** undefined with --all-namespaces. */
  readonly namespace: string | undefined;
  readonly server: string;
  readonly context: string;
}

/** Loads the kubeconfig the flags name and connects to its current (or --context) context. */
export async function connectCluster(opts: GlobalOptions): Promise<Cluster> {
  const kc = new k8s.KubeConfig();
  // Without --kubeconfig, client-node's default order applies: $KUBECONFIG, ~/.kube/config, in-cluster.
  const file = opts.kubeconfig;
  try {
    if (file !== undefined) {
      if (!existsSync(file)) throw new CliError(`--kubeconfig: ${file} does not exist`);
      kc.loadFromFile(file);
    } else {
      kc.loadFromDefault();
    }
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`kubeconfig: cannot be read: ${(err as Error).message.split('\n')[0]}`);
  }
  if (opts.context !== undefined) {
    if (!kc.getContexts().some((c) => c.name === opts.context))
      throw new CliError(`--context: no context ${JSON.stringify(opts.context)} in the kubeconfig`);
    kc.setCurrentContext(opts.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster)
    throw new CliError('kubeconfig: the current context names no cluster (use --context or --kubeconfig)');
  const namespace = opts.allNamespaces
    ? undefined
    : (opts.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default');
  let client: KubeClient;
  try {
    client = await createKubeClient(kc, { userAgent: 'kubectl-crema' });
  } catch (err) {
    throw new CliError(
      `kubeconfig: cannot use the credentials of context ${kc.getCurrentContext()}: ${(err as Error).message}`,
    );
  }
  return { client, namespace, server: cluster.server, context: kc.getCurrentContext() };
}

/** Singular, lower-case name of a kind's resource as kubectl prints it. */
export function singular(r: ResourceDef): string {
  return r.kind.toLowerCase();
}

/** Whether the API server serves resource `r` (its CRD is installed and established). */
async function served(c: Cluster, r: ResourceDef): Promise<boolean> {
  try {
    const list = await c.client.request<{ resources?: { name: string }[] }>(
      'GET',
      `/apis/${r.group}/${r.version}`,
    );
    return (list.resources ?? []).some((x) => x.name === r.plural);
  } catch (err) {
    if (err instanceof KubeApiError && err.notFound) return false;
    throw err;
  }
}

/**
 * Turns any failure of a call about resource `r` into a CliError with one clear line:
 * the CRD is missing, the object is missing, credentials refused, the server unreachable.
 */
export async function explainFailure(
  c: Cluster,
  err: unknown,
  r: ResourceDef,
  name?: string,
  namespace?: string,
): Promise<CliError> {
  if (err instanceof CliError) return err;
  if (err instanceof KubeApiError) {
    if (err.status === 404) {
      if (!(await served(c, r).catch(() => true)))
        return new CliError(
          `the Crema CRDs are not installed on this cluster (${c.server} serves no ${r.plural}.${r.group}/${r.version}); install them with the crema Helm chart or kubectl apply -f crds/`,
        );
      if (name !== undefined)
        return new CliError(
          `${singular(r)} ${JSON.stringify(name)} not found in namespace ${JSON.stringify(namespace ?? '')}`,
        );
    }
    if (err.status === 401)
      return new CliError(
        `the API server at ${c.server} refused the credentials of context ${c.context} (401 Unauthorized)`,
      );
    if (err.status === 403) return new CliError(`forbidden: ${oneLine(errorMessageOf(err))}`);
    return new CliError(`${oneLine(errorMessageOf(err))} (${err.status} ${err.reason})`);
  }
  const code =
    (err as { code?: string; cause?: { code?: string } }).code ??
    (err as { cause?: { code?: string } }).cause?.code;
  if (code || (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError')
    return new CliError(`cannot reach the API server at ${c.server} (${code ?? (err as Error).name})`);
  return new CliError(oneLine((err as Error).message ?? String(err)));
}

/** The Status message of an API error, without the method and path the client prepends. */
function errorMessageOf(err: KubeApiError): string {
  const prefix = `${err.method} ${err.path}: ${err.status} ${err.reason}: `;
  return err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/** Lists every object of `kind` in the cluster's namespace (or all), following `continue`. */
export async function listObjects<K extends Kind>(c: Cluster, kind: K): Promise<KindObjects[K][]> {
  const r = KIND_RESOURCES[kind];
  const items: KindObjects[K][] = [];
  let cont: string | undefined;
  try {
    do {
      const page = await c.client.request<KubeList<KindObjects[K]>>('GET', resourcePath(r, c.namespace), {
        query: { limit: 500, continue: cont },
      });
      items.push(...page.items);
      cont = page.metadata?.continue || undefined;
    } while (cont);
  } catch (err) {
    throw await explainFailure(c, err, r);
  }
  return items.sort(
    (a, b) =>
      (a.metadata?.namespace ?? '').localeCompare(b.metadata?.namespace ?? '') ||
      (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''),
  );
}

/** Reads one object of `kind` from the cluster's namespace. */
export async function getObject<K extends Kind>(c: Cluster, kind: K, name: string): Promise<KindObjects[K]> {
  const r = KIND_RESOURCES[kind];
  try {
    return await c.client.request<KindObjects[K]>('GET', resourcePath(r, c.namespace, name));
  } catch (err) {
    throw await explainFailure(c, err, r, name, c.namespace);
  }
}

/** Merge-patches one object of `kind` (annotations or spec fields) and returns it. */
export async function mergePatch<K extends Kind>(
  c: Cluster,
  kind: K,
  name: string,
  body: unknown,
): Promise<KindObjects[K]> {
  const r = KIND_RESOURCES[kind];
  try {
    return await c.client.request<KindObjects[K]>('PATCH', resourcePath(r, c.namespace, name), {
      contentType: 'application/merge-patch+json',
      body,
    });
  } catch (err) {
    throw await explainFailure(c, err, r, name, c.namespace);
  }
}
