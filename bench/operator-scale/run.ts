/**
 * bench/operator-scale: 1,000 RecommenderModels created at once against the local control
 * plane. Measures the time until every model has all five children applied and a current
 * status, the operator's peak RSS, API requests per reconcile (operator side and, for writes,
 * the API server's audit log), and the writes a no-op resync sends (goal 0).
 *
 *   npm run bench:operator -- [--models 1000] [--with-controller-manager]
 *
 * Without --with-controller-manager (the default) only etcd + kube-apiserver run, so the
 * number is the operator's own throughput, not kube-controller-manager's ReplicaSet churn.
 * The operator runs compiled (`tsc`, then `node dist/operator/src/main.js`), as in production.
 * Prints a JSON summary as its last line and writes bench/results/operator-scale.json.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestEnv } from '../../hack/testenv/environment.js';
import { installCrds } from '../../operator/src/install.js';
import { RESOURCES, resourcePath, type KubeList } from '../../operator/src/runtime/kube.js';
import { auditedWrites, eventually, testClient } from '../../operator/test/helpers.js';
import type { RecommenderModel } from '../../operator/src/api/v1alpha1/index.js';

const args = process.argv.slice(2);
const arg = (name: string, def: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const MODELS = arg('--models', 1000);
const WITH_KCM = args.includes('--with-controller-manager');
const RESYNC_MS = 20_000;
const NS = 'bench';
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function rssKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    return Number(
      new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0,
    );
  } catch {
    return 0;
  }
}

async function scrape(port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(crema_operator_(?:reconcile_total|api_requests)\{[^}]*\}) (\S+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}
const sumOf = (m: Record<string, number>, prefix: string) =>
  Object.entries(m)
    .filter(([k]) => k.startsWith(prefix))
    .reduce((s, [, v]) => s + v, 0);

/** CPU time (user + system) a process has used, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // After "pid (comm) ": state is field 0, utime 11, stime 12 (clock ticks, 100 per second).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function main(): Promise<void> {
  const env = await startTestEnv({ redis: false, controllerManager: WITH_KCM, log: () => {} });
  const kubeconfig = env.kube!.kubeconfigPath;
  const audit = env.kube!.auditLogPath;
  const client = await testClient(kubeconfig, 'crema-bench');
  try {
    await installCrds(client);
    await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: NS } } });

    // Measure what production runs: the compiled operator on plain node (tsx adds ~30 MB).
    execFileSync(
      process.execPath,
      [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')],
      {
        stdio: 'inherit',
      },
    );
    const startOperatorProcess = async () => {
      const child = spawn(process.execPath, [join(root, 'dist/operator/src/main.js')], {
        env: {
          ...process.env,
          KUBECONFIG: kubeconfig,
          CREMA_HEALTH_PORT: '0',
          CREMA_LEASE_NAMESPACE: 'default',
          CREMA_RESYNC_MS: String(RESYNC_MS),
          CREMA_CONCURRENCY: '8',
          // Rendered into the pods only (none runs here); without it every model is Degraded.
          CREMA_SERVING_REDIS_URL: 'redis://crema-redis.crema-system.svc:6379',
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      let failures = 0;
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        // Surface the first few reconcile failures: they explain a slow or stuck run.
        for (const line of d.toString().split('\n')) {
          if (line.includes('failed') && failures++ < 5) console.error(`[operator] ${line}`);
        }
      });
      const port = Number(
        (await eventually(
          () => /health and metrics on :(\d+)/.exec(out)?.[1],
          60_000,
          'operator started',
        )) as string,
      );
      await eventually(() => out.includes('became leader'), 30_000, 'operator leads');
      return { op: child, port };
    };
    const { op, port } = await startOperatorProcess();
    const rssIdleKiB = rssKiB(op.pid!, 'VmRSS');
    const m0 = await scrape(port);

    // Create all models at once (50 requests in flight).
    const t0 = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        while (next < MODELS) {
          const i = next++;
          await client.request('POST', resourcePath(RESOURCES.recommenderModel, NS), {
            body: {
              apiVersion: 'crema.dev/v1alpha1',
              kind: 'RecommenderModel',
              metadata: { name: `model-${i}`, namespace: NS },
              spec: {
                model: {
                  uri: `file:///models/m${i}.onnx`,
                  sha256: i.toString(16).padStart(64, '0'),
                  task: 'drink-ranking',
                },
              },
            },
          });
        }
      }),
    );
    const createdMs = Date.now() - t0;
    let peakRssKiB = 0;
    const sampler = setInterval(() => (peakRssKiB = Math.max(peakRssKiB, rssKiB(op.pid!, 'VmRSS'))), 200);

    // "Ready (children applied)": status is current for this generation and reports every child
    // applied without error (Degraded=False). Pod readiness needs a kubelet, which no local
    // control plane has; the integration tests cover Ready=True with a kubelet stand-in.
    let lastProgress = 0;
    const applied = (m: RecommenderModel) =>
      m.status?.observedGeneration === m.metadata?.generation &&
      (m.status?.conditions ?? []).some((c) => c.type === 'Degraded' && c.status === 'False');
    await eventually(
      async () => {
        const list = await client.request<KubeList<RecommenderModel>>(
          'GET',
          resourcePath(RESOURCES.recommenderModel, NS),
        );
        const done = list.items.filter(applied).length;
        if (Date.now() - lastProgress > 5000) {
          lastProgress = Date.now();
          console.error(
            `[bench] ${((Date.now() - t0) / 1000).toFixed(0)} s: ${done}/${MODELS} applied, operator RSS ${(rssKiB(op.pid!, 'VmRSS') / 1024).toFixed(0)} MB`,
          );
        }
        return list.items.length === MODELS && done === MODELS;
      },
      600_000,
      'all models applied',
    );
    const allAppliedMs = Date.now() - t0;
    // Children really exist: count Deployments.
    const deployments = await client.request<KubeList<unknown>>(
      'GET',
      resourcePath(RESOURCES.deployment, NS),
    );
    clearInterval(sampler);

    const m1 = await scrape(port);
    const reconciles =
      sumOf(m1, 'crema_operator_reconcile_total') - sumOf(m0, 'crema_operator_reconcile_total');
    const apiRequests = sumOf(m1, 'crema_operator_api_requests') - sumOf(m0, 'crema_operator_api_requests');
    const serverWrites = (await auditedWrites(audit, 'crema-operator', NS)).length;

    // No-op resync: wait for quiet, then count writes over one and a half resync periods.
    await new Promise((r) => setTimeout(r, 3000));
    const writesBefore = (await auditedWrites(audit, 'crema-operator', NS)).length;
    const recBefore = sumOf(await scrape(port), 'crema_operator_reconcile_total');
    await new Promise((r) => setTimeout(r, RESYNC_MS * 1.5));
    const resyncReconciles = sumOf(await scrape(port), 'crema_operator_reconcile_total') - recBefore;
    const resyncWrites = (await auditedWrites(audit, 'crema-operator', NS)).length - writesBefore;
    const peakHwmKiB = rssKiB(op.pid!, 'VmHWM');

    op.kill('SIGTERM');
    await new Promise((r) => op.once('exit', r));

    // Restart: the new operator fills its cache from lists (not watch events), reconciles every
    // model once and then resyncs; none of it should write. CPU from /proc (user + system).
    const restartWritesBefore = (await auditedWrites(audit, 'crema-operator', NS)).length;
    const restarted = await startOperatorProcess();
    const cpu0 = cpuSeconds(restarted.op.pid!);
    const r0 = sumOf(await scrape(restarted.port), 'crema_operator_reconcile_total');
    await eventually(
      async () => sumOf(await scrape(restarted.port), 'crema_operator_reconcile_total') - r0 >= MODELS,
      300_000,
      'the restarted operator reconciled every model',
    );
    const firstPassCpuSeconds = cpuSeconds(restarted.op.pid!) - cpu0;
    const firstPassReconciles = sumOf(await scrape(restarted.port), 'crema_operator_reconcile_total') - r0;
    await new Promise((r) => setTimeout(r, RESYNC_MS * 1.5));
    const restartReconciles = sumOf(await scrape(restarted.port), 'crema_operator_reconcile_total') - r0;
    const restartWrites = (await auditedWrites(audit, 'crema-operator', NS)).length - restartWritesBefore;
    restarted.op.kill('SIGTERM');
    await new Promise((r) => restarted.op.once('exit', r));

    const summary = {
      benchmark: 'operator-scale',
      models: MODELS,
      controllerManager: WITH_KCM,
      createSeconds: +(createdMs / 1000).toFixed(1),
      allAppliedSeconds: +(allAppliedMs / 1000).toFixed(1),
      goalSeconds: 60,
      deployments: (deployments as { items: unknown[] }).items.length,
      operatorPeakRssMB: +(Math.max(peakRssKiB, peakHwmKiB) / 1024).toFixed(0),
      operatorIdleRssMB: +(rssIdleKiB / 1024).toFixed(0),
      goalRssMB: 300,
      reconciles,
      apiRequestsPerReconcile: +(apiRequests / reconciles).toFixed(2),
      serverSideWritesPerModel: +(serverWrites / MODELS).toFixed(2),
      noopResync: { reconciles: resyncReconciles, writes: resyncWrites, goalWrites: 0 },
      afterRestart: {
        reconciles: restartReconciles,
        writes: restartWrites,
        goalWrites: 0,
        firstPassCpuMsPerReconcile: +((firstPassCpuSeconds * 1000) / firstPassReconciles).toFixed(2),
      },
      machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
    };
    await mkdir(join(root, 'bench/results'), { recursive: true });
    await writeFile(join(root, 'bench/results/operator-scale.json'), JSON.stringify(summary, null, 2) + '\n');
    console.log(JSON.stringify(summary));
  } finally {
    client.close();
    await env.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
