/**
 * Starts a real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager), on
 * request a real node (node.ts: containerd, kubelet, kube-proxy, kube-scheduler, CoreDNS,
 * metrics-server), and a real redis-server, for tests and for `npm start` without a cluster.
 * Everything lives in one temp dir that is removed on stop, on SIGINT/SIGTERM, and by the next
 * run if this process was killed outright.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ensureBinaries, TestEnvError, type TestEnvBinaries } from './binaries.js';
import { ensureDebianPackages, which } from './debian.js';
import {
  NODE_IP,
  NODE_MARKER,
  claimNode,
  cleanupNode,
  setupHostNetwork,
  startNode,
  type KubeNode,
} from './node.js';
import { generateTestPki, issueCertificate, type TestPki } from './pki.js';
import {
  ManagedProcess,
  TEMP_PREFIX,
  claimDir,
  probeHttp,
  reapAbandoned,
  registerCleanup,
  startWithPortRetry,
  waitReady,
} from './process.js';

type Log = (line: string) => void;

/** What to start. Everything defaults to on. */
export interface TestEnvOptions {
  /** Start etcd + kube-apiserver. Default true. */
  readonly kube?: boolean;
  /** Also start kube-controller-manager (garbage collection, Deployment → ReplicaSet). Default true. */
  readonly controllerManager?: boolean;
  /** Start redis-server. Default true. */
  readonly redis?: boolean;
  /** Progress lines; default writes to stderr. */
  readonly log?: Log;
  /** Seconds to wait for kube-apiserver /readyz. Default 90 (2 cores can be slow under load). */
  readonly readyTimeoutSeconds?: number;
  /**
   * Also start a real node (needs root; one per machine). The API server then listens on all
   * addresses and advertises the node IP, so pods reach it through the `kubernetes` Service.
   * Default false.
   */
  readonly node?: boolean;
}

/** A running control plane. */
export interface KubeControlPlane {
  /** https://127.0.0.1:PORT */
  readonly server: string;
  /** Path of an admin kubeconfig (client certificate in group system:masters). */
  readonly kubeconfigPath: string;
  /** The same kubeconfig as YAML text. */
  readonly kubeconfig: string;
  readonly pki: TestPki;
  readonly etcdUrl: string;
  /** A kubectl built from the same Kubernetes version as the server. */
  readonly kubectl: string;
  /** JSON-lines audit log of every write request (metadata level). */
  readonly auditLogPath: string;
  /** The real node, when requested. */
  readonly node?: KubeNode;
}

/** A running redis-server. */
export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** Stops the server (to test outages); `start()` brings it back on the same port with no data. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** A running test environment. `stop()` is idempotent. */
export interface TestEnv {
  readonly dir: string;
  readonly kube?: KubeControlPlane;
  readonly redis?: RedisServer;
  /** Milliseconds from call to everything ready, per component. */
  readonly timings: Record<string, number>;
  /** Resident memory (KiB) of each started process right now. */
  memoryKiB(): Record<string, number>;
  stop(): Promise<void>;
}

function defaultLog(line: string) {
  console.error(`[testenv] ${line}`);
}

function probeRedis(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    sock.setTimeout(1000);
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.once('data', (d) => {
      resolve(d.toString().startsWith('+PONG'));
      sock.destroy();
    });
    sock.once('error', () => resolve(false));
    sock.once('timeout', () => {
      resolve(false);
      sock.destroy();
    });
  });
}

/** Builds an admin kubeconfig that embeds the CA and client certificate. */
export function buildKubeconfig(server: string, pki: TestPki, name = 'crema-testenv'): string {
  return kubeconfigFor(server, pki.caCert, { cert: pki.adminCert, key: pki.adminKey }, 'admin', name);
}

/** A kubeconfig for `server` that authenticates `user` with a client certificate (embedded). */
export function kubeconfigFor(
  server: string,
  caCert: string,
  client: { readonly cert: string; readonly key: string },
  user: string,
  name = 'crema-testenv',
): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: { server, 'certificate-authority-data': b64(caCert) } }],
    users: [
      {
        name: user,
        user: { 'client-certificate-data': b64(client.cert), 'client-key-data': b64(client.key) },
      },
    ],
    contexts: [{ name, context: { cluster: name, user, namespace: 'default' } }],
    'current-context': name,
  });
}

async function startEtcd(bin: TestEnvBinaries, dir: string): Promise<{ proc: ManagedProcess; url: string }> {
  return startWithPortRetry(2, async ([client, peer]) => {
    const url = `http://127.0.0.1:${client}`;
    const dataDir = join(dir, `etcd-data-${client}`);
    const proc = new ManagedProcess(
      'etcd',
      bin.etcd,
      [
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${url}`,
        `--advertise-client-urls=${url}`,
        `--listen-peer-urls=http://127.0.0.1:${peer}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
        `--initial-cluster=default=http://127.0.0.1:${peer}`,
        '--unsafe-no-fsync',
        '--quota-backend-bytes=4294967296',
        '--log-level=warn',
      ],
      dir,
    );
    await waitReady(proc, () => probeHttp(`${url}/health`), 30_000, 'healthy');
    return { proc, url };
  });
}

/** API server flags of a cluster with a node: reachable from pods, Node authorizer, aggregation layer. */
function nodeModeFlags(dir: string): string[] {
  const f = (n: string) => join(dir, n);
  return [
    '--bind-address=0.0.0.0',
    `--advertise-address=${NODE_IP}`,
    '--authorization-mode=Node,RBAC',
    '--enable-admission-plugins=NodeRestriction',
    `--kubelet-client-certificate=${f('apiserver-kubelet-client.crt')}`,
    `--kubelet-client-key=${f('apiserver-kubelet-client.key')}`,
    `--kubelet-certificate-authority=${f('ca.crt')}`,
    '--kubelet-preferred-address-types=InternalIP',
    `--requestheader-client-ca-file=${f('ca.crt')}`,
    '--requestheader-allowed-names=front-proxy-client',
    '--requestheader-username-headers=X-Remote-User',
    '--requestheader-group-headers=X-Remote-Group',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-',
    `--proxy-client-cert-file=${f('front-proxy-client.crt')}`,
    `--proxy-client-key-file=${f('front-proxy-client.key')}`,
    // Aggregated APIs (metrics-server) are reached at their endpoints, not through a ClusterIP.
    '--enable-aggregator-routing=true',
  ];
}

async function startApiserver(
  bin: TestEnvBinaries,
  dir: string,
  etcdUrl: string,
  pki: TestPki,
  readyTimeoutMs: number,
  withNode: boolean,
): Promise<{ proc: ManagedProcess; server: string }> {
  const f = (n: string) => join(dir, n);
  return startWithPortRetry(1, async ([port]) => {
    const server = `https://127.0.0.1:${port}`;
    const proc = new ManagedProcess(
      'kube-apiserver',
      bin.kubeApiserver,
      [
        `--etcd-servers=${etcdUrl}`,
        `--etcd-prefix=/crema-${port}`,
        `--cert-dir=${f('apiserver-certs')}`,
        `--tls-cert-file=${f('serving.crt')}`,
        `--tls-private-key-file=${f('serving.key')}`,
        `--client-ca-file=${f('ca.crt')}`,
        `--secure-port=${port}`,
        ...(withNode
          ? nodeModeFlags(dir)
          : ['--bind-address=127.0.0.1', '--advertise-address=127.0.0.1', '--authorization-mode=RBAC']),
        // /16: a /24 runs out at 253 Services, and the scale benchmark makes 1,000.
        '--service-cluster-ip-range=10.0.0.0/16',
        '--allow-privileged=true',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${f('sa.pub')}`,
        `--service-account-signing-key-file=${f('sa.key')}`,
        '--enable-priority-and-fairness=false',
        // Every write is audited (metadata only), so tests can count who wrote what from the
        // server's side rather than trusting a client's own report.
        `--audit-policy-file=${f('audit-policy.yaml')}`,
        `--audit-log-path=${f('audit.log')}`,
        '--audit-log-format=json',
        '--audit-log-mode=blocking',
        '--v=1',
      ],
      dir,
    );
    const tls = { ca: pki.caCert, cert: pki.adminCert, key: pki.adminKey };
    await waitReady(proc, () => probeHttp(`${server}/readyz`, tls), readyTimeoutMs, 'ready (/readyz)');
    return { proc, server };
  });
}

async function startControllerManager(bin: TestEnvBinaries, dir: string): Promise<ManagedProcess> {
  const f = (n: string) => join(dir, n);
  return startWithPortRetry(1, async ([port]) => {
    const proc = new ManagedProcess(
      'kube-controller-manager',
      bin.kubeControllerManager,
      [
        `--kubeconfig=${f('kubeconfig')}`,
        `--authentication-kubeconfig=${f('kubeconfig')}`,
        `--authorization-kubeconfig=${f('kubeconfig')}`,
        '--leader-elect=false',
        `--secure-port=${port}`,
        '--bind-address=127.0.0.1',
        `--cert-dir=${f('kcm-certs')}`,
        `--service-account-private-key-file=${f('sa.key')}`,
        `--root-ca-file=${f('ca.crt')}`,
        '--use-service-account-credentials=false',
        '--controllers=*',
        '--concurrent-gc-syncs=5',
        // The HPA looks at metrics every 5 s (default 15): scale-up tests wait less for it.
        '--horizontal-pod-autoscaler-sync-period=5s',
        '--v=1',
      ],
      dir,
    );
    // Its serving certificate is self-signed on the fly; /healthz is readable without credentials.
    const healthz = `https://127.0.0.1:${port}/healthz`;
    await waitReady(proc, () => probeHttp(healthz, { rejectUnauthorized: false }), 60_000, 'healthy');
    return proc;
  });
}

/**
 * Starts a redis-server with persistence off; it can be stopped and restarted on the same port.
 * `bind`: addresses to listen on (default loopback; a node's IP too so pods reach it).
 */
export async function startRedis(
  dir: string,
  log: Log = defaultLog,
  pickPort?: () => Promise<number>,
  bind: readonly string[] = ['127.0.0.1'],
): Promise<{ redis: RedisServer; procs: () => ManagedProcess[] }> {
  await ensureDebianPackages([{ command: 'redis-server', pkg: 'redis-server' }], log, 'Redis');
  const bin = which('redis-server');
  if (!bin) throw new TestEnvError('redis-server not found on PATH after installing it');
  let proc: ManagedProcess | undefined;
  const launch = async (port: number) => {
    const p = new ManagedProcess(
      'redis-server',
      bin,
      [
        '--port',
        String(port),
        '--bind',
        ...bind,
        '--protected-mode',
        'no',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        '--daemonize',
        'no',
        '--loglevel',
        'warning',
      ],
      dir,
    );
    await waitReady(p, () => probeRedis(port), 15_000, 'answering PING');
    return p;
  };
  const port = await startWithPortRetry(
    1,
    async ([p]) => {
      proc = await launch(p!);
      return p!;
    },
    pickPort ? { pickPort } : {},
  );
  log(`redis-server on 127.0.0.1:${port}`);
  const redis: RedisServer = {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      await proc?.stop();
    },
    async start() {
      if (proc?.running) return;
      proc = await launch(port);
    },
  };
  return { redis, procs: () => (proc ? [proc] : []) };
}

const AUDIT_POLICY = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # Status writes of models with their body: the chaos tests find a transition's first write.
  - level: Request
    verbs: [patch, update]
    resources:
      - group: crema.dev
        resources: [recommendermodels/status]
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
`;

async function writePki(dir: string, pki: TestPki): Promise<void> {
  const files: Record<string, string> = {
    'ca.crt': pki.caCert,
    'serving.crt': pki.servingCert,
    'serving.key': pki.servingKey,
    'sa.pub': pki.serviceAccountPublicKey,
    'sa.key': pki.serviceAccountPrivateKey,
    'audit-policy.yaml': AUDIT_POLICY,
  };
  await Promise.all(Object.entries(files).map(([n, c]) => writeFile(join(dir, n), c, { mode: 0o600 })));
}

function rssKiB(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * Starts the requested parts and resolves when all are ready. On any failure everything that
 * was started is stopped again before the error propagates.
 */
export async function startTestEnv(opts: TestEnvOptions = {}): Promise<TestEnv> {
  const log = opts.log ?? defaultLog;
  const wantKube = opts.kube ?? true;
  const wantNode = wantKube && (opts.node ?? false);
  const wantKcm = wantKube && (wantNode || (opts.controllerManager ?? true));
  const wantRedis = opts.redis ?? true;
  reapAbandoned(log, cleanupNode);

  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const binaries = wantKube ? await ensureBinaries({ log }) : undefined;
  timings['binaries'] = Date.now() - t0;

  const dir = await mkdtemp(join(tmpdir(), TEMP_PREFIX));
  claimDir(dir);
  const procs: ManagedProcess[] = [];
  let redisProcs: () => ManagedProcess[] = () => [];
  let nodeProcs: ManagedProcess[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    unregister();
    // The node first (kubelet before the runtime, then everything it left on the host), then
    // clients of etcd all at once (a sequential stop takes long enough for a parent like npm to
    // give up and SIGKILL us); etcd last so the API server can shut down cleanly.
    if (existsSync(join(dir, NODE_MARKER))) {
      await Promise.all(nodeProcs.filter((p) => p.name !== 'containerd').map((p) => p.stop(5000)));
      cleanupNode(dir, log);
      await Promise.all(nodeProcs.map((p) => p.stop(5000)));
    }
    const etcd = procs.filter((p) => p.name === 'etcd');
    await Promise.all([...redisProcs(), ...procs].filter((p) => p.name !== 'etcd').map((p) => p.stop(5000)));
    await Promise.all(etcd.map((p) => p.stop(5000)));
    await rm(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup({
    stop,
    stopNow() {
      for (const p of [...nodeProcs, ...redisProcs(), ...procs]) p.killNow();
      if (existsSync(join(dir, NODE_MARKER))) cleanupNode(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  });

  try {
    let kube: KubeControlPlane | undefined;
    let redis: RedisServer | undefined;
    if (wantNode) {
      await claimNode(dir, log);
      setupHostNetwork(log);
    }
    const startRedisPart = async () => {
      const r = await startRedis(dir, log, undefined, wantNode ? ['127.0.0.1', NODE_IP] : ['127.0.0.1']);
      redisProcs = r.procs;
      redis = r.redis;
      timings['redis'] = Date.now() - t0;
    };
    const startKubePart = async (bin: TestEnvBinaries) => {
      const pki = await generateTestPki(7, wantNode ? [NODE_IP] : []);
      await writePki(dir, pki);
      if (wantNode) await writeNodeModePki(dir, pki);
      const tEtcd = Date.now();
      const etcd = await startEtcd(bin, dir);
      procs.push(etcd.proc);
      timings['etcd'] = Date.now() - tEtcd;
      const tApi = Date.now();
      const api = await startApiserver(
        bin,
        dir,
        etcd.url,
        pki,
        (opts.readyTimeoutSeconds ?? 90) * 1000,
        wantNode,
      );
      procs.push(api.proc);
      timings['kubeApiserver'] = Date.now() - tApi;
      const kubeconfig = buildKubeconfig(api.server, pki);
      const kubeconfigPath = join(dir, 'kubeconfig');
      await writeFile(kubeconfigPath, kubeconfig, { mode: 0o600 });
      if (wantKcm) {
        const tKcm = Date.now();
        procs.push(await startControllerManager(bin, dir));
        timings['kubeControllerManager'] = Date.now() - tKcm;
      }
      let node: KubeNode | undefined;
      if (wantNode) {
        try {
          const started = await startNode({
            dir,
            bin,
            pki,
            server: api.server.replace('127.0.0.1', NODE_IP),
            adminKubeconfigPath: kubeconfigPath,
            log,
            timings,
          });
          nodeProcs = started.procs;
          node = started.node;
        } catch (err) {
          nodeProcs = (err as { nodeProcs?: ManagedProcess[] }).nodeProcs ?? [];
          throw err;
        }
      }
      kube = {
        server: api.server,
        kubeconfigPath,
        kubeconfig,
        pki,
        etcdUrl: etcd.url,
        kubectl: bin.kubectl,
        auditLogPath: join(dir, 'audit.log'),
        ...(node ? { node } : {}),
      };
      log(`kube-apiserver ready at ${api.server} (kubeconfig ${kubeconfigPath})`);
    };
    // Both parts start concurrently; wait for both to settle so nothing is left half-started.
    const results = await Promise.allSettled([
      wantRedis ? startRedisPart() : Promise.resolve(),
      binaries ? startKubePart(binaries) : Promise.resolve(),
    ]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    timings['total'] = Date.now() - t0;
    return {
      dir,
      kube,
      redis,
      timings,
      memoryKiB: () =>
        Object.fromEntries(
          [...procs, ...nodeProcs, ...redisProcs()].map((p) => [p.name, rssKiB(p.child.pid)]),
        ),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The API server's client certificates for the kubelet API and for the aggregation layer. */
async function writeNodeModePki(dir: string, pki: TestPki): Promise<void> {
  const kubeletClient = await issueCertificate(
    pki,
    'CN=kube-apiserver-kubelet-client, O=system:masters',
    'client',
  );
  const frontProxy = await issueCertificate(pki, 'CN=front-proxy-client', 'client');
  const files: Record<string, string> = {
    'apiserver-kubelet-client.crt': kubeletClient.cert,
    'apiserver-kubelet-client.key': kubeletClient.key,
    'front-proxy-client.crt': frontProxy.cert,
    'front-proxy-client.key': frontProxy.key,
  };
  await Promise.all(Object.entries(files).map(([n, c]) => writeFile(join(dir, n), c, { mode: 0o600 })));
}
