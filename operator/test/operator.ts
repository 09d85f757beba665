/**
 * One operator per test file, in-process, watching one fresh namespace of the real test
 * cluster: installs the CRDs, creates the namespace, starts the operator (no leader election,
 * health on a free loopback port, quiet log unless given one) and, for control-plane-only tests,
 * optionally simulates the readiness of the namespace's serving pods. `stop()` undoes all of it.
 */
import { installCrds } from '../src/install.js';
import { startOperator, type OperatorConfig, type RunningOperator } from '../src/operator.js';
import type { KubeClient } from '../src/runtime/kube.js';
import { simulatePodsReady, testClient } from './helpers.js';

/** The Redis address control-plane-only tests give the operator to render. */
export const TEST_SERVING_REDIS_URL = 'redis://crema-redis.crema-system.svc:6379';

export interface OperatorTestEnv {
  readonly client: KubeClient;
  readonly op: RunningOperator;
  stop(): Promise<void>;
}

export async function startOperatorForTest(opts: {
  kubeconfigPath: string;
  namespace: string;
  /**
   * Control plane only: mark pods labelled app.kubernetes.io/name=crema-serving Ready every
   * 500 ms (there is no kubelet to run them).
   */
  simulatePodReadiness?: boolean;
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
    // Rendered into pod specs only; no pod runs here, so nothing connects to it.
    servingRedisUrl: TEST_SERVING_REDIS_URL,
    ...opts.operator,
  });
  const kubelet = opts.simulatePodReadiness
    ? setInterval(
        () =>
          void simulatePodsReady(client, opts.namespace, 'app.kubernetes.io/name=crema-serving').catch(
            () => {},
          ),
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
