/**
 * CPU of the compiled serving program by stage of a request, from the V8 CPU profiles that
 * `node --cpu-prof` writes for its main thread and its inference thread. The bundle is one file,
 * so a frame's source module is found from the `// path` comment esbuild writes before each
 * module's code; each sample goes to the stage of its innermost frame that names one.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The stages of a request, as bench:serving reports them. */
export const STAGES = [
  /** Redis fetch (ioredis, MGET batching, reply parsing) and decoding the user blob. */
  'features',
  /** Local time, candidates, the ranking and add-on model inputs. */
  'input',
  /** Both models' runs: the batcher, the inference thread's messages and onnxruntime. */
  'inference',
  /** Top-k, reasons, the answer's JSON; HTTP parsing, schema validation and fastify. */
  'response',
  /** prom-client and serving's metrics. */
  'metrics',
  /** The drift monitor's per-request observation. */
  'drift',
  /** Garbage collection (main thread). */
  'gc',
  /** Everything else: the route's own code, overload protection, native code without a JS caller. */
  'other',
] as const;
export type Stage = (typeof STAGES)[number];

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Module path by bundle line: sorted starts of each `// <path>` section. */
export function bundleModules(bundle: string): { starts: number[]; paths: string[] } {
  const starts: number[] = [];
  const paths: string[] = [];
  bundle.split('\n').forEach((line, i) => {
    // Paths are relative to the repository; a linked node_modules shows as ../<elsewhere>/node_modules.
    const m = /^\/\/ (\S+\.(?:[cm]?js|ts|json))$/.exec(line);
    if (m) {
      starts.push(i);
      paths.push(m[1]!.replace(/^(\.\.\/)+[^ ]*?(?=node_modules\/)/, ''));
    }
  });
  return { starts, paths };
}

function moduleAt(map: { starts: number[]; paths: string[] }, line: number): string {
  let lo = 0;
  let hi = map.starts.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (map.starts[mid]! <= line) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found < 0 ? '' : map.paths[found]!;
}

const RULES: readonly [RegExp, Stage][] = [
  [
    /^serving\/src\/features\/|ioredis|redis-parser|denque|cluster-key-slot|^contracts\/features\.ts/,
    'features',
  ],
  [
    /^serving\/src\/ranking\/(plan|context)\.ts|^contracts\/events\.ts|#buildAddonInput$|#candidatesFor$/,
    'input',
  ],
  [/^serving\/src\/model\/|onnxruntime/, 'inference'],
  [/^serving\/src\/metrics\.ts|prom-client/, 'metrics'],
  [/^serving\/src\/drift\//, 'drift'],
  [
    /^serving\/src\/ranking\/|fastify|find-my-way|ajv|secure-json-parse|light-my-request|avvio|pino|^node:_http_/,
    'response',
  ],
];

/** The stage a frame names, or undefined when it names none (its caller decides). */
function stageOfFrame(where: string): Stage | undefined {
  for (const [re, stage] of RULES) if (re.test(where)) return stage;
  return undefined;
}

/**
 * Microseconds per stage of one profile within [fromUs, toUs] (monotonic clock, as
 * process.hrtime), every sample counted as `asStage` when given (the inference thread).
 */
export function profileStages(
  p: CpuProfile,
  map: { starts: number[]; paths: string[] },
  fromUs: number,
  toUs: number,
  asStage?: Stage,
): Record<Stage, number> {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const memo = new Map<number, Stage | null>();
  const stageOf = (id: number): Stage | null => {
    const hit = memo.get(id);
    if (hit !== undefined) return hit;
    const n = byId.get(id)!;
    const f = n.callFrame;
    let s: Stage | null | undefined;
    if (f.functionName === '(idle)' || f.functionName === '(root)') s = null;
    else if (f.functionName === '(garbage collector)') s = 'gc';
    else if (f.functionName === '(program)') s = 'other';
    else {
      const mod = /serving\.js$|inference-worker\.js$/.test(f.url) ? moduleAt(map, f.lineNumber) : f.url;
      s = stageOfFrame(`${mod}#${f.functionName}`);
      if (s === undefined) {
        const up = parent.get(id);
        s = up === undefined || byId.get(up)!.callFrame.functionName === '(root)' ? 'other' : stageOf(up);
      }
    }
    memo.set(id, s);
    return s;
  };
  const out = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>;
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    const dt = p.timeDeltas[i + 1] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const s = stageOf(p.samples[i]!);
    if (s === null) continue;
    out[asStage ?? s] += dt;
  }
  return out;
}

/**
 * Stage microseconds summed over the profiles in `dir` (the main thread's by module, any other
 * thread's — the inference thread — as inference), within the window; `inferenceThread` is the
 * inference thread's part of `inference` (the rest is the main thread's side: batching and messages).
 */
export async function stagesOfProfiles(
  dir: string,
  bundlePath: string,
  fromUs: number,
  toUs: number,
): Promise<{ byStage: Record<Stage, number>; inferenceThread: number }> {
  const map = bundleModules(await readFile(bundlePath, 'utf8'));
  const total = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>;
  let inferenceThread = 0;
  for (const f of (await readdir(dir)).filter((x) => x.endsWith('.cpuprofile'))) {
    // CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; thread 0 is the main thread.
    const thread = Number(f.split('.').at(-3));
    const p = JSON.parse(await readFile(join(dir, f), 'utf8')) as CpuProfile;
    const s = profileStages(p, map, fromUs, toUs, thread === 0 ? undefined : 'inference');
    for (const k of STAGES) total[k] += s[k];
    if (thread !== 0) inferenceThread += s.inference;
  }
  return { byStage: total, inferenceThread };
}

/**
 * The functions with the most self time in one profile (share of its non-idle samples), named
 * `function @ module` (the bundle's module for the program's own frames, the file otherwise).
 */
export function topFunctions(
  p: CpuProfile,
  map: { starts: number[]; paths: string[] },
  n: number,
): { fn: string; share: number }[] {
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const f = byId.get(p.samples[i]!)!.callFrame;
    if (f.functionName === '(idle)') continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    total += dt;
    const mod = /serving\.js$/.test(f.url) ? moduleAt(map, f.lineNumber) : f.url.replace(/^.*\//, '');
    const key = `${f.functionName || '(anonymous)'} @ ${mod}`;
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([fn, t]) => ({ fn, share: Math.round((t / Math.max(1, total)) * 1000) / 1000 }));
}

/** Reads the main thread's profile (thread 0) of a --cpu-prof-dir. */
export async function mainThreadProfile(dir: string): Promise<CpuProfile | undefined> {
  const f = (await readdir(dir)).find((x) => x.endsWith('.cpuprofile') && x.split('.').at(-3) === '0');
  return f ? (JSON.parse(await readFile(join(dir, f), 'utf8')) as CpuProfile) : undefined;
}
