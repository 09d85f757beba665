/**
 * Objects in the states the operator writes, for the kubectl plugin's tests and benchmark: a
 * model created through the API and its status written through the status subresource, as the
 * operator would. Test-only: nothing here is imported by product code.
 */
import { execFile, spawn } from 'node:child_process';
import type {
  Experiment,
  RecommenderModel,
  RecommenderModelStatus,
  StoreRegion,
} from '../src/api/v1alpha1/index.js';
import { RESOURCES, resourcePath, type KubeClient } from '../src/runtime/kube.js';

export const SHA_A = 'a'.repeat(64);
export const SHA_B = 'b'.repeat(64);

/** A model with three canary steps (10% 5m, 50% manual, 100%) and analysis. */
export function modelObject(
  namespace: string,
  name: string,
  extra: Partial<RecommenderModel['spec']> = {},
): RecommenderModel {
  return {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    metadata: { name, namespace },
    spec: {
      model: { uri: 'file:///models/drinks.onnx', sha256: SHA_B, task: 'drink-ranking' },
      rollout: {
        steps: [{ weight: 10, pause: '5m' }, { weight: 50 }, { weight: 100 }],
        analysis: { failureLimit: 2 },
      },
      ...extra,
    },
  };
}

/** Status of a model whose canary (revision 4) is at step `step` with `weight`%, stable at revision 3. */
export function canaryStatus(at: Date, step = 1, weight = 50): RecommenderModelStatus {
  const iso = (msAgo: number) => new Date(at.getTime() - msAgo).toISOString();
  return {
    observedGeneration: 1,
    phase: 'Progressing',
    conditions: [
      {
        type: 'Degraded',
        status: 'False',
        reason: 'AsExpected',
        message: 'children applied and healthy',
        lastTransitionTime: iso(3_600_000),
      },
      {
        type: 'Progressing',
        status: 'True',
        reason: 'Canary',
        message: `canary revision 4 at step ${step + 1}, weight ${weight}%`,
        lastTransitionTime: iso(600_000),
      },
      {
        type: 'Ready',
        status: 'True',
        reason: 'Serving',
        message: 'revision 3 serving with 4 ready replicas',
        lastTransitionTime: iso(3_600_000),
      },
    ],
    stable: { modelSha: SHA_A, uri: 'file:///models/drinks-3.onnx', revision: 3, since: iso(7_200_000) },
    canary: {
      modelSha: SHA_B,
      uri: 'file:///models/drinks.onnx',
      revision: 4,
      startedAt: iso(600_000),
      weight,
      step,
      stepStartedAt: iso(120_000),
      failures: 1,
      readyReplicas: 2,
      analysis: [
        { step, verdict: 'Pass', at: iso(60_000), message: 'errorRate 0.002 <= 0.01; p99LatencyMs 31 <= 50' },
        { step: 0, verdict: 'Fail', at: iso(400_000), message: 'p99LatencyMs 71 > 50' },
      ],
    },
    readyReplicas: 4,
    replicas: 4,
    history: [
      {
        revision: 2,
        modelSha: 'c'.repeat(64),
        track: 'stable',
        startedAt: iso(86_400_000),
        endedAt: iso(7_200_000),
        reason: 'Superseded',
      },
    ],
  };
}

/** Status of a model serving revision 3 with no rollout in progress. */
export function readyStatus(at: Date): RecommenderModelStatus {
  return {
    observedGeneration: 1,
    phase: 'Ready',
    conditions: [
      {
        type: 'Degraded',
        status: 'False',
        reason: 'AsExpected',
        message: 'children applied and healthy',
        lastTransitionTime: at.toISOString(),
      },
      {
        type: 'Progressing',
        status: 'False',
        reason: 'RolloutComplete',
        message: 'revision 3 rolled out',
        lastTransitionTime: at.toISOString(),
      },
      {
        type: 'Ready',
        status: 'True',
        reason: 'Serving',
        message: 'revision 3 serving with 4 ready replicas',
        lastTransitionTime: at.toISOString(),
      },
    ],
    stable: { modelSha: SHA_B, revision: 3, since: at.toISOString() },
    readyReplicas: 4,
    replicas: 4,
  };
}

/** Status after the canary of revision 4 was rolled back by analysis. */
export function rolledBackStatus(at: Date): RecommenderModelStatus {
  const s = readyStatus(at);
  return {
    ...s,
    phase: 'RolledBack',
    stable: { modelSha: SHA_A, revision: 3, since: at.toISOString() },
    conditions: [
      ...(s.conditions ?? []),
      {
        type: 'RolledBack',
        status: 'True',
        reason: 'AnalysisFailed',
        message: 'p99LatencyMs 90 > 50 in 3 checks',
        lastTransitionTime: at.toISOString(),
      },
    ],
    abortedModelSha: SHA_B,
  };
}

/** Creates `obj` and, when given, writes its status through the status subresource. */
export async function createWithStatus<T extends RecommenderModel | Experiment | StoreRegion>(
  client: KubeClient,
  obj: T,
  status?: unknown,
): Promise<T> {
  const r =
    obj.kind === 'RecommenderModel'
      ? RESOURCES.recommenderModel
      : obj.kind === 'Experiment'
        ? RESOURCES.experiment
        : RESOURCES.storeRegion;
  const ns = obj.metadata!.namespace!;
  const created = await client.request<T>('POST', resourcePath(r, ns), { body: obj });
  if (status === undefined) return created;
  return client.request<T>('PATCH', resourcePath(r, ns, obj.metadata!.name!, 'status'), {
    contentType: 'application/merge-patch+json',
    body: { status },
  });
}

/** Writes `status` of model `name` (merge patch: null removes a field). */
export async function patchModelStatus(
  client: KubeClient,
  ns: string,
  name: string,
  status: unknown,
): Promise<void> {
  await client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, name, 'status'), {
    contentType: 'application/merge-patch+json',
    body: { status },
  });
}

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** Runs the plugin (a bundle or bin/kubectl-crema.js) as a process. */
export function runPlugin(
  entry: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<CliRun> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [entry, ...args],
      { env, timeout: 120_000, maxBuffer: 1 << 28 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr, ms: performance.now() - t0 });
      },
    );
  });
}

/** Starts the plugin as a process; `firstLine` resolves with its first line on stdout. */
export function startPlugin(
  entry: string,
  args: readonly string[],
): { readonly firstLine: Promise<string>; readonly done: Promise<CliRun> } {
  const t0 = performance.now();
  const child = spawn(process.execPath, [entry, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let lineSeen: (l: string) => void = () => {};
  const firstLine = new Promise<string>((resolve) => (lineSeen = resolve));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    if (stdout.includes('\n')) lineSeen(stdout.split('\n')[0]!);
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<CliRun>((resolve) =>
    child.on('close', (code) => {
      lineSeen(stdout.split('\n')[0] ?? '');
      resolve({ code: code ?? -1, stdout, stderr, ms: performance.now() - t0 });
    }),
  );
  return { firstLine, done };
}
