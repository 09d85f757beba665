/**
 * One operator per test file, in-process, watching one fresh namespace of the real test
 * cluster: installs the CRDs, creates the namespace, starts the operator (no leader election,
 * health on a free loopback port, quiet log unless given one) and optionally a kubelet
 * stand-in that marks the namespace's serving pods Ready. `stop()` undoes all of it.
 */
import { installCrds } from '../install.js';
import { startOperator, type OperatorConfig, type RunningOperator } from '../operator.js';
import type { KubeClient } from '../runtime/kube.js';
import { markPodsReady, testClient } from './helpers.js';

export interface OperatorTestEnv {
  readonly client: KubeClient;
  readonly op: RunningOperator;
  stop(): Promise<void>;
}

export async function startOperatorForTest(opts: {
  kubeconfigPath: string;
  namespace: string;
  /** Mark pods labelled app.kubernetes.io/name=crema-serving Ready every 500 ms. */
  kubeletStandIn?: boolean;
  operator?: Partial<OperatorConfig>;
}): Promise<OperatorTestEnv> {
  const client = await testClient(opts.kubeconfigPath);
  await installCrds(client);
  await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: opts.namespace } } });
  const op = await startOperator({
    kubeconfigPath: opts.kubeconfigPath,
    namespace: opts.namespace,
    healthPort: 0,
    healthHost: '127.0.0.1',
    leaderElection: false,
    log: () => {},
    ...opts.operator,
  });
  const kubelet = opts.kubeletStandIn
    ? setInterval(
        () =>
          void markPodsReady(client, opts.namespace, 'app.kubernetes.io/name=crema-serving').catch(() => {}),
        500,
      )
    : undefined;
  return {
    client,
    op,
    async stop() {
      clearInterval(kubelet);
      await op.stop();
      await client.request('DELETE', `/api/v1/namespaces/${opts.namespace}`).catch(() => {});
      client.close();
    },
  };
}
