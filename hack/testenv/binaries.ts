/**
 * Builds (once) and verifies the test cluster's binaries, compiled from the Go module proxy
 * through the wrapper modules in hack/testenv/go: the control plane (kube-apiserver,
 * kube-controller-manager, kube-scheduler, kubectl, etcd) and the node (kubelet, kube-proxy,
 * metrics-server, CoreDNS, and the pause program of the Kubernetes module, compiled with the C
 * compiler). Binaries are cached per version in a user cache directory;
 * a cache entry is trusted only when its manifest matches the pinned versions and every
 * binary's sha256, so a corrupt or stale entry is rebuilt instead of used.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { ensureDebianPackages } from './debian.js';
import { isAlive } from './process.js';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const goDir = join(here, 'go');

/** The versions pinned in hack/testenv/versions.env. */
export interface TestEnvVersions {
  readonly kube: string;
  readonly etcd: string;
  readonly metricsServer: string;
  readonly coredns: string;
}

/** Absolute paths of the verified binaries. */
export interface TestEnvBinaries {
  readonly kubeApiserver: string;
  readonly kubeControllerManager: string;
  readonly kubeScheduler: string;
  /** kubectl of the same version, so examples never hit client/server version skew. */
  readonly kubectl: string;
  readonly etcd: string;
  readonly kubelet: string;
  readonly kubeProxy: string;
  readonly metricsServer: string;
  readonly coredns: string;
  /** The pod sandbox's process (Kubernetes' build/pause/linux/pause.c, static). */
  readonly pause: string;
  /** The cache directory holding them. */
  readonly dir: string;
  /** True when this call compiled them, false when the cache was reused. */
  readonly built: boolean;
}

/** Raised when a prerequisite is missing or a build fails; the message says what to do. */
export class TestEnvError extends Error {
  override readonly name = 'TestEnvError';
}

export type Log = (line: string) => void;

export const BINARIES = [
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kubectl',
  'etcd',
  'kubelet',
  'kube-proxy',
  'metrics-server',
  'coredns',
  'pause',
] as const;
export type BinaryName = (typeof BINARIES)[number];

/** manifest.json of a cache entry, written only after every binary is in place. */
export interface Manifest {
  key: string;
  versions: TestEnvVersions;
  goVersion: string;
  sha256: Record<BinaryName, string>;
  builtAt: string;
  buildSeconds: number;
}

/** Reads the pinned versions from versions.env. */
export async function readVersions(): Promise<TestEnvVersions> {
  const text = await readFile(join(here, 'versions.env'), 'utf8');
  const vars = Object.fromEntries(
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split('=', 2) as [string, string]),
  );
  const read = (name: string, pattern: RegExp) => {
    const v = vars[name];
    if (!v || !pattern.test(v)) throw new TestEnvError(`versions.env: bad ${name} ${v}`);
    return v;
  };
  return {
    kube: read('KUBE_VERSION', /^v1\.\d+\.\d+$/),
    etcd: read('ETCD_VERSION', /^v3\.\d+\.\d+$/),
    metricsServer: read('METRICS_SERVER_VERSION', /^v\d+\.\d+\.\d+$/),
    coredns: read('COREDNS_VERSION', /^v\d+\.\d+\.\d+$/),
  };
}

/** The root of the binary cache: $CREMA_TESTENV_CACHE, else $XDG_CACHE_HOME/crema/testenv, else ~/.cache/crema/testenv. */
export function cacheRoot(): string {
  if (process.env['CREMA_TESTENV_CACHE']) return process.env['CREMA_TESTENV_CACHE'];
  const xdg = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(xdg, 'crema', 'testenv');
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; log?: Log } = {},
) {
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (opts.log) for (const line of d.toString().split('\n')) if (line.trim()) opts.log(line);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export async function goVersion(): Promise<string> {
  let res: RunResult;
  try {
    res = await run('go', ['env', 'GOVERSION']);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TestEnvError(
        'Go is not installed or not on PATH. The test control plane is compiled from the Go module proxy ' +
          'and needs Go >= 1.24: install it from the Go downloads or your distribution, then re-run.',
      );
    }
    throw err;
  }
  const v = res.stdout.trim();
  const m = /^go1\.(\d+)/.exec(v);
  if (res.code !== 0 || !m)
    throw new TestEnvError(`could not read the Go version (go env GOVERSION): ${res.stderr}`);
  if (Number(m[1]) < 24) throw new TestEnvError(`Go ${v} is too old: Kubernetes 1.34 needs Go >= 1.24.`);
  return v;
}

/** The wrapper modules under hack/testenv/go, one per separately versioned program. */
const GO_MODULES = ['kube', 'etcd', 'metrics-server', 'coredns'] as const;

/** Hashes the inputs that decide what gets built: pinned versions, Go version and the wrapper go.mod/go.sum. */
export async function cacheKey(versions: TestEnvVersions, goV: string): Promise<string> {
  const h = createHash('sha256');
  h.update(`${JSON.stringify(versions)}\n${goV}\n`);
  for (const m of GO_MODULES) {
    for (const f of ['go.mod', 'go.sum']) h.update(await readFile(join(goDir, m, f)));
  }
  return h.digest('hex').slice(0, 16);
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** Returns why the cache entry in dir cannot be trusted, or null when it can. */
export async function verifyCacheEntry(dir: string, key: string): Promise<string | null> {
  const manifestPath = join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) return 'no cached build';
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as Manifest;
  } catch {
    return 'manifest.json is unreadable';
  }
  if (manifest.key !== key) return `manifest key ${manifest.key} does not match ${key}`;
  const hashes = await Promise.all(
    BINARIES.map(async (b) => (existsSync(join(dir, b)) ? sha256File(join(dir, b)) : 'missing')),
  );
  for (const [i, b] of BINARIES.entries()) {
    if (hashes[i] !== manifest.sha256[b])
      return `${b} is ${hashes[i] === 'missing' ? 'missing' : 'corrupt (sha256 mismatch)'}`;
  }
  return null;
}

function ldflags(kube: string): string {
  const [, minor] = /^v1\.(\d+)\./.exec(kube) ?? [];
  const vars = [
    `k8s.io/component-base/version.gitVersion=${kube}`,
    `k8s.io/component-base/version.gitMajor=1`,
    `k8s.io/component-base/version.gitMinor=${minor}`,
    `k8s.io/component-base/version.gitTreeState=clean`,
    `k8s.io/client-go/pkg/version.gitVersion=${kube}`,
    `k8s.io/client-go/pkg/version.gitMajor=1`,
    `k8s.io/client-go/pkg/version.gitMinor=${minor}`,
  ];
  return ['-s', '-w', ...vars.map((v) => `-X ${v}`)].join(' ');
}

export function explainGoFailure(stderr: string): string {
  if (/dial tcp|no such host|i\/o timeout|connection refused|TLS handshake/i.test(stderr)) {
    return (
      'Go could not reach the module proxy to download Kubernetes sources. Check network access to ' +
      'the proxy named by `go env GOPROXY`; if only the checksum database is unreachable, set ' +
      'GONOSUMDB/GOFLAGS as docs/testenv.md describes.'
    );
  }
  if (/SECURITY ERROR|checksum mismatch/i.test(stderr)) {
    return 'A downloaded module failed its checksum: the module cache may be corrupt (`go clean -modcache`).';
  }
  return 'go build failed; the output above has the details.';
}

/**
 * Compiles the pod sandbox process from the Kubernetes module's own source
 * (build/pause/linux/pause.c, what the registry.k8s.io/pause image holds) as a static binary.
 */
async function buildPause(out: string, env: NodeJS.ProcessEnv, log: Log): Promise<void> {
  await ensureDebianPackages(
    [
      { command: 'cc', pkg: 'gcc' },
      { command: '/usr/include/stdio.h', pkg: 'libc6-dev' },
    ],
    log,
    'compiling the pod sandbox program (pause.c)',
  );
  const dirRes = await run('go', ['list', '-m', '-f', '{{.Dir}}', 'k8s.io/kubernetes'], {
    cwd: join(goDir, 'kube'),
    env,
  });
  const src = join(dirRes.stdout.trim(), 'build', 'pause', 'linux', 'pause.c');
  if (dirRes.code !== 0 || !existsSync(src))
    throw new TestEnvError(`could not find pause.c in the Kubernetes module: ${dirRes.stderr}`);
  let res: RunResult;
  try {
    res = await run('cc', ['-Os', '-static', '-Wall', '-DVERSION=crema-testenv', '-o', out, src], { log });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new TestEnvError(
        "no C compiler (cc) on PATH: the pod sandbox program is compiled from Kubernetes' pause.c. " +
          'Install it: `apt-get update && apt-get install -y gcc libc6-dev`.',
      );
    throw err;
  }
  if (res.code !== 0) throw new TestEnvError(`compiling pause.c failed: ${res.stderr}`);
  log('built pause');
}

/** Holds an exclusive lock file so two processes never build into the same cache at once. */
export async function withLock<T>(lockPath: string, log: Log, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(await readFile(lockPath, 'utf8').catch(() => '0'));
      if (!holder || !isAlive(holder)) {
        await rm(lockPath, { force: true });
        continue;
      }
      if (Date.now() - started > 60 * 60_000)
        throw new TestEnvError(`timed out waiting for build lock ${lockPath}`);
      if ((Date.now() - started) % 30_000 < 1000) log(`waiting for another build (pid ${holder}) to finish…`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockPath, { force: true });
  }
}

/** Removes cache entries of other versions (each is ~300 MB); a different checkout rebuilds its own. */
async function pruneOtherEntries(root: string, keep: string, log: Log): Promise<void> {
  for (const name of await readdir(root)) {
    const path = join(root, name);
    if (path === keep || !name.startsWith('k8s-') || name.endsWith('.lock') || name.includes('.building-'))
      continue;
    await rm(path, { recursive: true, force: true });
    log(`removed stale cache entry ${name}`);
  }
}

/**
 * Returns verified binaries, building them when the cache has no trustworthy entry.
 * A cold build takes tens of minutes on 2 cores; a warm call only hashes the cached files.
 */
export async function ensureBinaries(
  opts: { log?: Log; forceRebuild?: boolean } = {},
): Promise<TestEnvBinaries> {
  const log = opts.log ?? ((l: string) => console.error(`[testenv] ${l}`));
  const versions = await readVersions();
  const goV = await goVersion();
  const key = await cacheKey(versions, goV);
  const root = cacheRoot();
  const dir = join(root, `k8s-${versions.kube}_etcd-${versions.etcd}_${key}`);
  const paths = {
    kubeApiserver: join(dir, 'kube-apiserver'),
    kubeControllerManager: join(dir, 'kube-controller-manager'),
    kubeScheduler: join(dir, 'kube-scheduler'),
    kubectl: join(dir, 'kubectl'),
    etcd: join(dir, 'etcd'),
    kubelet: join(dir, 'kubelet'),
    kubeProxy: join(dir, 'kube-proxy'),
    metricsServer: join(dir, 'metrics-server'),
    coredns: join(dir, 'coredns'),
    pause: join(dir, 'pause'),
    dir,
  };
  const why = opts.forceRebuild ? 'rebuild requested' : await verifyCacheEntry(dir, key);
  if (why === null) return { ...paths, built: false };

  await mkdir(root, { recursive: true });
  return withLock(`${dir}.lock`, log, async () => {
    // Another process may have finished the build while we waited for the lock.
    if (!opts.forceRebuild && (await verifyCacheEntry(dir, key)) === null) return { ...paths, built: false };
    log(
      `building Kubernetes ${versions.kube} (control plane and node), etcd ${versions.etcd}, metrics-server ` +
        `${versions.metricsServer} and CoreDNS ${versions.coredns} with ${goV} (${why}); a cold build takes ` +
        'about 15 minutes on 2 cores',
    );
    const started = Date.now();
    const staging = `${dir}.building-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    const env = {
      ...process.env,
      CGO_ENABLED: '0',
      GOFLAGS: `${process.env['GOFLAGS'] ?? ''} -mod=readonly`.trim(),
    };
    const kubeTarget = (name: BinaryName) => ({
      name,
      module: 'kube',
      pkg: `k8s.io/kubernetes/cmd/${name}`,
      flags: ldflags(versions.kube),
    });
    const targets: Array<{ name: BinaryName; module: string; pkg: string; flags: string }> = [
      kubeTarget('kube-apiserver'),
      kubeTarget('kube-controller-manager'),
      kubeTarget('kube-scheduler'),
      kubeTarget('kubectl'),
      kubeTarget('kubelet'),
      kubeTarget('kube-proxy'),
      { name: 'etcd', module: 'etcd', pkg: 'go.etcd.io/etcd/server/v3', flags: '-s -w' },
      {
        name: 'metrics-server',
        module: 'metrics-server',
        pkg: 'sigs.k8s.io/metrics-server/cmd/metrics-server',
        flags: `-s -w -X k8s.io/client-go/pkg/version.gitVersion=${versions.metricsServer}`,
      },
      { name: 'coredns', module: 'coredns', pkg: 'github.com/coredns/coredns', flags: '-s -w' },
    ];
    const sha256 = {} as Record<BinaryName, string>;
    try {
      for (const t of targets) {
        const t0 = Date.now();
        log(`go build ${t.pkg}`);
        const out = join(staging, t.name);
        const res = await run('go', ['build', '-trimpath', '-ldflags', t.flags, '-o', out, t.pkg], {
          cwd: join(goDir, t.module),
          env,
          log,
        });
        if (res.code !== 0)
          throw new TestEnvError(`building ${t.name} failed. ${explainGoFailure(res.stderr)}`);
        sha256[t.name] = await sha256File(out);
        log(`built ${t.name} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      }
      await buildPause(join(staging, 'pause'), env, log);
      sha256['pause'] = await sha256File(join(staging, 'pause'));
      const manifest: Manifest = {
        key,
        versions,
        goVersion: goV,
        sha256,
        builtAt: new Date().toISOString(),
        buildSeconds: Math.round((Date.now() - started) / 1000),
      };
      await writeFile(join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2));
      await rm(dir, { recursive: true, force: true });
      await rename(staging, dir);
      await pruneOtherEntries(root, dir, log);
      log(`cluster binaries cached in ${dir} (${manifest.buildSeconds} s)`);
      return { ...paths, built: true };
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  });
}
