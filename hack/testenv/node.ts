/**
 * A real one-node cluster on this machine: containerd + runc (Debian), the CNI bridge plugin
 * (Debian), and kubelet, kube-proxy (nftables mode), kube-scheduler, CoreDNS and metrics-server
 * built from the Go module proxy. Pods run in real containers on a bridge of their own; Services
 * work through kube-proxy; names resolve through CoreDNS at the cluster DNS address; the HPA
 * reads CPU from metrics-server through the aggregation layer.
 *
 * Every component authenticates with its own certificate from the environment's CA (the kubelet
 * as system:node:NAME under the Node authorizer, kube-proxy as system:kube-proxy, …), so RBAC is
 * what a kubeadm cluster has. Host-wide things (the bridge, kube-proxy's nftables table, kubelet's
 * cgroups, ports 10250 and 53 on the node IP) make this one node per machine: a lock file says
 * which environment owns it, and a node whose owner died is cleaned up by the next start.
 *
 * Requires root (containers, mounts, network). See docs/testenv.md.
 */
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
  type Dirent,
} from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { writeImage, writeLayer, writeLayoutArchive } from '../images/oci.js';
import { TestEnvError, type TestEnvBinaries } from './binaries.js';
import { ensureDebianPackages, isRoot, which, type Requirement } from './debian.js';
import { issueCertificate, type TestPki } from './pki.js';
import { ManagedProcess, freePort, isAlive, probeHttp, waitReady } from './process.js';
import { kubeconfigFor } from './environment.js';

type Log = (line: string) => void;

export const NODE_NAME = 'crema-node';
/** The bridge's address: the node's InternalIP, the pods' gateway, where host-side services listen. */
export const NODE_IP = '10.244.0.1';
export const POD_SUBNET = '10.244.0.0/24';
export const BRIDGE = 'crema0';
/** kube-dns's ClusterIP (inside the API server's --service-cluster-ip-range 10.0.0.0/16). */
export const CLUSTER_DNS_IP = '10.0.0.10';
export const CLUSTER_DOMAIN = 'cluster.local';
/** The sandbox image the runtime uses for every pod (built here from Kubernetes' pause.c). */
export const PAUSE_IMAGE = 'crema.local/pause:testenv';
const KUBELET_PORT = 10250;
const LOCK_FILE = '/run/crema-testenv-node.json';
/** Marker in an environment dir whose node must be cleaned up before the dir is removed. */
export const NODE_MARKER = 'node.json';

/** Debian packages the node runs. */
export const NODE_REQUIREMENTS: readonly Requirement[] = [
  { command: 'containerd', pkg: 'containerd' },
  { command: 'ctr', pkg: 'containerd' },
  { command: 'runc', pkg: 'runc' },
  { command: '/usr/lib/cni/bridge', pkg: 'containernetworking-plugins' },
  { command: '/usr/lib/cni/host-local', pkg: 'containernetworking-plugins' },
  { command: '/usr/lib/cni/loopback', pkg: 'containernetworking-plugins' },
  { command: 'nft', pkg: 'nftables' },
  { command: 'conntrack', pkg: 'conntrack' },
  { command: 'ip', pkg: 'iproute2' },
];

/** A running node. */
export interface KubeNode {
  readonly name: string;
  readonly ip: string;
  /** containerd's socket (CRI and `ctr --address`). */
  readonly containerdSocket: string;
  /** Imports an OCI image-layout archive into the runtime's Kubernetes namespace. */
  importImages(archive: string): Promise<void>;
  /** Runs `ctr` against this node's containerd in the k8s.io namespace. */
  ctr(args: readonly string[]): string;
}

/** What the node needs from the control plane started before it. */
export interface NodeContext {
  readonly dir: string;
  readonly bin: TestEnvBinaries;
  readonly pki: TestPki;
  /** https://NODE_IP:PORT — the address pods and node components use. */
  readonly server: string;
  readonly adminKubeconfigPath: string;
  readonly log: Log;
  readonly timings: Record<string, number>;
}

function sh(cmd: string, args: readonly string[], opts: { input?: string } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], ...opts });
}

function trySh(cmd: string, args: readonly string[]): boolean {
  try {
    sh(cmd, args);
    return true;
  } catch {
    return false;
  }
}

/**
 * Checks that a node can run here (root; installs missing Debian packages) and takes the
 * machine-wide node lock for `dir`. A lock left by a dead owner is cleaned up first.
 */
export async function claimNode(dir: string, log: Log): Promise<void> {
  if (!isRoot()) {
    throw new TestEnvError(
      'the real node (kubelet, containerd, pod networking) needs root. Run as root (sudo -E npm start / ' +
        'sudo -E npm test), or set CREMA_TESTENV_NODE=0 to run without a node (control-plane-only tests).',
    );
  }
  await ensureDebianPackages(NODE_REQUIREMENTS, log, 'the real node');
  if (existsSync(LOCK_FILE)) {
    let owner: { pid: number; dir: string } | undefined;
    try {
      owner = JSON.parse(readFileSync(LOCK_FILE, 'utf8')) as { pid: number; dir: string };
    } catch {
      owner = undefined;
    }
    if (owner && isAlive(owner.pid) && existsSync(owner.dir)) {
      throw new TestEnvError(
        `another Crema test node is running on this machine (pid ${owner.pid}, ${owner.dir}); ` +
          'one node per machine: stop it first (Ctrl-C, or kill that process)',
      );
    }
    if (owner?.dir) {
      log(`cleaning up the node of a dead environment (${owner.dir})`);
      cleanupNode(owner.dir, log);
      rmSync(owner.dir, { recursive: true, force: true });
    }
  }
  writeFileSync(LOCK_FILE, JSON.stringify({ pid: process.pid, dir }));
  // The host's kernel settings the node changes (setupHostNetwork, and the kubelet's own kernel
  // tunables), recorded so teardown puts them back.
  writeFileSync(
    join(dir, NODE_MARKER),
    JSON.stringify({ bridge: BRIDGE, ip: NODE_IP, sysctls: readSysctls() }),
  );
}

/** Kernel settings a node changes: forwarding and bridge netfilter here, the rest by the kubelet. */
const SYSCTLS = [
  'net/ipv4/ip_forward',
  'net/bridge/bridge-nf-call-iptables',
  'vm/overcommit_memory',
  'kernel/panic',
  'kernel/panic_on_oops',
] as const;

function readSysctls(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of SYSCTLS) {
    try {
      out[k] = readFileSync(`/proc/sys/${k}`, 'utf8').trim();
    } catch {
      /* not on this kernel */
    }
  }
  return out;
}

/** The node IP must exist before the API server advertises it: bridge up, forwarding on. */
export function setupHostNetwork(log: Log): void {
  if (trySh('ip', ['link', 'show', BRIDGE])) sh('ip', ['link', 'del', BRIDGE]);
  sh('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
  sh('ip', ['addr', 'add', `${NODE_IP}/24`, 'dev', BRIDGE]);
  sh('ip', ['link', 'set', BRIDGE, 'up']);
  // Pods reach Services (kube-proxy DNAT) and each other through the host's netfilter.
  writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
  const brnf = '/proc/sys/net/bridge/bridge-nf-call-iptables';
  if (existsSync(brnf)) writeFileSync(brnf, '1');
  else log('bridge netfilter is not available: pod → Service → pod on the same bridge may fail');
}

async function writeSecret(path: string, text: string): Promise<void> {
  await writeFile(path, text, { mode: 0o600 });
}

/** Writes a kubeconfig for `subject`'s certificate and returns its path. */
async function componentKubeconfig(ctx: NodeContext, name: string, subject: string): Promise<string> {
  const cert = await issueCertificate(ctx.pki, subject, 'client');
  const path = join(ctx.dir, 'node', `${name}.kubeconfig`);
  await writeSecret(path, kubeconfigFor(ctx.server, ctx.pki.caCert, cert, name, 'crema'));
  return path;
}

function containerdConfig(dir: string): string {
  const c = join(dir, 'node', 'containerd');
  return `version = 2
root = "${c}/root"
state = "${c}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "${c}/containerd.sock"

[ttrpc]
  address = "${c}/containerd.sock.ttrpc"

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "${c}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # This VM's bounding set lacks CAP_SYS_RESOURCE: a negative OOM score for the sandbox fails.
  restrict_oom_score_adj = true
  # Network namespaces live in our state dir, not /var/run/netns, so teardown finds them all.
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${join(dir, 'node', 'cni', 'net.d')}"
`;
}

/** A bridge with host-local IPAM whose state lives in the environment dir; no iptables rules. */
function cniConfig(dir: string): string {
  return JSON.stringify(
    {
      cniVersion: '0.4.0',
      name: 'crema',
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE,
          isGateway: true,
          // Pods only talk to the node, each other and Services: no masquerading needed.
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: POD_SUBNET, gateway: NODE_IP }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: join(dir, 'node', 'cni', 'ipam'),
          },
        },
      ],
    },
    null,
    2,
  );
}

function kubeletConfig(dir: string, socket: string, certs: { cert: string; key: string }): string {
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: NODE_IP,
    port: KUBELET_PORT,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    tlsCertFile: certs.cert,
    tlsPrivateKeyFile: certs.key,
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: join(dir, 'ca.crt') },
    },
    authorization: { mode: 'Webhook' },
    // containerd 1.6 cannot tell the kubelet its cgroup driver; PID 1 is not systemd here.
    cgroupDriver: 'cgroupfs',
    cgroupsPerQOS: true,
    containerRuntimeEndpoint: `unix://${socket}`,
    imageServiceEndpoint: `unix://${socket}`,
    clusterDNS: [CLUSTER_DNS_IP],
    clusterDomain: CLUSTER_DOMAIN,
    // Pods resolve cluster names only: there is no upstream DNS to forward to.
    resolvConf: '',
    failSwapOn: false,
    failCgroupV1: false,
    podLogsDir: join(dir, 'node', 'pod-logs'),
    // Test machines have small, busy disks: evict only when really out of space.
    evictionHard: {
      'memory.available': '100Mi',
      'nodefs.available': '1%',
      'nodefs.inodesFree': '1%',
      'imagefs.available': '1%',
    },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    serializeImagePulls: false,
    maxPods: 110,
    // Fast feedback in tests; still the kubelet's own mechanisms.
    nodeStatusUpdateFrequency: '4s',
    shutdownGracePeriod: '0s',
  });
}

function kubeProxyConfig(kubeconfig: string, healthz: number, metrics: number): string {
  return stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    mode: 'nftables',
    clientConnection: { kubeconfig },
    hostnameOverride: NODE_NAME,
    bindAddress: NODE_IP,
    clusterCIDR: POD_SUBNET,
    healthzBindAddress: `127.0.0.1:${healthz}`,
    metricsBindAddress: `127.0.0.1:${metrics}`,
    // Leave the host's conntrack table size alone.
    conntrack: { maxPerCore: 0, min: 0 },
    nodePortAddresses: [`${NODE_IP}/32`],
  });
}

/** Cluster objects the node's components need: their RBAC, kube-dns, and the metrics API. */
function addonManifests(caCert: string, metricsPort: number): string {
  const docs: unknown[] = [
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'crema-testenv:coredns' },
      rules: [
        {
          apiGroups: [''],
          resources: ['endpoints', 'services', 'pods', 'namespaces'],
          verbs: ['list', 'watch'],
        },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'crema-testenv:coredns' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'crema-testenv:coredns' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'crema-testenv:coredns' }],
    },
    // metrics-server's RBAC, as its own manifests grant it.
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'system:metrics-server' },
      rules: [
        { apiGroups: [''], resources: ['nodes/metrics'], verbs: ['get'] },
        { apiGroups: [''], resources: ['pods', 'nodes'], verbs: ['get', 'list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'system:metrics-server' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:metrics-server' },
      subjects: [
        { apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'crema-testenv:metrics-server' },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'metrics-server:system:auth-delegator' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:auth-delegator' },
      subjects: [
        { apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'crema-testenv:metrics-server' },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: { name: 'metrics-server-auth-reader', namespace: 'kube-system' },
      roleRef: {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: 'extension-apiserver-authentication-reader',
      },
      subjects: [
        { apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'crema-testenv:metrics-server' },
      ],
    },
    // CoreDNS and metrics-server run on the node's host network: Services without selectors
    // whose endpoints are the node IP (mirrored into EndpointSlices by the controller manager).
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
      spec: {
        clusterIP: CLUSTER_DNS_IP,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
          { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
        ],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name: 'kube-dns', namespace: 'kube-system' },
      subsets: [
        {
          addresses: [{ ip: NODE_IP }],
          ports: [
            { name: 'dns', port: 53, protocol: 'UDP' },
            { name: 'dns-tcp', port: 53, protocol: 'TCP' },
          ],
        },
      ],
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'metrics-server', namespace: 'kube-system' },
      spec: { ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: metricsPort }] },
    },
    {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name: 'metrics-server', namespace: 'kube-system' },
      subsets: [
        { addresses: [{ ip: NODE_IP }], ports: [{ name: 'https', port: metricsPort, protocol: 'TCP' }] },
      ],
    },
    {
      apiVersion: 'apiregistration.k8s.io/v1',
      kind: 'APIService',
      metadata: { name: 'v1beta1.metrics.k8s.io' },
      spec: {
        group: 'metrics.k8s.io',
        version: 'v1beta1',
        service: { name: 'metrics-server', namespace: 'kube-system', port: 443 },
        caBundle: Buffer.from(caCert).toString('base64'),
        groupPriorityMinimum: 100,
        versionPriority: 100,
      },
    },
  ];
  return docs.map((d) => stringify(d)).join('---\n');
}

/** Builds the sandbox image (one layer: the static pause binary) as an OCI archive. */
async function buildPauseArchive(pauseBin: string, out: string): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'crema-pause-'));
  try {
    const root = join(work, 'root');
    await mkdir(root);
    await writeFile(join(root, 'pause'), await readFile(pauseBin));
    await chmod(join(root, 'pause'), 0o755);
    const blobs = join(work, 'layout', 'blobs');
    const layer = await writeLayer(blobs, root);
    const manifest = await writeImage(blobs, PAUSE_IMAGE, [layer], {
      entrypoint: ['/pause'],
      env: [],
      workingDir: '/',
      user: '65535:65535',
      labels: {},
    });
    await writeLayoutArchive(join(work, 'layout'), [manifest], out);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Starts containerd, kubelet, kube-proxy, kube-scheduler, CoreDNS and metrics-server against the
 * running control plane and resolves when the node is Ready. `claimNode` and `setupHostNetwork`
 * must have run. Processes are returned so the caller stops them with the rest.
 */
export async function startNode(ctx: NodeContext): Promise<{ node: KubeNode; procs: ManagedProcess[] }> {
  const { dir, bin, pki, log } = ctx;
  const t0 = Date.now();
  const nodeDir = join(dir, 'node');
  for (const d of ['containerd', 'cni/net.d', 'cni/ipam', 'kubelet', 'pod-logs', 'certs'])
    await mkdir(join(nodeDir, d), { recursive: true });
  const procs: ManagedProcess[] = [];
  const socket = join(nodeDir, 'containerd', 'containerd.sock');
  const ctr = (args: readonly string[]) => sh('ctr', ['--address', socket, '--namespace', 'k8s.io', ...args]);

  try {
    // Certificates and kubeconfigs of the node's components.
    const kubeletServing = await issueCertificate(pki, `CN=${NODE_NAME}`, 'server', {
      ips: [NODE_IP],
      dns: [NODE_NAME],
    });
    const certPath = (n: string) => join(nodeDir, 'certs', n);
    await writeSecret(certPath('kubelet.crt'), kubeletServing.cert);
    await writeSecret(certPath('kubelet.key'), kubeletServing.key);
    const metricsServing = await issueCertificate(pki, 'CN=metrics-server', 'server', {
      ips: [NODE_IP],
      dns: ['metrics-server.kube-system.svc', 'metrics-server.kube-system.svc.cluster.local'],
    });
    await writeSecret(certPath('metrics-server.crt'), metricsServing.cert);
    await writeSecret(certPath('metrics-server.key'), metricsServing.key);
    const [kubeletKc, proxyKc, schedulerKc, corednsKc, metricsKc] = await Promise.all([
      componentKubeconfig(ctx, 'kubelet', `CN=system:node:${NODE_NAME}, O=system:nodes`),
      componentKubeconfig(ctx, 'kube-proxy', 'CN=system:kube-proxy'),
      componentKubeconfig(ctx, 'kube-scheduler', 'CN=system:kube-scheduler'),
      componentKubeconfig(ctx, 'coredns', 'CN=crema-testenv:coredns'),
      componentKubeconfig(ctx, 'metrics-server', 'CN=crema-testenv:metrics-server'),
    ]);

    // 1. containerd, with the sandbox image imported.
    await writeFile(join(nodeDir, 'containerd', 'config.toml'), containerdConfig(dir));
    await writeFile(join(nodeDir, 'cni', 'net.d', '10-crema.conflist'), cniConfig(dir));
    const containerd = new ManagedProcess(
      'containerd',
      which('containerd')!,
      ['--config', join(nodeDir, 'containerd', 'config.toml')],
      dir,
    );
    procs.push(containerd);
    await waitReady(
      containerd,
      async () => existsSync(socket) && trySh('ctr', ['--address', socket, 'version']),
      30_000,
      'answering on its socket',
    );
    const pauseArchive = join(nodeDir, 'pause.oci.tar');
    await buildPauseArchive(bin.pause, pauseArchive);
    ctr(['images', 'import', pauseArchive]);
    ctx.timings['containerd'] = Date.now() - t0;

    // 2. Cluster objects for CoreDNS and metrics-server, then the host-network components.
    const metricsPort = await freePort();
    const addons = join(nodeDir, 'addons.yaml');
    await writeFile(addons, addonManifests(pki.caCert, metricsPort));
    sh(bin.kubectl, ['--kubeconfig', ctx.adminKubeconfigPath, 'apply', '--server-side', '-f', addons]);

    const tKubelet = Date.now();
    await writeFile(
      join(nodeDir, 'kubelet.yaml'),
      kubeletConfig(dir, socket, { cert: certPath('kubelet.crt'), key: certPath('kubelet.key') }),
    );
    const kubelet = new ManagedProcess(
      'kubelet',
      bin.kubelet,
      [
        `--config=${join(nodeDir, 'kubelet.yaml')}`,
        `--kubeconfig=${kubeletKc}`,
        `--root-dir=${join(nodeDir, 'kubelet')}`,
        `--cert-dir=${join(nodeDir, 'certs')}`,
        `--hostname-override=${NODE_NAME}`,
        `--node-ip=${NODE_IP}`,
        '--v=1',
      ],
      dir,
    );
    procs.push(kubelet);

    const [proxyHealthz, proxyMetrics, schedulerPort, dnsHealth, dnsReady] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    await writeFile(join(nodeDir, 'kube-proxy.yaml'), kubeProxyConfig(proxyKc, proxyHealthz, proxyMetrics));
    const proxy = new ManagedProcess(
      'kube-proxy',
      bin.kubeProxy,
      [`--config=${join(nodeDir, 'kube-proxy.yaml')}`, '--v=1'],
      dir,
    );
    procs.push(proxy);
    const scheduler = new ManagedProcess(
      'kube-scheduler',
      bin.kubeScheduler,
      [
        `--kubeconfig=${schedulerKc}`,
        `--authentication-kubeconfig=${schedulerKc}`,
        `--authorization-kubeconfig=${schedulerKc}`,
        '--leader-elect=false',
        `--secure-port=${schedulerPort}`,
        '--bind-address=127.0.0.1',
        '--v=1',
      ],
      dir,
    );
    procs.push(scheduler);
    await writeFile(
      join(nodeDir, 'Corefile'),
      `${CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {
    bind ${NODE_IP}
    errors
    health 127.0.0.1:${dnsHealth}
    ready 127.0.0.1:${dnsReady}
    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
        kubeconfig ${corednsKc} crema
        pods insecure
    }
    cache 5
}
# No upstream resolver is reachable: every other name is answered NXDOMAIN at once instead of
# a SERVFAIL that clients retry.
.:53 {
    bind ${NODE_IP}
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`,
    );
    const coredns = new ManagedProcess('coredns', bin.coredns, ['-conf', join(nodeDir, 'Corefile')], dir);
    procs.push(coredns);
    const metricsServer = new ManagedProcess(
      'metrics-server',
      bin.metricsServer,
      [
        `--kubeconfig=${metricsKc}`,
        `--authentication-kubeconfig=${metricsKc}`,
        `--authorization-kubeconfig=${metricsKc}`,
        `--secure-port=${metricsPort}`,
        `--bind-address=${NODE_IP}`,
        `--tls-cert-file=${certPath('metrics-server.crt')}`,
        `--tls-private-key-file=${certPath('metrics-server.key')}`,
        `--kubelet-certificate-authority=${join(dir, 'ca.crt')}`,
        '--kubelet-preferred-address-types=InternalIP',
        '--kubelet-use-node-status-port',
        // The shortest resolution metrics-server allows (10 s) needs a shorter kubelet timeout.
        '--metric-resolution=10s',
        '--kubelet-request-timeout=5s',
        '--v=1',
      ],
      dir,
    );
    procs.push(metricsServer);

    // 3. Ready: the node reports Ready, kube-proxy and CoreDNS are healthy.
    await Promise.all([
      waitReady(
        kubelet,
        () => nodeReady(bin.kubectl, ctx.adminKubeconfigPath),
        90_000,
        'Ready (node condition)',
      ),
      waitReady(proxy, () => probeHttp(`http://127.0.0.1:${proxyHealthz}/healthz`), 60_000, 'healthy'),
      waitReady(coredns, () => probeHttp(`http://127.0.0.1:${dnsReady}/ready`), 60_000, 'ready'),
      waitReady(
        metricsServer,
        () => probeHttp(`https://${NODE_IP}:${metricsPort}/livez`, { rejectUnauthorized: false }),
        60_000,
        'live',
      ),
      waitReady(
        scheduler,
        () => probeHttp(`https://127.0.0.1:${schedulerPort}/healthz`, { rejectUnauthorized: false }),
        60_000,
        'healthy',
      ),
    ]);
    ctx.timings['kubelet'] = Date.now() - tKubelet;
    ctx.timings['node'] = Date.now() - t0;
    log(`node ${NODE_NAME} Ready at ${NODE_IP} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    return {
      procs,
      node: {
        name: NODE_NAME,
        ip: NODE_IP,
        containerdSocket: socket,
        ctr,
        async importImages(archive: string) {
          ctr(['images', 'import', archive]);
        },
      },
    };
  } catch (err) {
    // The caller stops `procs` with the rest of the environment; report what we started.
    (err as { nodeProcs?: ManagedProcess[] }).nodeProcs = procs;
    throw err;
  }
}

async function nodeReady(kubectl: string, kubeconfig: string): Promise<boolean> {
  try {
    const out = sh(kubectl, [
      '--kubeconfig',
      kubeconfig,
      'get',
      'node',
      NODE_NAME,
      '-o',
      'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
    ]);
    return out.trim() === 'True';
  } catch {
    return false;
  }
}

/** Every cgroup directory named `kubepods` the kubelet created (cgroup v1 hierarchies or v2). */
function kubepodsCgroups(): string[] {
  const root = '/sys/fs/cgroup';
  if (existsSync(join(root, 'cgroup.controllers')))
    return existsSync(join(root, 'kubepods')) ? [join(root, 'kubepods')] : [];
  const out: string[] = [];
  for (const h of readdirSync(root)) {
    const p = join(root, h, 'kubepods');
    if (existsSync(p)) out.push(p);
  }
  return out;
}

/** Cgroup directories under `dir`, deepest first. */
function cgroupTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let entries: Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(join(d, e.name));
    out.push(d);
  };
  walk(dir);
  return out;
}

function pidsIn(cgroup: string): number[] {
  try {
    return readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function startedUnder(pid: number, dir: string): boolean {
  try {
    return (
      readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir) ||
      execFileSync('readlink', [`/proc/${pid}/cwd`], { encoding: 'utf8' }).startsWith(dir)
    );
  } catch {
    return false;
  }
}

/**
 * Removes everything a node left on the host (synchronously, so it can also run from an exit
 * handler): pod processes (found by the kubelet's cgroups), containerd and its shims, mounts
 * under the environment dir (overlay roots, volumes, network namespaces), the cgroups,
 * kube-proxy's nftables tables, the bridge, and the node lock.
 */
export function cleanupNode(dir: string, log: Log = () => {}): void {
  // 1. Pod processes, then containerd and its shims (their cwd or command line is under dir).
  const cgroups = kubepodsCgroups();
  for (let round = 0; round < 20; round++) {
    const pids = new Set(cgroups.flatMap((c) => cgroupTree(c).flatMap(pidsIn)));
    if (pids.size === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    execFileSync('sleep', ['0.1']);
  }
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!pid || pid === process.pid) continue;
    let comm = '';
    try {
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    if (!/^(containerd|containerd-shim|kubelet|kube-proxy|coredns|metrics-server|kube-scheduler)/.test(comm))
      continue;
    if (startedUnder(pid, dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  // 2. Mounts under dir, deepest first (lazy, so a busy one cannot stop the rest).
  try {
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .map((p) => p.replace(/\\040/g, ' '))
      .filter((p) => p.startsWith(`${dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) trySh('umount', ['-l', m]);
  } catch (err) {
    log(`listing mounts failed: ${(err as Error).message}`);
  }
  // 3. The kubelet's cgroups (empty now).
  for (const c of cgroups) {
    for (const d of cgroupTree(c)) {
      try {
        rmdirSync(d);
      } catch {
        /* busy or gone; the next cleanup retries */
      }
    }
  }
  // 4. kube-proxy's tables, the kubelet's iptables chains (KUBE-FIREWALL and canaries), the bridge.
  trySh('nft', ['delete', 'table', 'ip', 'kube-proxy']);
  trySh('nft', ['delete', 'table', 'ip6', 'kube-proxy']);
  for (const [save, restore] of [
    ['iptables-save', 'iptables-restore'],
    ['ip6tables-save', 'ip6tables-restore'],
  ] as const) {
    try {
      const rules = sh(save, []);
      if (!rules.includes('KUBE-')) continue;
      const kept = rules
        .split('\n')
        .filter((l) => !l.includes('KUBE-'))
        .join('\n');
      sh(restore, [], { input: kept });
    } catch (err) {
      log(`removing the kubelet's ${save.replace('-save', '')} chains failed: ${(err as Error).message}`);
    }
  }
  if (trySh('ip', ['link', 'show', BRIDGE])) trySh('ip', ['link', 'del', BRIDGE]);
  // 5. The lock, if it is ours (the marker below may be the reaped environment's).
  try {
    const owner = JSON.parse(readFileSync(LOCK_FILE, 'utf8')) as { dir: string };
    if (owner.dir === dir) rmSync(LOCK_FILE, { force: true });
  } catch {
    /* no lock */
  }
  // 6. The kernel settings as they were before the node.
  try {
    const marker = JSON.parse(readFileSync(join(dir, NODE_MARKER), 'utf8')) as {
      sysctls?: Record<string, string>;
    };
    for (const [k, v] of Object.entries(marker.sysctls ?? {})) {
      try {
        writeFileSync(`/proc/sys/${k}`, v);
      } catch (err) {
        log(`restoring ${k.replace(/\//g, '.')}=${v} failed: ${(err as Error).message}`);
      }
    }
  } catch {
    /* no marker */
  }
  rmSync(join(dir, NODE_MARKER), { force: true });
}
