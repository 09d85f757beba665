/**
 * Chaos: the operator killed (SIGKILL) at each write of a promotion, an abort and a rollback, and
 * at random moments, then restarted; every rollout must converge with no revision rolled twice,
 * no step shortened or skipped, and no object left behind or created twice.
 *
 * Where to kill comes from the API server's audit log: a reference run of each transition lists
 * the operator's writes from the transition's first write (its intent in status) to the end;
 * then one trial per write kills the operator right after the API server carried that write out,
 * before the operator hears back (a proxy between them, operator/test/kill-proxy.ts).
 *
 * Control plane only: pod readiness simulated (the operator's writes are what is under test).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createServer } from 'node:net';
import { installCrds } from './install.js';
import {
  KubeApiError,
  RESOURCES,
  resourcePath,
  type KubeClient,
  type KubeList,
  type KubeObject,
} from './runtime/kube.js';
import type { RecommenderModel } from './api/v1alpha1/index.js';
import {
  auditedWrites,
  eventually,
  notifyAlertWebhook,
  simulatePodsReady,
  testClient,
} from '../test/helpers.js';
import { startKillProxy, type SeenWrite } from '../test/kill-proxy.js';
import { exited, startOperatorProcess, type OperatorProcess } from '../test/process.js';

const suffix = Date.now().toString(36);
const sha = (c: string) => c.repeat(64);
const NAME = 'drinks';
const TOKEN = 'chaos-token';
let client: KubeClient;

type Kind = 'promotion' | 'abort' | 'rollback';

interface TrialResult {
  readonly kind: Kind;
  readonly ns: string;
  /** The write the operator was killed right after, namespace made generic. */
  readonly killedAfter?: string;
  readonly killed: boolean;
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });

const statusOf = (w: SeenWrite) =>
  /\/recommendermodels\/[^/]+\/status$/.test(w.path.split('?')[0]!)
    ? ((w.body as { status?: Record<string, unknown> } | undefined)?.status ?? {})
    : undefined;

/** The first write of each transition: the decision written to status (its intent). */
const ANCHOR: Record<Kind, (w: SeenWrite) => boolean> = {
  promotion: (w) => !!statusOf(w)?.['promotion'],
  abort: (w) => statusOf(w)?.['abortedModelSha'] === sha('b'),
  rollback: (w) => statusOf(w)?.['abortedModelSha'] === sha('b'),
};

const STEPS: Record<Kind, unknown[]> = {
  promotion: [
    { weight: 30, pause: '2s', analysis: false },
    { weight: 60, pause: '2s', analysis: false },
  ],
  // Held until promoted by hand: the abort or the alert ends it.
  abort: [{ weight: 30, analysis: false }],
  rollback: [{ weight: 30, analysis: false }],
};

const getModel = (ns: string) =>
  client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, NAME));
const exists = (ns: string, r: Parameters<typeof resourcePath>[0], name: string) =>
  client.request('GET', resourcePath(r, ns, name)).then(
    () => true,
    (e: unknown) => (e instanceof KubeApiError && e.notFound ? false : Promise.reject(e)),
  );

async function postDriftAlert(port: number, ns: string): Promise<void> {
  const res = await notifyAlertWebhook(port, TOKEN, {
    namespace: ns,
    model: NAME,
    revision: sha('b'),
    variant: 'canary',
    psi: 0.41,
  });
  if (res.status !== 200) throw new Error(`webhook answered ${res.status}`);
}

/** Whether the transition has finished: no canary objects, nothing pending in status. */
async function converged(kind: Kind, ns: string): Promise<boolean> {
  const m = await getModel(ns);
  const s = m.status ?? {};
  if (s.canary || s.promotion || s.pendingCommand) return false;
  if (m.metadata?.annotations?.['crema.dev/abort']) return false;
  if (kind === 'promotion' ? s.stable?.revision !== 2 : s.abortedModelSha !== sha('b')) return false;
  return !(
    (await exists(ns, RESOURCES.deployment, `${NAME}-canary`)) ||
    (await exists(ns, RESOURCES.deployment, `${NAME}-router`))
  );
}

/** What every converged trial must show. */
async function checkConverged(kind: Kind, ns: string): Promise<void> {
  const m = await getModel(ns);
  const history = (m.status?.history ?? []).map((h) => `${h.track} ${h.revision}: ${h.reason}`);
  const stable = await client.request<
    KubeObject & { spec: { template: { metadata: { annotations: Record<string, string> } } } }
  >('GET', resourcePath(RESOURCES.deployment, ns, `${NAME}-stable`));
  // The controller-manager counts template changes: 2 = rolled once to the new model.
  const rolls = stable.metadata?.annotations?.['deployment.kubernetes.io/revision'];
  const sha256 = stable.spec.template.metadata.annotations['crema.dev/model-sha256'];
  if (kind === 'promotion') {
    expect({ rolls, sha256, stable: m.status?.stable?.revision }, ns).toEqual({
      rolls: '2',
      sha256: sha('b'),
      stable: 2,
    });
    expect(history, ns).toEqual([
      expect.stringMatching(/^stable 1: Replaced by revision 2 after a successful canary/),
    ]);
  } else {
    expect({ rolls, sha256, stable: m.status?.stable?.revision }, ns).toEqual({
      rolls: '1',
      sha256: sha('a'),
      stable: 1,
    });
    expect(history, ns).toEqual([
      expect.stringMatching(kind === 'abort' ? /^canary 2: Aborted: / : /^canary 2: DriftDetected: /),
    ]);
  }
  // One stable Deployment, nothing else of the model's left.
  const deployments = await client.request<KubeList<KubeObject>>(
    'GET',
    resourcePath(RESOURCES.deployment, ns),
  );
  expect(deployments.items.map((d) => d.metadata?.name).sort(), ns).toEqual([`${NAME}-stable`]);
  // No object created again after it was removed (a re-decided transition would).
  const writes = await auditedWrites(inject('auditLogPath'), 'crema-operator/', ns);
  for (const child of [`${NAME}-canary`, `${NAME}-router`]) {
    const mine = writes.filter((e) => e.objectRef?.resource === 'deployments' && e.objectRef.name === child);
    const removed = mine.findIndex((e) => e.verb === 'delete' && e.responseStatus?.code === 200);
    expect(removed, `${ns}: ${child} removed`).toBeGreaterThanOrEqual(0);
    expect(
      mine.slice(removed + 1).filter((e) => e.verb !== 'delete'),
      `${ns}: ${child} written after its removal`,
    ).toEqual([]);
  }
}

/** Status bodies the API server logged for `ns`, oldest first. */
async function statusWrites(ns: string): Promise<Array<Record<string, unknown>>> {
  const writes = await auditedWrites(inject('auditLogPath'), 'crema-operator/', ns);
  return writes
    .filter((e) => e.objectRef?.subresource === 'status' && e.responseStatus?.code === 200)
    .map((e) => (e.requestObject as { status?: Record<string, unknown> } | undefined)?.status ?? {});
}

/** Every step of a promotion lasted at least its pause: none skipped or cut short by a restart. */
async function checkSteps(ns: string): Promise<void> {
  const started = new Map<number, number>();
  let promotedAt: number | undefined;
  for (const s of await statusWrites(ns)) {
    const c = s['canary'] as { step?: number; stepStartedAt?: string; weight?: number } | null | undefined;
    if (c?.stepStartedAt && c.weight && !started.has(c.step ?? 0))
      started.set(c.step ?? 0, Date.parse(c.stepStartedAt));
    const p = s['promotion'] as { startedAt?: string } | null | undefined;
    if (p?.startedAt && promotedAt === undefined) promotedAt = Date.parse(p.startedAt);
  }
  expect([...started.keys()].sort(), `${ns}: steps that carried traffic`).toEqual([0, 1]);
  const pauses = [started.get(1)! - started.get(0)!, promotedAt! - started.get(1)!];
  for (const ms of pauses)
    expect(ms, `${ns}: step lengths ${pauses.join(', ')} ms`).toBeGreaterThanOrEqual(2000);
}

/**
 * One trial: an operator (through the kill proxy) runs the transition and is killed where
 * `kill` says; a second operator (direct) takes over; the rollout must converge.
 */
async function trial(
  kind: Kind,
  id: string,
  kill: { write: string; occurrence: number } | { afterMs: number } | undefined,
): Promise<TrialResult & { ms: number }> {
  const ns = `chaos-${id}-${suffix}`;
  await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: ns } } });
  const kubelet = setInterval(
    () => void simulatePodsReady(client, ns, 'app.kubernetes.io/name=crema-serving').catch(() => {}),
    300,
  );
  const proxy = await startKillProxy(inject('kubeconfigPath'));
  const procs: OperatorProcess[] = [];
  const env = (port: number) => ({
    CREMA_LEADER_ELECTION: 'false',
    CREMA_ALERT_WEBHOOK_PORT: String(port),
    CREMA_ALERT_WEBHOOK_HOST: '127.0.0.1',
    CREMA_ALERT_WEBHOOK_TOKEN: TOKEN,
  });
  const setAbort = () =>
    client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, NAME), {
      contentType: 'application/merge-patch+json',
      body: { metadata: { annotations: { 'crema.dev/abort': 'true' } } },
    });
  try {
    const firstPort = await freePort();
    const first = await startOperatorProcess({
      kubeconfigPath: proxy.kubeconfigPath,
      ns,
      identity: `chaos-${id}-first`,
      env: env(firstPort),
    });
    procs.push(first);
    if (kill && 'write' in kill)
      proxy.arm({
        anchor: ANCHOR[kind],
        target: (w) => describeWrite(w.method, w.path, ns) === kill.write,
        occurrence: kill.occurrence,
        kill: () => first.kill('SIGKILL'),
      });

    await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
      body: {
        apiVersion: 'crema.dev/v1alpha1',
        kind: 'RecommenderModel',
        metadata: { name: NAME, namespace: ns },
        spec: {
          model: { uri: 'file:///models/a.onnx', sha256: sha('a'), task: 'drink-ranking' },
          serving: { minReplicas: 1, maxReplicas: 2 },
          rollout: { steps: STEPS[kind] },
        },
      },
    });
    await eventually(
      async () =>
        (await getModel(ns)).status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      60_000,
      `${ns} Ready`,
    );
    const started = Date.now();
    await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, NAME), {
      contentType: 'application/merge-patch+json',
      body: { spec: { model: { sha256: sha('b'), uri: 'file:///models/b.onnx' } } },
    });
    const timer =
      kill && 'afterMs' in kill ? setTimeout(() => first.kill('SIGKILL'), kill.afterMs) : undefined;
    const alive = () => first.exitCode === null && first.signalCode === null;
    if (kind !== 'promotion') {
      await eventually(
        async () => !alive() || (await getModel(ns)).status?.canary?.weight === 30,
        60_000,
        `${ns} canary at 30%`,
      );
      if (alive()) {
        if (kind === 'abort') await setAbort();
        else await postDriftAlert(firstPort, ns).catch(() => {});
      }
    }
    // Until the kill (or, without one, convergence).
    await eventually(
      async () => !alive() || (await converged(kind, ns)),
      90_000,
      `${ns} first operator killed or converged`,
    );
    clearTimeout(timer);
    // The last writes of a transition converge it: the kill right after one may land a moment later.
    if (alive() && kill && 'write' in kill)
      await eventually(() => !alive(), 3000, `${ns} killed`).catch(() => {});
    let ms = Date.now() - started;
    const killed = first.signalCode === 'SIGKILL';
    if (killed) {
      const secondPort = await freePort();
      procs.push(
        await startOperatorProcess({
          kubeconfigPath: inject('kubeconfigPath'),
          ns,
          identity: `chaos-${id}-second`,
          env: env(secondPort),
        }),
      );
      if (kind === 'abort') {
        // Killed before the abort was given (a random moment): give it now.
        const m = await eventually(
          async () => {
            const m = await getModel(ns);
            return m.status?.canary?.weight === 30 || m.status?.abortedModelSha ? m : undefined;
          },
          60_000,
          `${ns} canary at 30% or aborted`,
        );
        if (!m.status?.abortedModelSha && !m.metadata?.annotations?.['crema.dev/abort']) await setAbort();
      }
      // Alertmanager re-sends an alert while it fires.
      const resend =
        kind === 'rollback'
          ? setInterval(() => void postDriftAlert(secondPort, ns).catch(() => {}), 1000)
          : undefined;
      try {
        await eventually(() => converged(kind, ns), 60_000, `${ns} converged after the restart`);
      } finally {
        clearInterval(resend);
      }
      ms = Date.now() - started;
    }
    await checkConverged(kind, ns);
    if (kind === 'promotion') await checkSteps(ns);
    const after = proxy.killedAfter();
    return {
      kind,
      ns,
      killed,
      ms,
      ...(after ? { killedAfter: describeWrite(after.method, after.path, ns) } : {}),
    };
  } finally {
    clearInterval(kubelet);
    for (const p of procs) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
      await exited(p);
    }
    await proxy.close();
    await client.request('DELETE', `/api/v1/namespaces/${ns}`).catch(() => {});
  }
}

const VERB: Record<string, string> = { POST: 'create', PATCH: 'patch', PUT: 'update', DELETE: 'delete' };

/** "verb path" with the namespace made generic, so trials compare with the reference run. */
function describeWrite(method: string, path: string, ns: string): string {
  return `${VERB[method] ?? method} ${path
    .split('?')[0]!
    .replaceAll(ns, 'NS')
    .replace(/\/events\/[^/]+$/, '/events/*')}`;
}

/** The operator's writes from the transition's first write on, as the audit log shows them. */
async function transitionWrites(kind: Kind, ns: string): Promise<string[]> {
  const writes = (await auditedWrites(inject('auditLogPath'), 'crema-operator/', ns)).filter(
    (e) => e.objectRef?.resource !== 'leases',
  );
  const i = writes.findIndex((e) =>
    ANCHOR[kind]({ method: 'PATCH', path: e.requestURI, body: e.requestObject }),
  );
  expect(i, `${ns}: the ${kind}'s first write in the audit log`).toBeGreaterThanOrEqual(0);
  return writes.slice(i).map((e) => {
    const method = Object.entries(VERB).find(([, v]) => v === e.verb)?.[0] ?? e.verb;
    return describeWrite(method, e.requestURI, ns);
  });
}

async function pool<T>(jobs: Array<() => Promise<T>>, width: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]!();
      }
    }),
  );
  return out;
}

beforeAll(async () => {
  client = await testClient(inject('kubeconfigPath'));
  await installCrds(client);
});

afterAll(() => client?.close());

describe('operator killed mid-transition (control plane only: pod readiness simulated)', () => {
  const reference = new Map<Kind, { writes: string[]; ms: number }>();

  it.each(['promotion', 'abort', 'rollback'] as const)(
    'a %s killed after each of its writes (from the audit log) converges, nothing done twice',
    { timeout: 900_000 },
    async (kind) => {
      const ref = await trial(kind, `${kind}-ref`, undefined);
      const writes = await transitionWrites(kind, ref.ns);
      reference.set(kind, { writes, ms: ref.ms });
      expect(writes.length).toBeGreaterThan(2);
      // Kill right after each write of the reference run: the n-th write of that kind since
      // the transition's first write (runs differ a little in how many status writes they make).
      const seen = new Map<string, number>();
      const points = writes.map((write) => {
        const occurrence = (seen.get(write) ?? 0) + 1;
        seen.set(write, occurrence);
        return { write, occurrence };
      });
      const results = await pool(
        points.map((p, i) => () => trial(kind, `${kind}-${i}`, p)),
        3,
      );
      console.log(
        `[chaos] ${JSON.stringify({
          kind,
          reference: writes,
          killedAfter: results.map((r) => r.killedAfter ?? null),
          killed: results.filter((r) => r.killed).length,
        })}`,
      );
      // Every kind of write of the reference run was a kill point (a trial whose run made
      // fewer writes of a kind than the reference converged without being killed).
      const hit = new Set(results.filter((r) => r.killed).map((r) => r.killedAfter));
      expect([...new Set(writes)].filter((w) => !hit.has(w))).toEqual([]);
      expect(results.filter((r) => r.killed).length).toBeGreaterThanOrEqual(writes.length * 0.8);
    },
  );

  it(
    '20 kills at random moments of a rollout converge, nothing done twice',
    { timeout: 900_000 },
    async () => {
      const kinds: Kind[] = ['promotion', 'promotion', 'abort', 'rollback'];
      const jobs = Array.from({ length: 20 }, (_, i) => {
        const kind = kinds[i % kinds.length]!;
        const span = reference.get(kind)?.ms ?? 8000;
        const afterMs = Math.floor(Math.random() * span);
        return () => trial(kind, `random-${i}`, { afterMs }).then((r) => ({ ...r, afterMs }));
      });
      const results = await pool(jobs, 3);
      console.log(
        `[chaos] ${JSON.stringify(results.map((r) => ({ kind: r.kind, afterMs: r.afterMs, killed: r.killed, ms: r.ms })))}`,
      );
      expect(results).toHaveLength(20);
    },
  );
});
