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
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestEnvError, explainGoFailure, run, type Log } from './binaries.js';
import { ensureGoTool } from './go-tool.js';

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

/** Returns the verified helm binary, building it (about a minute or two on 2 cores) when needed. */
export async function ensureHelm(opts: { log?: Log; forceRebuild?: boolean } = {}): Promise<HelmBinary> {
  const log = opts.log ?? ((l: string) => console.error(`[testenv] ${l}`));
  const { helm: version } = await readHelmVersions();
  const tool = await ensureGoTool({
    name: 'helm',
    version,
    moduleDir,
    pkg: 'helm.sh/helm/v3/cmd/helm',
    log,
    ...(opts.forceRebuild ? { forceRebuild: true } : {}),
    // What Helm's Makefile sets: its version, and the Kubernetes version its client-go is for
    // (lint and template's default .Capabilities.KubeVersion).
    ldflags: async (env) => {
      const cg = await run('go', ['list', '-m', '-f', '{{.Version}}', 'k8s.io/client-go'], {
        cwd: moduleDir,
        env,
      });
      const m = /^v0\.(\d+)\./.exec(cg.stdout.trim());
      if (cg.code !== 0 || !m)
        throw new TestEnvError(`could not read helm's client-go version. ${explainGoFailure(cg.stderr)}`);
      return [
        '-s',
        '-w',
        `-X helm.sh/helm/v3/internal/version.version=${version}`,
        '-X helm.sh/helm/v3/internal/version.gitTreeState=clean',
        '-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1',
        `-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${m[1]}`,
        '-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1',
        `-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${m[1]}`,
      ].join(' ');
    },
  });
  return { helm: tool.path, version, built: tool.built, buildSeconds: tool.buildSeconds };
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
