/**
 * The real node (needs root): a pod of Crema's own image runs in a real container, Services work
 * through kube-proxy from the host and from a pod by DNS name, `kubectl logs` and `exec` reach
 * the container, the metrics API serves pod CPU, and the node leaves nothing behind: not after a
 * clean stop, and not after its owner was SIGKILLed (the next start reaps it).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { eventually } from '../../operator/test/helpers.js';
import { startLocalCluster, type LocalCluster } from './cluster.js';
import { BRIDGE, NODE_IP } from './node.js';

let cluster: LocalCluster | undefined;
let work: string;
const ns = 'node-test';

const kubectl = (...args: string[]) =>
  execFileSync(cluster!.kubectl, ['--kubeconfig', cluster!.kubeconfigPath, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
/** Asynchronous, for commands that reach back into this process (the artifact store serves from here). */
const kubectlAsync = async (...args: string[]) =>
  (await promisify(execFile)(cluster!.kubectl, ['--kubeconfig', cluster!.kubeconfigPath, ...args])).stdout;

/** What a node may leave on the host, for `dir`: mounts, kubelet cgroups, kube-proxy's table, the bridge. */
function leftovers(dir: string): string[] {
  const out: string[] = [];
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(dir));
  if (mounts.length) out.push(`${mounts.length} mounts under ${dir}`);
  for (const h of readdirSync('/sys/fs/cgroup')) {
    if (existsSync(join('/sys/fs/cgroup', h, 'kubepods'))) out.push(`cgroup ${h}/kubepods`);
  }
  const tables = execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' });
  if (/kube-proxy/.test(tables)) out.push('nftables table kube-proxy');
  try {
    execFileSync('ip', ['link', 'show', BRIDGE], { stdio: 'ignore' });
    out.push(`bridge ${BRIDGE}`);
  } catch {
    /* gone */
  }
  if (existsSync(dir)) out.push(`dir ${dir}`);
  return out;
}

const SYSCTLS = ['net/ipv4/ip_forward', 'vm/overcommit_memory', 'kernel/panic', 'kernel/panic_on_oops'];
const sysctls = () =>
  Object.fromEntries(SYSCTLS.map((k) => [k, readFileSync(`/proc/sys/${k}`, 'utf8').trim()]));
let before: Record<string, string>;

beforeAll(async () => {
  before = sysctls();
  work = await mkdtemp(join(tmpdir(), 'crema-node-test-'));
  await writeFile(join(work, 'hello.txt'), 'hello from the artifact store\n');
  cluster = await startLocalCluster({ artifactsDir: work, log: () => {} });
  console.log(`[node] ${JSON.stringify({ timings: { ...cluster.env.timings, ...cluster.timings } })}`);
}, 240_000);

afterAll(async () => {
  await cluster?.stop();
  await rm(work, { recursive: true, force: true });
}, 60_000);

describe('a real node', () => {
  it(
    'runs a pod of the serving image in a real container, reachable through its Service',
    { timeout: 120_000 },
    async () => {
      const manifest = join(work, 'pod.yaml');
      await writeFile(
        manifest,
        [
          { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } },
          {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: 'web', namespace: ns, labels: { app: 'web' } },
            spec: {
              securityContext: { runAsNonRoot: true, runAsUser: 65532 },
              containers: [
                {
                  name: 'serving',
                  image: 'crema/serving:0.1.0',
                  imagePullPolicy: 'Never',
                  env: [{ name: 'REDIS_URL', value: 'redis://crema-redis.crema-system.svc:6379' }],
                  ports: [{ containerPort: 8080 }],
                  readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
                  securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
                },
              ],
            },
          },
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'web', namespace: ns },
            spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] },
          },
        ]
          .map((d) => stringify(d))
          .join('---\n'),
      );
      const created = Date.now();
      kubectl('apply', '-f', manifest);
      kubectl('wait', '-n', ns, 'pod/web', '--for=condition=Ready', '--timeout=90s');
      const readyMs = Date.now() - created;
      const ip = kubectl('get', '-n', ns, 'svc/web', '-o', 'jsonpath={.spec.clusterIP}');
      // Host → ClusterIP (kube-proxy's nftables rules).
      const health = await eventually(
        async () => (await fetch(`http://${ip}/healthz`, { signal: AbortSignal.timeout(2000) })).json(),
        20_000,
        'the Service answers from the host',
      );
      expect(health).toEqual({ status: 'ok' });
      // Pod → Service and host service by name (CoreDNS; not the bare `web`, which /etc/hosts maps to
      // the pod itself, its hostname), and → the API server (the kubernetes Service).
      const inPod = await kubectlAsync(
        'exec',
        '-n',
        ns,
        'web',
        '--',
        '/usr/local/bin/node',
        '-e',
        `(async () => {
        const web = await (await fetch('http://web.node-test.svc/healthz')).text();
        const art = await (await fetch('http://crema-models.crema-system.svc/hello.txt')).text();
        const api = await fetch('https://kubernetes.default.svc/version').then((r) => r.status, (e) => String(e.cause?.code));
        const redis = await new Promise((res) => require('node:dns').lookup('crema-redis.crema-system.svc', (e, a) => res(e ? e.code : a)));
        console.log(JSON.stringify({ web, art, api, redis }));
      })()`,
      );
      expect(JSON.parse(inPod)).toEqual({
        web: '{"status":"ok"}',
        art: 'hello from the artifact store\n',
        // Reachable; TLS is refused only because this script does not trust the cluster CA.
        api: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
        redis: expect.stringMatching(/^10\.0\./),
      });
      // The container's own log, through the kubelet.
      expect(kubectl('logs', '-n', ns, 'web')).toMatch(/Server listening at http:\/\/10\.244\.0\.\d+:8080/);
      // Pod CPU from metrics-server through the aggregation layer (what the HPA reads).
      const metrics = await eventually(
        () => {
          try {
            return kubectl('get', '--raw', `/apis/metrics.k8s.io/v1beta1/namespaces/${ns}/pods/web`);
          } catch {
            return undefined;
          }
        },
        90_000,
        'pod metrics from metrics-server',
      );
      expect(JSON.parse(metrics).containers[0].usage.cpu).toMatch(/^\d+n$/);
      console.log(`[node] ${JSON.stringify({ podCreateToReadyMs: readyMs })}`);
    },
  );
});

describe('teardown and reaping', () => {
  it('a clean stop leaves nothing on the host', { timeout: 60_000 }, async () => {
    const dir = cluster!.env.dir;
    await cluster!.stop();
    cluster = undefined;
    expect(leftovers(dir)).toEqual([]);
    // The kubelet tunes the kernel (vm.overcommit_memory, kernel.panic…) and the node turns on
    // forwarding: only while it runs.
    expect(sysctls()).toEqual(before);
  });

  it('a node whose owner was SIGKILLed is cleaned up by the next start', { timeout: 240_000 }, async () => {
    // An environment with a running pod, owned by a process we then kill outright.
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'hack/testenv/cli.ts', '--node', '--no-redis'],
      {
        cwd: join(import.meta.dirname, '..', '..'),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const dir = await eventually(
      () => /kubeconfig:\s+(\S+)\/kubeconfig/.exec(out)?.[1],
      120_000,
      'testenv up',
    );
    const kc = join(dir, 'kubeconfig');
    const bin = /Try[^\n]*\n\s+(\S+kubectl)/.exec(out)?.[1];
    execFileSync(bin!, [
      '--kubeconfig',
      kc,
      'run',
      'orphan',
      '--image=crema/serving:0.1.0',
      '--image-pull-policy=Never',
    ]);
    execFileSync(bin!, ['--kubeconfig', kc, 'wait', 'pod/orphan', '--for=condition=Ready', '--timeout=90s']);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(leftovers(dir).length).toBeGreaterThan(0);
    const ps = () => execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n');
    // The pod's process runs /app/serving.js of the image's root; a bundle elsewhere on the host
    // (a benchmark's /tmp/…/app/serving.js) is not the node's.
    const podProcess = (l: string) => / \/app\/serving\.js\b/.test(l);
    expect(ps().filter(podProcess)).toHaveLength(1);
    // The next start reaps it: the pod's process, the runtime, mounts and files (the bridge,
    // rules and cgroups are the new node's own by then, checked after it stops).
    const next = await startLocalCluster({ artifactsDir: work, log: () => {} });
    try {
      expect(next.node.ip).toBe(NODE_IP);
      expect(ps().filter((l) => l.includes(dir) || podProcess(l))).toEqual([]);
      expect(existsSync(dir)).toBe(false);
      expect(leftovers(dir).filter((l) => l.includes(dir))).toEqual([]);
    } finally {
      await next.stop();
    }
    expect(leftovers(next.env.dir)).toEqual([]);
  });
});
