/**
 * What each `kubectl crema` command does against the cluster. Commands write only what the
 * operator reads: the command annotations of contracts/kube-keys.ts and `spec.paused`; the
 * operator acts on them at its next reconcile and removes the annotations it consumed.
 */
import { stringify } from 'yaml';
import {
  ABORT_ANNOTATION,
  CONCLUDE_ANNOTATION,
  PROMOTE_ANNOTATION,
  STOP_ANNOTATION,
} from '../../../contracts/kube-keys.js';
import type { RecommenderModel } from '../api/v1alpha1/index.js';
import { KubeApiError, resourcePath, type WatchEvent } from '../runtime/kube.js';
import type { Command, Invocation, Kind, Output } from './args.js';
import {
  KIND_RESOURCES,
  explainFailure,
  getObject,
  listObjects,
  mergePatch,
  type Cluster,
  type KindObjects,
} from './cluster.js';
import { CliError, EXIT, type ExitCode } from './errors.js';
import { drawTree, experimentTree, modelTree, regionTree, statusIsCurrent, type TreeNode } from './render.js';
import { exitCodeOf, isFinal, judgeModel, type ModelVerdict } from './verdict.js';

/** Where a command writes, and its clock. */
export interface CliIO {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly now: () => Date;
}

function print(io: CliIO, output: Output, value: unknown): void {
  io.out(output === 'yaml' ? stringify(value).trimEnd() : JSON.stringify(value, null, 2));
}

const TREES: { [K in Kind]: (o: KindObjects[K], now: Date) => TreeNode } = {
  models: modelTree,
  experiments: experimentTree,
  regions: regionTree,
};

async function runGet(c: Cluster, cmd: Extract<Command, { name: 'get' }>, output: Output, io: CliIO) {
  if (cmd.resourceName !== undefined) {
    const kind = cmd.kinds[0]!;
    const obj = await getObject(c, kind, cmd.resourceName);
    if (output !== 'tree') print(io, output, obj);
    else io.out(drawTree((TREES[kind] as (o: unknown, now: Date) => TreeNode)(obj, io.now())));
    return EXIT.ok;
  }
  const lists = await Promise.all(cmd.kinds.map(async (k) => ({ kind: k, items: await listObjects(c, k) })));
  if (output !== 'tree') {
    print(io, output, { apiVersion: 'v1', kind: 'List', items: lists.flatMap((l) => l.items) });
    return EXIT.ok;
  }
  const now = io.now();
  const blocks: string[] = [];
  for (const { kind, items } of lists) {
    const tree = TREES[kind] as (o: unknown, now: Date) => TreeNode;
    blocks.push(...items.map((o) => drawTree(tree(o, now))));
  }
  if (!blocks.length) {
    const where = c.namespace === undefined ? 'any namespace' : `namespace ${c.namespace}`;
    io.err(`no ${cmd.kinds.join(', ')} found in ${where}`);
  } else io.out(blocks.join('\n\n'));
  return EXIT.ok;
}

function verdictReport(m: RecommenderModel, v: ModelVerdict, extra: Record<string, unknown> = {}) {
  return {
    name: m.metadata?.name,
    namespace: m.metadata?.namespace,
    verdict: v.verdict,
    phase: v.phase ?? null,
    message: v.message,
    ...extra,
  };
}

async function runStatus(c: Cluster, cmd: Extract<Command, { name: 'status' }>, output: Output, io: CliIO) {
  let m = await getObject(c, 'models', cmd.resourceName);
  let v = judgeModel(m);
  const line = (x: ModelVerdict) =>
    `${x.verdict}${x.phase && x.phase !== x.verdict ? ` (${x.phase})` : ''} - ${x.message}`;
  const finish = (code: ExitCode, x: ModelVerdict, extra: Record<string, unknown> = {}) => {
    if (output !== 'tree') print(io, output, verdictReport(m, x, { exitCode: code, ...extra }));
    return code;
  };
  if (output === 'tree') io.out(line(v));
  if (!cmd.watch || isFinal(v.verdict)) return finish(exitCodeOf(v.verdict), v);

  const timeout = cmd.timeoutMs ? AbortSignal.timeout(cmd.timeoutMs) : undefined;
  const r = KIND_RESOURCES.models;
  let last = line(v);
  while (!isFinal(v.verdict)) {
    const done = new AbortController();
    const signal = timeout ? AbortSignal.any([timeout, done.signal]) : done.signal;
    let deleted = false;
    try {
      await c.client.watch<RecommenderModel | { code?: number }>(
        resourcePath(r, c.namespace),
        {
          fieldSelector: `metadata.name=${cmd.resourceName}`,
          resourceVersion: m.metadata?.resourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds: 300,
        },
        (e: WatchEvent<RecommenderModel | { code?: number }>) => {
          if (e.type === 'DELETED') {
            deleted = true;
            done.abort();
          } else if (e.type === 'ADDED' || e.type === 'MODIFIED') {
            m = e.object as RecommenderModel;
            v = judgeModel(m);
            if (output === 'tree' && line(v) !== last) io.out((last = line(v)));
            if (isFinal(v.verdict)) done.abort();
          } else if (e.type === 'ERROR') {
            // 410 Gone: our resourceVersion is too old; the loop reads the object again.
            done.abort();
          }
        },
        signal,
      );
    } catch (err) {
      if (!(signal.aborted || (err instanceof KubeApiError && err.gone)))
        throw await explainFailure(c, err, r, cmd.resourceName, c.namespace);
    }
    if (deleted)
      throw new CliError(`recommendermodel ${JSON.stringify(cmd.resourceName)} was deleted while watching`);
    if (timeout?.aborted && !isFinal(v.verdict)) {
      const msg = `timed out after ${cmd.timeoutMs / 1000}s: still ${v.verdict} - ${v.message}`;
      if (output === 'tree') io.err(msg);
      return finish(EXIT.timeout, v, { timedOut: true });
    }
    if (!isFinal(v.verdict)) {
      // The server closed the stream (its timeout, or a 410): read again and watch on from there.
      m = await getObject(c, 'models', cmd.resourceName);
      v = judgeModel(m);
      if (output === 'tree' && line(v) !== last) io.out((last = line(v)));
    }
  }
  return finish(exitCodeOf(v.verdict), v);
}

/** Refuses a rollout command on a model with no canary, which the operator would only ignore. */
function requireCanary(m: RecommenderModel, what: string): void {
  if (!statusIsCurrent(m) || m.status?.canary) return;
  const name = JSON.stringify(m.metadata?.name ?? '');
  if (m.status?.promotion)
    throw new CliError(
      `recommendermodel ${name}: revision ${m.status.promotion.revision ?? '?'} is already promoted (its pods are rolling out): nothing to ${what}`,
    );
  throw new CliError(
    `recommendermodel ${name} has no canary rollout in progress (phase ${m.status?.phase ?? 'unknown'}): nothing to ${what}`,
  );
}

function done(io: CliIO, output: Output, obj: unknown, sentence: string): ExitCode {
  if (output === 'tree') io.out(sentence);
  else print(io, output, obj);
  return EXIT.ok;
}

async function runModelCommand(
  c: Cluster,
  cmd: Extract<Command, { name: 'promote' | 'abort' | 'pause' | 'resume' }>,
  output: Output,
  io: CliIO,
): Promise<ExitCode> {
  const name = cmd.resourceName;
  const m = await getObject(c, 'models', name);
  const ref = `recommendermodel ${c.namespace}/${name}`;
  switch (cmd.name) {
    case 'promote': {
      requireCanary(m, 'promote');
      const value = cmd.full ? 'full' : 'step';
      const patched = await mergePatch(c, 'models', name, {
        metadata: { annotations: { [PROMOTE_ANNOTATION]: value } },
      });
      return done(
        io,
        output,
        patched,
        `${ref}: ${cmd.full ? 'full promotion' : 'promotion to the next step'} requested (${PROMOTE_ANNOTATION}=${value})`,
      );
    }
    case 'abort': {
      requireCanary(m, 'abort');
      const patched = await mergePatch(c, 'models', name, {
        metadata: { annotations: { [ABORT_ANNOTATION]: 'true' } },
      });
      return done(
        io,
        output,
        patched,
        `${ref}: abort requested (${ABORT_ANNOTATION}=true); the canary goes back to 0%`,
      );
    }
    case 'pause':
    case 'resume': {
      const paused = cmd.name === 'pause';
      if ((m.spec.paused ?? false) === paused)
        return done(io, output, m, `${ref} is already ${paused ? 'paused' : 'running (not paused)'}`);
      const patched = await mergePatch(c, 'models', name, { spec: { paused } });
      return done(
        io,
        output,
        patched,
        `${ref} ${paused ? 'paused: rollouts hold where they are' : 'resumed'} (spec.paused=${paused})`,
      );
    }
  }
}

async function runExperimentCommand(
  c: Cluster,
  cmd: Extract<Command, { name: 'experiment' }>,
  output: Output,
  io: CliIO,
): Promise<ExitCode> {
  const name = cmd.resourceName;
  const e = await getObject(c, 'experiments', name);
  const phase = e.status?.phase;
  if (phase === 'Concluded' || phase === 'Stopped')
    throw new CliError(
      `experiment ${JSON.stringify(name)} has already ended (phase ${phase}): nothing to ${cmd.action}`,
    );
  const key = cmd.action === 'conclude' ? CONCLUDE_ANNOTATION : STOP_ANNOTATION;
  const patched = await mergePatch(c, 'experiments', name, { metadata: { annotations: { [key]: 'true' } } });
  return done(
    io,
    output,
    patched,
    `experiment ${c.namespace}/${name}: ${cmd.action} requested (${key}=true)${
      cmd.action === 'stop' ? '; every user goes back to the control variant' : ''
    }`,
  );
}

/** Runs a parsed invocation against a connected cluster; returns the exit code. */
export async function runCommand(c: Cluster, inv: Invocation, io: CliIO): Promise<ExitCode> {
  const { command: cmd, options } = inv;
  switch (cmd.name) {
    case 'get':
      return runGet(c, cmd, options.output, io);
    case 'status':
      return runStatus(c, cmd, options.output, io);
    case 'promote':
    case 'abort':
    case 'pause':
    case 'resume':
      return runModelCommand(c, cmd, options.output, io);
    case 'experiment':
      return runExperimentCommand(c, cmd, options.output, io);
    default:
      throw new CliError(`${cmd.name}: not a cluster command`);
  }
}
