/**
 * Starts a real Prometheus and a real Alertmanager (Debian packages) on free loopback ports, each
 * in its own temp dir that is removed on stop, on SIGINT/SIGTERM, and by the next run if this
 * process was killed outright. Short scrape, evaluation and grouping intervals keep tests quick.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { TestEnvError } from './binaries.js';
import { ensureDebianPackages } from './debian.js';
import {
  ManagedProcess,
  TEMP_PREFIX,
  claimDir,
  reapAbandoned,
  registerCleanup,
  startWithPortRetry,
  waitReady,
} from './process.js';

type Log = (line: string) => void;

const INSTALL_HINT = '`apt-get update && apt-get install -y prometheus prometheus-alertmanager`';

/** A scrape target: `host:port`, or `host:port` with target labels (what relabeling adds in a cluster). */
export type ScrapeTarget =
  string | { readonly target: string; readonly labels?: Readonly<Record<string, string>> };

export interface PrometheusOptions {
  /** host:port endpoints serving /metrics. May be empty and set later with `setScrapeTargets`. */
  readonly scrapeTargets: readonly ScrapeTarget[];
  /** Default 1. */
  readonly scrapeIntervalSeconds?: number;
  /** Rule evaluation interval. Default 1. */
  readonly evaluationIntervalSeconds?: number;
  /** Extra rule files (paths or globs) besides `<rulesDir>/*.yml`. */
  readonly ruleFiles?: readonly string[];
  /** Where firing alerts go, e.g. http://127.0.0.1:9093. */
  readonly alertmanagerUrl?: string;
  /**
   * Also scrape the running pods annotated `prometheus.io/scrape: "true"` (port and path from
   * `prometheus.io/port` and `prometheus.io/path`) in these namespaces, with `namespace` and
   * `pod` target labels — what a Prometheus in the cluster does with kubernetes_sd_configs.
   * Debian's Prometheus is built without Kubernetes service discovery, so the pods are listed
   * through the API server here and handed over as file-based discovery (refreshed every 500 ms).
   */
  readonly kubernetesPods?: { readonly kubeconfigPath: string; readonly namespaces: readonly string[] };
  /** Binary; default /usr/bin/prometheus or `prometheus` on PATH. */
  readonly binary?: string;
  readonly log?: Log;
}

export interface PrometheusServer {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** Directory whose `*.yml` files are loaded as rule files on start and on `reloadRules()`. */
  readonly rulesDir: string;
  /** Writes `<rulesDir>/<name>.yml` and reloads. */
  writeRules(name: string, yaml: string): Promise<void>;
  /** POST /-/reload; rejects with Prometheus's message when a rule file or the config is invalid. */
  reloadRules(): Promise<void>;
  /** Replaces the scrape targets, reloads, and resolves once Prometheus scrapes all of them (~5 s). */
  setScrapeTargets(targets: readonly ScrapeTarget[]): Promise<void>;
  stop(): Promise<void>;
}

export interface AlertmanagerOptions {
  /** Receiver URL for every alert, e.g. http://127.0.0.1:PORT/alerts. */
  readonly webhookUrl: string;
  /** Sent as `Authorization: Bearer <token>`. */
  readonly bearerToken: string;
  /** Default '0s': a new group is sent at once. */
  readonly groupWait?: string;
  /** Default '1s'. */
  readonly groupInterval?: string;
  /** Default '1m'. */
  readonly repeatInterval?: string;
  /** Default [alertname, namespace, crema_model, revision, variant]. */
  readonly groupBy?: readonly string[];
  /** Also send resolved notifications. Default true. */
  readonly sendResolved?: boolean;
  /** Binary; default /usr/bin/prometheus-alertmanager or `alertmanager` on PATH. */
  readonly binary?: string;
  readonly log?: Log;
}

export interface AlertmanagerServer {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  stop(): Promise<void>;
}

function defaultLog(line: string) {
  console.error(`[testenv] ${line}`);
}

function findBinary(explicit: string | undefined, candidates: string[], what: string): string {
  if (explicit) {
    if (existsSync(explicit)) return explicit;
    throw new TestEnvError(`${what} binary ${explicit} not found. Install it: ${INSTALL_HINT}.`);
  }
  for (const c of candidates) {
    if (c.startsWith('/')) {
      if (existsSync(c)) return c;
      continue;
    }
    try {
      const p = execFileSync('/bin/sh', ['-c', `command -v ${c}`], { encoding: 'utf8' }).trim();
      if (p) return p;
    } catch {
      /* not on PATH */
    }
  }
  throw new TestEnvError(
    `${what} not found (looked for ${candidates.join(', ')}). Install it: ${INSTALL_HINT}.`,
  );
}

async function probe(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.body?.cancel();
  return res.ok;
}

/** A temp dir owned by this process, removed by `stop` and on interruption; `stop` is idempotent. */
async function ownedDir(procs: () => ManagedProcess[]): Promise<{ dir: string; stop: () => Promise<void> }> {
  reapAbandoned();
  const dir = await mkdtemp(join(tmpdir(), TEMP_PREFIX));
  claimDir(dir);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    unregister();
    await Promise.all(procs().map((p) => p.stop(5000)));
    await rm(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup({
    stop,
    stopNow() {
      for (const p of procs()) p.killNow();
      rmSync(dir, { recursive: true, force: true });
    },
  });
  return { dir, stop };
}

function hostPort(url: string): string {
  return new URL(url).host;
}

/** The prometheus.yml for the given options. */
export function buildPrometheusConfig(
  opts: Pick<
    PrometheusOptions,
    | 'scrapeTargets'
    | 'scrapeIntervalSeconds'
    | 'evaluationIntervalSeconds'
    | 'ruleFiles'
    | 'alertmanagerUrl'
    | 'kubernetesPods'
  >,
  rulesDir: string,
): string {
  const scrape = `${opts.scrapeIntervalSeconds ?? 1}s`;
  const staticConfigs = opts.scrapeTargets.map((t) =>
    typeof t === 'string' ? { targets: [t] } : { targets: [t.target], labels: { ...t.labels } },
  );
  return stringify({
    global: {
      scrape_interval: scrape,
      // Prometheus refuses a timeout longer than the interval; the default (10s) is.
      scrape_timeout: scrape,
      evaluation_interval: `${opts.evaluationIntervalSeconds ?? 1}s`,
    },
    rule_files: [join(rulesDir, '*.yml'), ...(opts.ruleFiles ?? [])],
    ...(opts.alertmanagerUrl
      ? {
          alerting: {
            alertmanagers: [
              { api_version: 'v2', static_configs: [{ targets: [hostPort(opts.alertmanagerUrl)] }] },
            ],
          },
        }
      : {}),
    scrape_configs: [
      { job_name: 'crema', static_configs: staticConfigs },
      ...(opts.kubernetesPods ? [kubernetesPodsJob(dirname(rulesDir))] : []),
    ],
  });
}

/** Where the pod targets file lives in Prometheus's dir. */
const POD_TARGETS = 'pod-targets.json';

/** The scrape job for annotated pods: file-based discovery, filled by `watchPodTargets`. */
function kubernetesPodsJob(dir: string): Record<string, unknown> {
  return {
    job_name: 'kubernetes-pods',
    file_sd_configs: [{ files: [join(dir, POD_TARGETS)], refresh_interval: '1s' }],
  };
}

interface PodList {
  items: Array<{
    metadata?: { name?: string; namespace?: string; annotations?: Record<string, string> };
    status?: { phase?: string; podIP?: string };
  }>;
}

/** The file_sd document for the annotated running pods of `list` (what the relabeling of kubernetes_sd would keep). */
export function podTargets(list: PodList): Array<{ targets: string[]; labels: Record<string, string> }> {
  return list.items
    .filter(
      (p) =>
        p.metadata?.annotations?.['prometheus.io/scrape'] === 'true' &&
        p.status?.phase === 'Running' &&
        p.status.podIP &&
        p.metadata.annotations['prometheus.io/port'],
    )
    .map((p) => ({
      targets: [`${p.status!.podIP}:${p.metadata!.annotations!['prometheus.io/port']}`],
      labels: {
        namespace: p.metadata!.namespace!,
        pod: p.metadata!.name!,
        __metrics_path__: p.metadata!.annotations!['prometheus.io/path'] ?? '/metrics',
      },
    }))
    .sort((a, b) => a.labels.pod.localeCompare(b.labels.pod));
}

/** Lists the namespaces' pods every 500 ms and rewrites the targets file when they change. */
function watchPodTargets(
  dir: string,
  k: NonNullable<PrometheusOptions['kubernetesPods']>,
): () => Promise<void> {
  let stopped = false;
  const loop = (async () => {
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(k.kubeconfigPath);
    const api = kc.makeApiClient(k8s.CoreV1Api);
    let last = '';
    while (!stopped) {
      try {
        const lists = await Promise.all(
          k.namespaces.map((namespace) => api.listNamespacedPod({ namespace })),
        );
        const text = JSON.stringify(lists.flatMap((l) => podTargets(l as PodList)));
        if (text !== last) {
          await writeFile(join(dir, `${POD_TARGETS}.tmp`), text);
          await rename(join(dir, `${POD_TARGETS}.tmp`), join(dir, POD_TARGETS));
          last = text;
        }
      } catch {
        /* the API server is busy or going away: next round */
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  return async () => {
    stopped = true;
    await loop;
  };
}

/** Starts Prometheus with the lifecycle API on, and resolves when /-/ready answers. */
export async function startPrometheus(opts: PrometheusOptions): Promise<PrometheusServer> {
  const log = opts.log ?? defaultLog;
  if (!opts.binary)
    await ensureDebianPackages([{ command: 'prometheus', pkg: 'prometheus' }], log, 'Prometheus');
  const bin = findBinary(opts.binary, ['/usr/bin/prometheus', 'prometheus'], 'prometheus');
  let proc: ManagedProcess | undefined;
  const owned = await ownedDir(() => (proc ? [proc] : []));
  const { dir } = owned;
  const rulesDir = join(dir, 'rules');
  const configPath = join(dir, 'prometheus.yml');
  let current = { ...opts };
  let stopPods: (() => Promise<void>) | undefined;
  try {
    await mkdir(rulesDir);
    await writeFile(configPath, buildPrometheusConfig(current, rulesDir));
    if (opts.kubernetesPods) {
      await writeFile(join(dir, POD_TARGETS), '[]');
      stopPods = watchPodTargets(dir, opts.kubernetesPods);
    }
    const url = await startWithPortRetry(1, async ([port]) => {
      const url = `http://127.0.0.1:${port}`;
      const p = new ManagedProcess(
        'prometheus',
        bin,
        [
          `--config.file=${configPath}`,
          `--storage.tsdb.path=${join(dir, `data-${port}`)}`,
          `--web.listen-address=127.0.0.1:${port}`,
          '--web.enable-lifecycle',
          '--storage.tsdb.retention.time=2h',
          // Firing alerts are re-sent every second (default 1m), so an alert evaluated before the
          // Alertmanager was discovered, or lost by it, still arrives within a second.
          '--rules.alert.resend-delay=1s',
          '--log.level=warn',
        ],
        dir,
      );
      proc = p;
      await waitReady(p, () => probe(`${url}/-/ready`), 30_000, 'ready (/-/ready)');
      return url;
    });
    // The notifier learns its Alertmanagers through service discovery, which publishes updates
    // every 5 s (also after each reload); until then alerts go nowhere, so "ready" and
    // "reloaded" both wait until the Alertmanager is known again.
    const alertmanagerKnown = async () => {
      if (!opts.alertmanagerUrl) return;
      const want = hostPort(opts.alertmanagerUrl);
      await waitReady(
        proc!,
        async () => {
          const res = await fetch(`${url}/api/v1/alertmanagers`, { signal: AbortSignal.timeout(2000) });
          const body = (await res.json()) as { data?: { activeAlertmanagers?: { url: string }[] } };
          return (body.data?.activeAlertmanagers ?? []).some((a) => hostPort(a.url) === want);
        },
        30_000,
        `sending to the Alertmanager at ${opts.alertmanagerUrl}`,
      );
    };
    await alertmanagerKnown();
    log(`prometheus on ${url}`);
    const reloadRules = async () => {
      const res = await fetch(`${url}/-/reload`, { method: 'POST', signal: AbortSignal.timeout(10_000) });
      const body = await res.text();
      if (!res.ok) {
        const tail = (await proc?.tail(5)) ?? '';
        throw new TestEnvError(`prometheus reload failed (${res.status}): ${body.trim()}\n${tail}`);
      }
      await alertmanagerKnown();
    };
    return {
      url,
      rulesDir,
      reloadRules,
      async writeRules(name, yaml) {
        if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new TestEnvError(`writeRules: bad file name ${name}`);
        await writeFile(join(rulesDir, `${name}.yml`), yaml);
        await reloadRules();
      },
      async setScrapeTargets(targets) {
        current = { ...current, scrapeTargets: targets };
        await writeFile(configPath, buildPrometheusConfig(current, rulesDir));
        await reloadRules();
        // Scrape discovery also publishes every 5 s: wait until every target is being scraped.
        const want = targets.map((t) => (typeof t === 'string' ? t : t.target));
        await waitReady(
          proc!,
          async () => {
            const res = await fetch(`${url}/api/v1/targets?state=active`, {
              signal: AbortSignal.timeout(2000),
            });
            const body = (await res.json()) as { data?: { activeTargets?: { scrapeUrl: string }[] } };
            const active = new Set((body.data?.activeTargets ?? []).map((t) => hostPort(t.scrapeUrl)));
            return want.every((t) => active.has(t));
          },
          30_000,
          `scraping ${want.join(', ')}`,
        );
      },
      stop: async () => {
        await stopPods?.();
        await owned.stop();
      },
    };
  } catch (err) {
    await stopPods?.();
    await owned.stop();
    throw err;
  }
}

/** The alertmanager.yml for the given options: one webhook receiver with a bearer token. */
export function buildAlertmanagerConfig(
  opts: Omit<AlertmanagerOptions, 'binary' | 'log'>,
  tokenFile: string,
): string {
  return stringify({
    route: {
      receiver: 'crema',
      group_by: [...(opts.groupBy ?? ['alertname', 'namespace', 'crema_model', 'revision', 'variant'])],
      group_wait: opts.groupWait ?? '0s',
      group_interval: opts.groupInterval ?? '1s',
      repeat_interval: opts.repeatInterval ?? '1m',
    },
    receivers: [
      {
        name: 'crema',
        webhook_configs: [
          {
            url: opts.webhookUrl,
            send_resolved: opts.sendResolved ?? true,
            http_config: { authorization: { type: 'Bearer', credentials_file: tokenFile } },
          },
        ],
      },
    ],
  });
}

/** Starts Alertmanager (clustering off) and resolves when /-/ready answers. */
export async function startAlertmanager(opts: AlertmanagerOptions): Promise<AlertmanagerServer> {
  const log = opts.log ?? defaultLog;
  if (!opts.binary)
    await ensureDebianPackages(
      [{ command: 'prometheus-alertmanager', pkg: 'prometheus-alertmanager' }],
      log,
      'Alertmanager',
    );
  const bin = findBinary(opts.binary, ['/usr/bin/prometheus-alertmanager', 'alertmanager'], 'alertmanager');
  let proc: ManagedProcess | undefined;
  const owned = await ownedDir(() => (proc ? [proc] : []));
  const { dir } = owned;
  try {
    const tokenFile = join(dir, 'webhook-token');
    await writeFile(tokenFile, opts.bearerToken, { mode: 0o600 });
    const configPath = join(dir, 'alertmanager.yml');
    await writeFile(configPath, buildAlertmanagerConfig(opts, tokenFile));
    const url = await startWithPortRetry(1, async ([port]) => {
      const url = `http://127.0.0.1:${port}`;
      const p = new ManagedProcess(
        'alertmanager',
        bin,
        [
          `--config.file=${configPath}`,
          `--storage.path=${join(dir, `data-${port}`)}`,
          `--web.listen-address=127.0.0.1:${port}`,
          // An empty address turns gossip clustering off: no second port, no peers to wait for.
          '--cluster.listen-address=',
          '--log.level=warn',
        ],
        dir,
      );
      proc = p;
      await waitReady(p, () => probe(`${url}/-/ready`), 30_000, 'ready (/-/ready)');
      return url;
    });
    log(`alertmanager on ${url}`);
    return { url, stop: owned.stop };
  } catch (err) {
    await owned.stop();
    throw err;
  }
}
