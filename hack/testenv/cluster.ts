/**
 * A local one-node cluster ready for Crema's pods: the control plane and a real node
 * (environment.ts, node.ts), Crema's images built here and imported into the node's runtime,
 * the host's redis-server and an artifact store (a directory of model files) reachable from
 * pods as crema-system/crema-redis and crema-system/crema-models, and the CRDs installed.
 * `npm start` and the node tests (`*.node.test.ts`) both start from here.
 */
import * as k8s from '@kubernetes/client-node';
import { installCrds } from '../../operator/src/install.js';
import { createKubeClient, type KubeClient } from '../../operator/src/runtime/kube.js';
import { ensureImages, type ImageSet } from '../images/build.js';
import { startTestEnv, type RedisServer, type TestEnv } from './environment.js';
import { exposeHostPort, startArtifactServer, type ArtifactServer } from './host-services.js';
import type { KubeNode } from './node.js';

/** Where pods find the host's services. */
export const CLUSTER_SERVICES = {
  namespace: 'crema-system',
  redisUrl: 'redis://crema-redis.crema-system.svc:6379',
  /** Base URL of the artifact store; a model file `x.onnx` is at `${artifactsUrl}/x.onnx`. */
  artifactsUrl: 'http://crema-models.crema-system.svc',
} as const;

export interface LocalCluster {
  readonly env: TestEnv;
  readonly node: KubeNode;
  readonly redis: RedisServer;
  readonly kubeconfigPath: string;
  /** kubectl of the cluster's version. */
  readonly kubectl: string;
  /** An admin client. */
  readonly client: KubeClient;
  readonly artifacts: ArtifactServer;
  readonly images: ImageSet;
  /** Milliseconds per phase: cluster, images, services. */
  readonly timings: Record<string, number>;
  stop(): Promise<void>;
}

/** Starts the cluster with `artifactsDir` served to pods; needs root (the node). */
export async function startLocalCluster(opts: {
  readonly artifactsDir: string;
  readonly log?: (line: string) => void;
}): Promise<LocalCluster> {
  const log = opts.log ?? ((l: string) => console.error(`[testenv] ${l}`));
  const t0 = Date.now();
  const env = await startTestEnv({ node: true, redis: true, log });
  const timings: Record<string, number> = { cluster: Date.now() - t0 };
  let artifacts: ArtifactServer | undefined;
  let client: KubeClient | undefined;
  try {
    const node = env.kube!.node!;
    const t1 = Date.now();
    const images = await ensureImages({ log });
    await node.importImages(images.archive);
    timings['images'] = Date.now() - t1;
    const t2 = Date.now();
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(env.kube!.kubeconfigPath);
    client = await createKubeClient(kc, { userAgent: 'crema-testenv' });
    await installCrds(client);
    artifacts = await startArtifactServer(opts.artifactsDir);
    const ns = CLUSTER_SERVICES.namespace;
    await exposeHostPort(client, { namespace: ns, name: 'crema-models', port: 80, hostPort: artifacts.port });
    await exposeHostPort(client, {
      namespace: ns,
      name: 'crema-redis',
      port: 6379,
      hostPort: env.redis!.port,
    });
    timings['services'] = Date.now() - t2;
    const started = { artifacts, client };
    return {
      env,
      node,
      redis: env.redis!,
      kubeconfigPath: env.kube!.kubeconfigPath,
      kubectl: env.kube!.kubectl,
      client,
      artifacts,
      images,
      timings,
      async stop() {
        await started.artifacts.close();
        started.client.close();
        await env.stop();
      },
    };
  } catch (err) {
    await artifacts?.close();
    client?.close();
    await env.stop();
    throw err;
  }
}
