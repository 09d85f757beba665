/**
 * Stands in for the kubelet, the Service network and a rules loader in the end-to-end tests,
 * using real serving processes (serving/src/server.ts) instead of containers:
 *
 * - every serving Deployment the operator renders gets a real serving process started from its
 *   pod template's env (CREMA_RANKING_MODEL_URI/_SHA256, CREMA_VARIANT), on one of a fixed
 *   set of loopback ports that Prometheus scrapes; once its /readyz answers and its /metrics
 *   shows the digest the template names (CREMA_RANKING_MODEL_SHA256), the Deployment's pods are marked
 *   Ready with `markPodsReady`, so the operator sees ready replicas only for a process that
 *   really serves;
 * - a template change (promotion rolls stable to the new digest) starts a new process; the old
 *   one keeps serving until the new one is ready and the router points at it (maxUnavailable 0);
 * - `<model>-router`'s router.json is copied to a file for a real router process
 *   (`server.ts --mode router`) with each Service URL rewritten to the process behind it; the
 *   file is replaced atomically and the router's `crema_router_config_reloads_total` tells when
 *   the router applied it. Each applied config is an epoch (weights, written, applied);
 * - ConfigMaps labelled `crema.dev/prometheus-rules` (the operator's drift rules) are written to
 *   Prometheus's rules directory and Prometheus is reloaded.
 *
 * A process whose Deployment is gone is stopped (SIGTERM, in-flight requests finish) after the
 * router no longer routes to it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PrometheusServer } from '../../../hack/testenv/observability.js';
import { RESOURCES, resourcePath, type KubeClient, type KubeList, type KubeObject } from '../runtime/kube.js';
import { markPodsReady } from '../testing/helpers.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const MODEL_LABEL = 'crema.dev/model';
const TRACK_LABEL = 'crema.dev/track';
const RULES_LABEL = 'crema.dev/prometheus-rules';

interface DeploymentObj extends KubeObject {
  spec: { template: { spec: { containers: Array<{ env?: Array<{ name: string; value?: string }> }> } } };
}
interface ConfigMapObj extends KubeObject {
  data?: Record<string, string>;
}

/** One real serving process standing in for the pods of a Deployment template. */
export interface ServingProcess {
  readonly deployment: string;
  readonly model: string;
  readonly track: string;
  readonly sha: string;
  readonly port: number;
  readonly env: Readonly<Record<string, string>>;
  readonly startedAt: number;
  readyAt?: number;
  stoppedAt?: number;
  readonly proc: ChildProcess;
  readonly output: string[];
}

/** A router config in effect: from `appliedAt` until the next epoch's `writtenAt`. */
export interface Epoch {
  readonly salt: string;
  readonly variants: ReadonlyArray<{ name: string; weight: number; upstream?: string }>;
  readonly writtenAt: number;
  appliedAt?: number;
}

interface RouterProcess {
  readonly model: string;
  readonly file: string;
  readonly proc: ChildProcess;
  readonly port: number;
  readonly output: string[];
  text: string;
  readonly epochs: Epoch[];
}

export interface KubeletOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  readonly redisUrl: string;
  /** Loopback ports serving processes may use (Prometheus scrapes all of them). */
  readonly ports: readonly number[];
  readonly prometheus: PrometheusServer;
  /** Directory for router config files. */
  readonly dir: string;
  /** Extra env for a serving process (fault injection), by Deployment name. */
  readonly extraEnv?: (deployment: string) => Record<string, string> | undefined;
  readonly log?: (line: string) => void;
}

function tail(lines: string[], chunk: Buffer) {
  lines.push(...chunk.toString().split('\n').filter(Boolean));
  if (lines.length > 200) lines.splice(0, lines.length - 200);
}

async function getText(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return { status: res.status, text: await res.text() };
}

function appliedReloads(metrics: string): number {
  const m = /crema_router_config_reloads_total\{outcome="applied"\} (\d+)/.exec(metrics);
  return m ? Number(m[1]) : 0;
}

async function stopProcess(p: ChildProcess, timeoutMs = 5000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

export class Kubelet {
  readonly processes: ServingProcess[] = [];
  private readonly routers = new Map<string, RouterProcess>();
  private readonly free: number[];
  private readonly loadedRules = new Map<string, string>();
  /** Models whose RecommenderModel was deleted: their leftovers are not started again. */
  private readonly forgotten = new Set<string>();
  private stopped = false;
  private loops: Promise<void>[] = [];
  private readonly log: (line: string) => void;
  /** When each rule file version was loaded into Prometheus (reload done, Alertmanager known again). */
  readonly rulesLoaded: { name: string; text: string; at: number }[] = [];
  /** Errors from the loops (a test asserts there are none). */
  readonly errors: string[] = [];

  constructor(private readonly o: KubeletOptions) {
    this.free = [...o.ports];
    this.log = o.log ?? (() => {});
  }

  start(): void {
    this.loops = [this.loop(250, () => this.tick()), this.loop(300, () => this.syncRules())];
  }

  private async loop(everyMs: number, fn: () => Promise<void>): Promise<void> {
    while (!this.stopped) {
      try {
        await fn();
      } catch (err) {
        if (!this.stopped) {
          const msg = (err as Error).message;
          if (this.errors[this.errors.length - 1] !== msg) this.errors.push(msg);
          this.log(`kubelet: ${msg}`);
        }
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }

  /** The router of `model` once it runs: its URL and its config epochs. */
  router(model: string): { url: string; epochs: readonly Epoch[] } | undefined {
    const r = this.routers.get(model);
    return r && { url: `http://127.0.0.1:${r.port}`, epochs: r.epochs };
  }

  /** Serving processes of `model` (all that ran), oldest first. */
  processesOf(model: string): ServingProcess[] {
    return this.processes.filter((p) => p.model === model);
  }

  private running(p: ServingProcess): boolean {
    return p.stoppedAt === undefined;
  }

  private async tick(): Promise<void> {
    const { client, namespace } = this.o;
    const list = await client.request<KubeList<DeploymentObj>>(
      'GET',
      resourcePath(RESOURCES.deployment, namespace),
      { query: { labelSelector: 'app.kubernetes.io/name=crema-serving' } },
    );
    // 1. A process per Deployment template.
    const current = new Map<string, { model: string; track: string; sha: string }>();
    for (const d of list.items) {
      const name = d.metadata!.name!;
      const labels = d.metadata?.labels ?? {};
      const env = Object.fromEntries(
        (d.spec.template.spec.containers[0]?.env ?? []).map((e) => [e.name, e.value ?? '']),
      );
      const model = labels[MODEL_LABEL] ?? '';
      const track = labels[TRACK_LABEL] ?? '';
      if (this.forgotten.has(model)) continue;
      // The digest the template pins, whatever the task (CREMA_<TASK>_MODEL_SHA256).
      const sha = Object.entries(env).find(([k]) => /^CREMA_[A-Z]+_MODEL_SHA256$/.test(k))?.[1] ?? '';
      current.set(name, { model, track, sha });
      const existing = this.processes.find((p) => this.running(p) && p.deployment === name && p.sha === sha);
      if (!existing) this.startServing(name, model, track, sha, env);
      else if (existing.readyAt) {
        await markPodsReady(client, namespace, `${MODEL_LABEL}=${model},${TRACK_LABEL}=${track}`);
      }
    }
    // 2. Routers follow their ConfigMaps.
    const cms = await client.request<KubeList<ConfigMapObj>>(
      'GET',
      resourcePath(RESOURCES.configMap, namespace),
    );
    for (const cm of cms.items) {
      const name = cm.metadata!.name!;
      const text = cm.data?.['router.json'];
      if (!name.endsWith('-router') || !text) continue;
      if (this.forgotten.has(name.slice(0, -'-router'.length))) continue;
      await this.syncRouter(name.slice(0, -'-router'.length), text, current);
    }
    // 3. Processes nothing routes to and no Deployment wants any more.
    const routed = new Set<number>();
    for (const r of this.routers.values()) {
      for (const m of r.text.matchAll(/127\.0\.0\.1:(\d+)/g)) routed.add(Number(m[1]));
    }
    for (const p of this.processes) {
      if (!this.running(p)) continue;
      const want = current.get(p.deployment);
      if (want && want.sha === p.sha) continue;
      if (routed.has(p.port)) continue;
      await this.stopServing(p);
    }
  }

  /** The local upstream standing in for Service `svc` of `model`. */
  private upstreamFor(model: string, svc: string, current: Map<string, { sha: string }>): string | undefined {
    const deployment = svc === model ? `${model}-stable` : svc === `${model}-canary` ? `${model}-canary` : '';
    const ready = this.processes.filter(
      (p) => this.running(p) && p.readyAt !== undefined && p.deployment === deployment,
    );
    // Like a Service during a rolling update: the new template's pods once ready, else the old.
    const want = current.get(deployment)?.sha;
    const p = ready.find((x) => x.sha === want) ?? ready[0];
    return p && `http://127.0.0.1:${p.port}`;
  }

  private async syncRouter(
    model: string,
    cmText: string,
    current: Map<string, { sha: string }>,
  ): Promise<void> {
    const doc = JSON.parse(cmText) as Omit<Epoch, 'writtenAt'>;
    const variants = doc.variants.map((v) => {
      if (!v.upstream) return v;
      const svc = new URL(v.upstream).hostname.split('.')[0]!;
      // A Service without ready endpoints: connections are refused (the router falls back to stable).
      return { ...v, upstream: this.upstreamFor(model, svc, current) ?? 'http://127.0.0.1:1' };
    });
    const mapped = { salt: doc.salt, stable: (doc as { stable?: string }).stable, variants };
    const text = JSON.stringify(mapped);
    const stableUp = variants.find((v) => v.name === mapped.stable)?.upstream;
    let r = this.routers.get(model);
    if (r?.text === text) return;
    if (!r) {
      if (!stableUp || stableUp.endsWith(':1')) return; // no stable process yet
      const file = join(this.o.dir, `${model}-router.json`);
      await writeFile(file, text);
      const writtenAt = Date.now();
      r = await this.startRouter(model, file, text);
      r.epochs.push({ salt: doc.salt, variants, writtenAt, appliedAt: Date.now() });
      return;
    }
    const before = appliedReloads((await getText(`http://127.0.0.1:${r.port}/metrics`)).text);
    await writeFile(`${r.file}.tmp`, text);
    await rename(`${r.file}.tmp`, r.file);
    const epoch: Epoch = { salt: doc.salt, variants, writtenAt: Date.now() };
    r.epochs.push(epoch);
    r.text = text;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const m = await getText(`http://127.0.0.1:${r.port}/metrics`);
      if (appliedReloads(m.text) > before) {
        epoch.appliedAt = Date.now();
        this.log(`router ${model}: ${variants.map((v) => `${v.name}=${v.weight}`).join(' ')} applied`);
        return;
      }
      await new Promise((res) => setTimeout(res, 25));
    }
    throw new Error(`router ${model} did not apply ${text}`);
  }

  private async startRouter(model: string, file: string, text: string): Promise<RouterProcess> {
    const output: string[] = [];
    const proc = spawn(process.execPath, ['--import', 'tsx', 'serving/src/server.ts', '--mode', 'router'], {
      cwd: REPO,
      env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', CREMA_ROUTER_CONFIG: file },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (b: Buffer) => tail(output, b));
    proc.stderr!.on('data', (b: Buffer) => tail(output, b));
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`router ${model} did not listen: ${output.join('\n')}`)),
        60_000,
      );
      const check = () => {
        const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(output.join('\n'));
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      };
      proc.stdout!.on('data', check);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`router ${model} exited ${code}: ${output.join('\n')}`));
      });
    });
    const r: RouterProcess = { model, file, proc, port, output, text, epochs: [] };
    this.routers.set(model, r);
    this.log(`router ${model} on :${port}`);
    return r;
  }

  private startServing(
    deployment: string,
    model: string,
    track: string,
    sha: string,
    env: Record<string, string>,
  ): void {
    const port = this.free.shift();
    if (port === undefined) throw new Error('kubelet: no free serving port left');
    const output: string[] = [];
    const extra = this.o.extraEnv?.(deployment) ?? {};
    const procEnv = {
      LOG_LEVEL: 'warn',
      // The pod template's env as the operator rendered it (model URI and pinned digest per
      // task, variant), with this process's port and Redis.
      ...env,
      HOST: '127.0.0.1',
      PORT: String(port),
      REDIS_URL: this.o.redisUrl,
      ...extra,
    };
    const proc = spawn(process.execPath, ['--import', 'tsx', 'serving/src/server.ts'], {
      cwd: REPO,
      env: { ...process.env, ...procEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout!.on('data', (b: Buffer) => tail(output, b));
    proc.stderr!.on('data', (b: Buffer) => tail(output, b));
    const p: ServingProcess = {
      deployment,
      model,
      track,
      sha,
      port,
      env: procEnv,
      startedAt: Date.now(),
      proc,
      output,
    };
    this.processes.push(p);
    this.log(`serving ${deployment} (${sha.slice(0, 12)}) starting on :${port}`);
    void this.awaitReady(p).catch((err: unknown) => {
      const msg = `serving ${deployment} on :${port}: ${(err as Error).message}\n${output.slice(-20).join('\n')}`;
      this.errors.push(msg);
      this.log(msg);
      void this.stopServing(p);
    });
  }

  private async awaitReady(p: ServingProcess): Promise<void> {
    const base = `http://127.0.0.1:${p.port}`;
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && this.running(p)) {
      if (p.proc.exitCode !== null) throw new Error(`exited ${p.proc.exitCode}`);
      try {
        if ((await getText(`${base}/readyz`)).status === 200) {
          const metrics = (await getText(`${base}/metrics`)).text;
          if (!metrics.includes(`revision="${p.sha}"`))
            throw new Error(`ready, but not serving the template's digest ${p.sha}`);
          p.readyAt = Date.now();
          this.log(`serving ${p.deployment} ready on :${p.port} after ${p.readyAt - p.startedAt} ms`);
          return;
        }
      } catch (err) {
        if ((err as Error).message.startsWith('ready,')) throw err;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (this.running(p)) throw new Error('not ready within 60 s');
  }

  private async stopServing(p: ServingProcess): Promise<void> {
    if (!this.running(p)) return;
    p.stoppedAt = Date.now();
    this.log(`serving ${p.deployment} (${p.sha.slice(0, 12)}) on :${p.port} stopping`);
    await stopProcess(p.proc);
    this.free.push(p.port);
  }

  /** Writes the operator's rule ConfigMaps into Prometheus's rules directory and reloads. */
  private async syncRules(): Promise<void> {
    const { client, namespace, prometheus } = this.o;
    const cms = await client.request<KubeList<ConfigMapObj>>(
      'GET',
      resourcePath(RESOURCES.configMap, namespace),
      {
        query: { labelSelector: `${RULES_LABEL}=true` },
      },
    );
    const seen = new Set<string>();
    for (const cm of cms.items) {
      const name = `${namespace}.${cm.metadata!.name!}`;
      const text = cm.data?.['rules.yaml'];
      if (!text) continue;
      seen.add(name);
      if (this.loadedRules.get(name) === text) continue;
      await prometheus.writeRules(name, text);
      this.loadedRules.set(name, text);
      this.rulesLoaded.push({ name, text, at: Date.now() });
      this.log(`rules ${name} loaded into Prometheus`);
    }
    for (const name of [...this.loadedRules.keys()]) {
      if (seen.has(name)) continue;
      await rm(join(prometheus.rulesDir, `${name}.yml`), { force: true });
      await prometheus.reloadRules();
      this.loadedRules.delete(name);
    }
  }

  /** Stops the router and serving processes of `model` (after its RecommenderModel is deleted). */
  async forget(model: string): Promise<void> {
    this.forgotten.add(model);
    const r = this.routers.get(model);
    if (r) {
      this.routers.delete(model);
      await stopProcess(r.proc);
    }
    await Promise.all(this.processesOf(model).map((p) => this.stopServing(p)));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    await Promise.all([...this.routers.values()].map((r) => stopProcess(r.proc)));
    this.routers.clear();
    await Promise.all(this.processes.map((p) => this.stopServing(p)));
  }
}

/** Deletes a RecommenderModel (its children go with it through owner references). */
export async function deleteModel(client: KubeClient, namespace: string, name: string): Promise<void> {
  await client.request('DELETE', resourcePath(RESOURCES.recommenderModel, namespace, name)).catch(() => {});
}
