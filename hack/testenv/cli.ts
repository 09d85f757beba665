/**
 * `npm run testenv`: starts the local control plane and Redis, prints how to reach them, and
 * keeps them running until Ctrl-C. `npm run testenv -- --build-only` just builds or verifies
 * the cached binaries (CI uses it to time that phase).
 */
import { ensureBinaries } from './binaries.js';
import { startTestEnv } from './environment.js';
import { ensureHelm, prometheusOperatorCrds } from './helm.js';
import { ensureImages } from '../images/build.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log(`usage: npm run testenv [-- --build-only | --rebuild | --no-redis | --node]

Starts etcd, kube-apiserver, kube-controller-manager and redis-server on free loopback ports,
prints the kubeconfig path and waits for Ctrl-C, then stops everything and removes its files.
  --build-only   build (or verify) the cached binaries (and helm) and exit
  --rebuild      rebuild the binaries even when the cache is valid
  --no-redis     do not start redis-server
  --node         also start a real node (root only): containerd, kubelet, kube-proxy,
                 kube-scheduler, CoreDNS, metrics-server; Crema's images are imported`);
    return;
  }
  if (args.includes('--build-only') || args.includes('--rebuild')) {
    const t0 = Date.now();
    const bin = await ensureBinaries({ forceRebuild: args.includes('--rebuild') });
    console.log(
      `${bin.built ? 'built' : 'cache valid'}: ${bin.dir} (${((Date.now() - t0) / 1000).toFixed(1)} s)`,
    );
    // The Helm CLI the chart tests use (hack/testenv/helm.ts), built and cached the same way.
    const t1 = Date.now();
    const helm = await ensureHelm({ forceRebuild: args.includes('--rebuild') });
    console.log(
      `${helm.built ? 'built' : 'cache valid'}: ${helm.helm} ${helm.version} (${((Date.now() - t1) / 1000).toFixed(1)} s)`,
    );
    // And the prometheus-operator CRDs the chart's tests install (module cache, hash pinned).
    console.log(`prometheus-operator CRDs: ${(await prometheusOperatorCrds()).length} files`);
    if (args.includes('--build-only')) return;
  }
  const withNode = args.includes('--node');
  const env = await startTestEnv({ redis: !args.includes('--no-redis'), node: withNode });
  if (env.kube?.node) {
    const images = await ensureImages();
    await env.kube.node.importImages(images.archive);
    console.log(`imported ${images.images.map((i) => i.ref).join(', ')}`);
  }
  const kc = env.kube!.kubeconfigPath;
  console.log(`
Local Crema test environment is up (ready in ${(env.timings['total']! / 1000).toFixed(1)} s).
  API server:  ${env.kube!.server}
  node:        ${env.kube!.node ? `${env.kube!.node.name} at ${env.kube!.node.ip}` : '(none: pods stay Pending)'}
  kubeconfig:  ${kc}
  Redis:       ${env.redis?.url ?? '(not started)'}
  logs:        ${env.dir}/*.log

Try (kubectl of the same version as the server):
  ${env.kube!.kubectl} --kubeconfig ${kc} get ns
  export KUBECONFIG=${kc}; kubectl get ns

Press Ctrl-C to stop everything.`);
  // Signal handlers in process.ts stop the environment and exit.
  setInterval(() => {}, 1 << 30);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
