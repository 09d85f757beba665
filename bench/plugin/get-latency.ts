/**
 * `npm run bench:plugin`: wall time of `kubectl crema get` on 1,000 RecommenderModels, against
 * the local control plane (etcd + kube-apiserver). Half the models are mid-canary with analysis
 * and history, half Ready, as the operator writes them. Each command runs as a process, as a
 * user runs it (the bundle, `npm run build:plugin`), BENCH_RUNS times (default 7); the same
 * list through the server's kubectl (`kubectl get rm`, printer columns) is the yardstick.
 * Prints JSON as its last line and writes bench/results/plugin.json.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestEnv } from '../../hack/testenv/environment.js';
import { bundlePlugin } from '../../hack/plugin-bundle.js';
import { installCrds } from '../../operator/src/install.js';
import {
  canaryStatus,
  createWithStatus,
  modelObject,
  readyStatus,
  runPlugin,
} from '../../operator/test/plugin-fixtures.js';
import { testClient } from '../../operator/test/helpers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MODELS = Number(process.env['BENCH_MODELS'] ?? 1000);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 7);
const NS = 'bench-plugin';

function summary(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { medianMs: Math.round(q(0.5)), minMs: Math.round(s[0]!), maxMs: Math.round(s.at(-1)!) };
}

async function main(): Promise<void> {
  const env = await startTestEnv({ redis: false, controllerManager: false, log: () => {} });
  const kubeconfig = env.kube!.kubeconfigPath;
  const client = await testClient(kubeconfig, 'crema-bench');
  try {
    await installCrds(client);
    await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: NS } } });
    const now = new Date();
    const t0 = performance.now();
    for (let i = 0; i < MODELS; i += 20)
      await Promise.all(
        Array.from({ length: Math.min(20, MODELS - i) }, (_, k) => {
          const n = i + k;
          return createWithStatus(
            client,
            modelObject(NS, `model-${String(n).padStart(4, '0')}`),
            n % 2 ? canaryStatus(now) : readyStatus(now),
          );
        }),
      );
    const createS = (performance.now() - t0) / 1000;
    const bundle = await bundlePlugin(await mkdtemp(join(tmpdir(), 'crema-bench-plugin-')));
    const crema = (...args: string[]) => runPlugin(bundle, ['--kubeconfig', kubeconfig, '-n', NS, ...args]);

    const version = await crema('version');
    const timed: Record<string, number[]> = { tree: [], json: [], one: [], version: [], kubectl: [] };
    let treeLines = 0;
    let jsonBytes = 0;
    for (let r = 0; r < RUNS; r++) {
      const tree = await crema('get', 'models');
      if (tree.code !== 0) throw new Error(tree.stderr);
      treeLines = tree.stdout.split('\n').length;
      timed['tree']!.push(tree.ms);
      const json = await crema('get', 'models', '-o', 'json');
      jsonBytes = json.stdout.length;
      if ((JSON.parse(json.stdout) as { items: unknown[] }).items.length !== MODELS)
        throw new Error('short list');
      timed['json']!.push(json.ms);
      timed['one']!.push((await crema('get', 'models', 'model-0001')).ms);
      timed['version']!.push((await crema('version')).ms);
      const k0 = performance.now();
      execFileSync(env.kube!.kubectl, ['--kubeconfig', kubeconfig, '-n', NS, 'get', 'rm'], {
        maxBuffer: 1 << 26,
      });
      timed['kubectl']!.push(performance.now() - k0);
    }
    const result = {
      models: MODELS,
      runs: RUNS,
      createSeconds: Number(createS.toFixed(1)),
      plugin: version.stdout.trim(),
      getModelsTree: { ...summary(timed['tree']!), lines: treeLines },
      getModelsJson: { ...summary(timed['json']!), bytes: jsonBytes },
      getOneModel: summary(timed['one']!),
      processStartOnly: summary(timed['version']!),
      kubectlGetRm: summary(timed['kubectl']!),
      loadAverage: (await import('node:os')).loadavg().map((x) => Number(x.toFixed(1))),
    };
    await writeFile(join(root, 'bench/results/plugin.json'), JSON.stringify(result, null, 2) + '\n');
    console.log(JSON.stringify(result));
  } finally {
    client.close();
    await env.stop();
  }
}

await main();
