import { defineConfig } from 'vitest/config';

// CREMA_TESTENV_NODE=0 leaves the node tests out (they need root); CI runs them.
const withNode = process.env['CREMA_TESTENV_NODE'] !== '0';

// Three projects: `unit` runs fast tests with no external processes; `integration` gets a real
// kube-apiserver + etcd + kube-controller-manager and a real redis-server from the global setup;
// `node` (root) runs Crema's pods on a real node, one cluster per test file (hack/testenv/cluster.ts).
export default defineConfig({
  test: {
    reporters: ['default', './hack/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['{operator,serving,feature-jobs,manifests,hack,contracts,crds}/**/*.test.ts'],
          exclude: ['**/*.int.test.ts', '**/*.node.test.ts', '**/node_modules/**'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['{operator,serving,feature-jobs,manifests,hack,contracts,crds}/**/*.int.test.ts'],
          exclude: ['**/node_modules/**'],
          globalSetup: ['hack/testenv/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 180_000,
          // The integration suites share one control plane and one Redis; running files in
          // parallel on 2 cores makes timing-sensitive watch tests flaky.
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'node',
          include: withNode
            ? ['{operator,serving,feature-jobs,manifests,hack,contracts,crds}/**/*.node.test.ts']
            : [],
          exclude: ['**/node_modules/**'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          // One node per machine: the files run one after another, each with its own cluster.
          fileParallelism: false,
        },
      },
    ],
  },
});
