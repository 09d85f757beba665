/**
 * The serving fuzz suite's tool: schemathesis, pinned with its whole dependency closure in
 * hack/fuzz/requirements.txt, in a Python venv under the user cache ($CREMA_FUZZ_CACHE, else
 * $XDG_CACHE_HOME/crema/fuzz, else ~/.cache/crema/fuzz). The venv is created on first use and
 * reused while the requirements and the Python interpreter stay the same. Python is a test tool
 * here only: nothing of it ships.
 *
 * `node --import tsx hack/fuzz/schemathesis.ts` just installs it (CI does so in its own phase).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensurePinnedVenv, runProcess, venvCacheRoot } from '../testenv/python-venv.js';

export { venvPackageFrom } from '../testenv/python-venv.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REQUIREMENTS = join(HERE, 'requirements.txt');
export const CONFIG_FILE = join(HERE, 'schemathesis.toml');

type Log = (line: string) => void;

/** A problem setting up the fuzz tool, with what to do about it. */
export class FuzzToolError extends Error {
  override readonly name = 'FuzzToolError';
}

interface RunResult {
  code: number | null;
  out: string;
}

/** Runs cmd to completion, collecting stdout and stderr together. */
async function run(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const r = await runProcess(cmd, args, opts);
  return { code: r.code, out: r.out + r.err };
}

const VENV = { name: 'fuzz', cacheEnv: 'CREMA_FUZZ_CACHE' } as const;

/** The root of the fuzz tool cache. */
export function fuzzCacheRoot(): string {
  return venvCacheRoot(VENV);
}

/** The pinned schemathesis version, from requirements.txt. */
export async function pinnedVersion(): Promise<string> {
  const m = /^schemathesis==(\S+)$/m.exec(await readFile(REQUIREMENTS, 'utf8'));
  if (!m) throw new FuzzToolError(`${REQUIREMENTS} does not pin schemathesis==VERSION`);
  return m[1]!;
}

/**
 * Returns the venv's python with the pinned schemathesis installed, creating the venv on first
 * use (~30 s; hack/testenv/python-venv.ts). Run schemathesis as `<python> -m schemathesis.cli`
 * (the venv's own scripts name the temporary path it was built in).
 */
export async function ensureSchemathesis(log: Log = (l) => console.error(`[fuzz] ${l}`)): Promise<string> {
  const version = await pinnedVersion();
  return ensurePinnedVenv(
    {
      ...VENV,
      requirements: REQUIREMENTS,
      why: 'the serving fuzz suite',
      what: `schemathesis ${version}`,
      async verify(python) {
        const check = await run(python, ['-m', 'schemathesis.cli', '--version']);
        return check.out.includes(version)
          ? undefined
          : `schemathesis --version printed ${check.out.trim()}, expected ${version}`;
      },
      error: (message) => new FuzzToolError(message),
    },
    log,
  );
}

/** Options of one schemathesis run against a running server. */
export interface FuzzRunOptions {
  /** The venv python from ensureSchemathesis(). */
  readonly python: string;
  /** URL of the server's OpenAPI document; requests go to its origin. */
  readonly schemaUrl: string;
  /** Bearer token sent with every request (schemathesis -H). */
  readonly token: string;
  readonly seed: number;
  /** Generated cases per operation in the fuzzing phase. */
  readonly maxExamples: number;
  /** JSON file of real ids for the hooks: { users, stores, items, modelUris }. */
  readonly idsFile: string;
  /** Scratch directory: the HAR of every request is written here, and schemathesis runs in it. */
  readonly workDir: string;
  readonly timeoutMs: number;
}

/** One recorded request/response pair (the parts of a HAR entry this suite reads). */
export interface HarEntry {
  readonly request: { readonly method: string; readonly url: string };
  readonly response: { readonly status: number; readonly content?: { readonly text?: string } };
}

export interface FuzzRunResult {
  /** schemathesis's exit code: 0 when no check failed and nothing errored. */
  readonly code: number | null;
  readonly output: string;
  /** Every request schemathesis sent, in order. */
  readonly entries: readonly HarEntry[];
  readonly seconds: number;
}

/** Runs `st run` with hack/fuzz/schemathesis.toml and returns its verdict and every request. */
export async function runSchemathesis(o: FuzzRunOptions): Promise<FuzzRunResult> {
  const har = join(o.workDir, 'requests.har.json');
  const t0 = Date.now();
  const r = await run(
    o.python,
    [
      '-m',
      'schemathesis.cli',
      '--config-file',
      CONFIG_FILE,
      '--no-color',
      'run',
      o.schemaUrl,
      '--header',
      `Authorization: Bearer ${o.token}`,
      '--seed',
      String(o.seed),
      '--max-examples',
      String(o.maxExamples),
      '--report',
      'har',
      '--report-har-path',
      har,
    ],
    {
      cwd: o.workDir,
      timeoutMs: o.timeoutMs,
      env: {
        ...process.env,
        PYTHONPATH: HERE,
        // hooks.py is imported from the repository: keep __pycache__ out of it.
        PYTHONDONTWRITEBYTECODE: '1',
        CREMA_FUZZ_IDS: o.idsFile,
        CREMA_FUZZ_SEED: String(o.seed),
      },
    },
  );
  const seconds = (Date.now() - t0) / 1000;
  const entries = existsSync(har)
    ? ((JSON.parse(await readFile(har, 'utf8')) as { log: { entries: HarEntry[] } }).log.entries ?? [])
    : [];
  return { code: r.code, output: r.out, entries, seconds };
}

/** Requests of one operation: by status, and 200s answered by a model (fallback false, a revision). */
export interface OperationCount {
  total: number;
  byStatus: Record<number, number>;
  modelAnswers: number;
}

/**
 * Counts requests per operation ("METHOD /path/{param}" as in the OpenAPI document). Requests
 * with a method the path does not declare (schemathesis probes them) count under
 * "undeclared methods".
 */
export function countByOperation(
  entries: readonly HarEntry[],
  paths: Readonly<Record<string, Readonly<Record<string, unknown>>>>,
): Map<string, OperationCount> {
  const templates = Object.entries(paths).map(([path, ops]) => ({
    path,
    methods: new Set(Object.keys(ops).map((m) => m.toUpperCase())),
    re: new RegExp(`^${path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
  }));
  const counts = new Map<string, OperationCount>();
  for (const e of entries) {
    const { pathname } = new URL(e.request.url);
    const method = e.request.method.toUpperCase();
    const t = templates.find((x) => x.re.test(pathname));
    const label = t && t.methods.has(method) ? `${method} ${t.path}` : 'undeclared methods';
    const c = counts.get(label) ?? { total: 0, byStatus: {}, modelAnswers: 0 };
    c.total++;
    c.byStatus[e.response.status] = (c.byStatus[e.response.status] ?? 0) + 1;
    if (e.response.status === 200 && isModelAnswer(e.response.content?.text)) c.modelAnswers++;
    counts.set(label, c);
  }
  return counts;
}

function isModelAnswer(text: string | undefined): boolean {
  if (!text) return false;
  try {
    const b = JSON.parse(text) as { fallback?: unknown; modelRevision?: unknown };
    return b.fallback === false && typeof b.modelRevision === 'string';
  } catch {
    return false;
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  try {
    const python = await ensureSchemathesis();
    console.log(`schemathesis ${await pinnedVersion()} ready: ${python} -m schemathesis.cli`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}
