/**
 * The Helm CLI, compiled from the Go module proxy like the cluster's binaries (docs/adr/0002):
 * the wrapper module hack/testenv/go/helm pins helm.sh/helm/v3 (HELM_VERSION in versions.env) and
 * its committed go.sum verifies every download. Cached per version under the testenv cache root
 * (`helm-<version>_<key>/helm`), trusted only when its manifest's sha256 matches, rebuilt otherwise.
 *
 * Also: the prometheus-operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule…) the chart's
 * monitoring templates need on a test API server, from the module zip of
 * github.com/prometheus-operator/prometheus-operator at PROMETHEUS_OPERATOR_VERSION, whose go.sum
 * hash is pinned as PROMETHEUS_OPERATOR_SUM.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  TestEnvError,
  cacheRoot,
  explainGoFailure,
  goVersion,
  run,
  sha256File,
  withLock,
  type Log,
} from './binaries.js';

const here = dirname(fileURLToPath(import.meta.url));
const moduleDir = join(here, 'go', 'helm');

export interface HelmVersions {
  readonly helm: string;
  readonly prometheusOperator: string;
  readonly prometheusOperatorSum: string;
}

/** Reads HELM_VERSION and the prometheus-operator pins from versions.env. */
export async function readHelmVersions(): Promise<HelmVersions> {
  const vars = new Map<string, string>();
  for (const raw of (await readFile(join(here, 'versions.env'), 'utf8')).split('\n')) {
    const l = raw.trim();
    const eq = l.indexOf('=');
    if (!l || l.startsWith('#') || eq < 0) continue;
    vars.set(l.slice(0, eq), l.slice(eq + 1));
  }
  const read = (name: string, pattern: RegExp) => {
    const v = vars.get(name);
    if (!v || !pattern.test(v)) throw new TestEnvError(`versions.env: bad ${name} ${v}`);
    return v;
  };
  return {
    helm: read('HELM_VERSION', /^v3\.\d+\.\d+$/),
    prometheusOperator: read('PROMETHEUS_OPERATOR_VERSION', /^v\d+\.\d+\.\d+$/),
    prometheusOperatorSum: read('PROMETHEUS_OPERATOR_SUM', /^h1:[A-Za-z0-9+/]{43}=$/),
  };
}

export interface HelmBinary {
  /** Absolute path of the verified helm binary. */
  readonly helm: string;
  readonly version: string;
  /** True when this call compiled it. */
  readonly built: boolean;
  /** Seconds the build took (this call's, or the cached build's). */
  readonly buildSeconds: number;
}

interface HelmManifest {
  key: string;
  version: string;
  goVersion: string;
  sha256: string;
  builtAt: string;
  buildSeconds: number;
}

async function helmCacheKey(version: string, goV: string): Promise<string> {
  const h = createHash('sha256');
  h.update(`${version}\n${goV}\n`);
  for (const f of ['go.mod', 'go.sum']) h.update(await readFile(join(moduleDir, f)));
  return h.digest('hex').slice(0, 16);
}

async function verify(dir: string, key: string): Promise<HelmManifest | string> {
  const m = await readFile(join(dir, 'manifest.json'), 'utf8').then(
    (t) => JSON.parse(t) as HelmManifest,
    () => undefined,
  );
  if (!m) return 'no cached build';
  if (m.key !== key) return `manifest key ${m.key} does not match ${key}`;
  if (!existsSync(join(dir, 'helm'))) return 'helm is missing';
  if ((await sha256File(join(dir, 'helm'))) !== m.sha256) return 'helm is corrupt (sha256 mismatch)';
  return m;
}

/** Returns the verified helm binary, building it (about a minute or two on 2 cores) when needed. */
export async function ensureHelm(opts: { log?: Log; forceRebuild?: boolean } = {}): Promise<HelmBinary> {
  const log = opts.log ?? ((l: string) => console.error(`[testenv] ${l}`));
  const { helm: version } = await readHelmVersions();
  const goV = await goVersion();
  const key = await helmCacheKey(version, goV);
  const root = cacheRoot();
  const dir = join(root, `helm-${version}_${key}`);
  const path = join(dir, 'helm');
  const cached = opts.forceRebuild ? 'rebuild requested' : await verify(dir, key);
  if (typeof cached !== 'string')
    return { helm: path, version, built: false, buildSeconds: cached.buildSeconds };
  await mkdir(root, { recursive: true });
  return withLock(`${dir}.lock`, log, async () => {
    const again = opts.forceRebuild ? 'rebuild requested' : await verify(dir, key);
    if (typeof again !== 'string')
      return { helm: path, version, built: false, buildSeconds: again.buildSeconds };
    log(`building helm ${version} with ${goV} (${cached})`);
    const started = Date.now();
    const env = {
      ...process.env,
      CGO_ENABLED: '0',
      GOFLAGS: `${process.env['GOFLAGS'] ?? ''} -mod=readonly`.trim(),
    };
    // What Helm's Makefile sets: its version, and the Kubernetes version its client-go is for
    // (lint and template's default .Capabilities.KubeVersion).
    const cg = await run('go', ['list', '-m', '-f', '{{.Version}}', 'k8s.io/client-go'], {
      cwd: moduleDir,
      env,
    });
    const m = /^v0\.(\d+)\./.exec(cg.stdout.trim());
    if (cg.code !== 0 || !m)
      throw new TestEnvError(`could not read helm's client-go version. ${explainGoFailure(cg.stderr)}`);
    const ldflags = [
      '-s',
      '-w',
      `-X helm.sh/helm/v3/internal/version.version=${version}`,
      '-X helm.sh/helm/v3/internal/version.gitTreeState=clean',
      '-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1',
      `-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${m[1]}`,
      '-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1',
      `-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${m[1]}`,
    ].join(' ');
    const staging = `${dir}.building-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    try {
      const out = join(staging, 'helm');
      const res = await run(
        'go',
        ['build', '-trimpath', '-ldflags', ldflags, '-o', out, 'helm.sh/helm/v3/cmd/helm'],
        {
          cwd: moduleDir,
          env,
          log,
        },
      );
      if (res.code !== 0) throw new TestEnvError(`building helm failed. ${explainGoFailure(res.stderr)}`);
      const manifest: HelmManifest = {
        key,
        version,
        goVersion: goV,
        sha256: await sha256File(out),
        builtAt: new Date().toISOString(),
        buildSeconds: Math.round((Date.now() - started) / 1000),
      };
      await writeFile(join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2));
      await rm(dir, { recursive: true, force: true });
      await rename(staging, dir);
      for (const name of await readdir(root)) {
        if (
          name.startsWith('helm-') &&
          join(root, name) !== dir &&
          !name.endsWith('.lock') &&
          !name.includes('.building-')
        )
          await rm(join(root, name), { recursive: true, force: true });
      }
      log(`helm ${version} cached in ${dir} (${manifest.buildSeconds} s)`);
      return { helm: path, version, built: true, buildSeconds: manifest.buildSeconds };
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  });
}

/**
 * Paths of the prometheus-operator CRD files (monitoring.coreos.com_*.yaml) at the pinned
 * version, downloaded through the Go module proxy into the module cache and checked against the
 * pinned go.sum hash.
 */
export async function prometheusOperatorCrds(): Promise<string[]> {
  const v = await readHelmVersions();
  const mod = `github.com/prometheus-operator/prometheus-operator@${v.prometheusOperator}`;
  const res = await run('go', ['mod', 'download', '-json', mod], { cwd: moduleDir });
  let info: { Dir?: string; Sum?: string; Error?: string };
  try {
    info = JSON.parse(res.stdout) as typeof info;
  } catch {
    throw new TestEnvError(`go mod download ${mod} failed: ${res.stderr}`);
  }
  if (info.Error || !info.Dir) throw new TestEnvError(`go mod download ${mod}: ${info.Error ?? res.stderr}`);
  if (info.Sum !== v.prometheusOperatorSum)
    throw new TestEnvError(`${mod} has hash ${info.Sum}, versions.env pins ${v.prometheusOperatorSum}`);
  const dir = join(info.Dir, 'example', 'prometheus-operator-crd');
  return (await readdir(dir))
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => join(dir, f));
}

/** The chart in this repository. */
export const CHART_DIR = join(here, '..', '..', 'charts', 'crema');

/** Runs helm (or any command) and returns its exit code and output; never throws on a non-zero exit. */
export function helmRun(
  helm: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // A private HELM_* home per call site keeps the user's repositories and plugins out of it.
  return run(helm, args, { env: { ...process.env, ...opts.env }, ...(opts.cwd ? { cwd: opts.cwd } : {}) });
}
