/**
 * The serving fuzz suite's tool: schemathesis, pinned with its whole dependency closure in
 * hack/fuzz/requirements.txt, in a Python venv under the user cache ($CREMA_FUZZ_CACHE, else
 * $XDG_CACHE_HOME/crema/fuzz, else ~/.cache/crema/fuzz). The venv is created on first use and
 * reused while the requirements and the Python interpreter stay the same. Python is a test tool
 * here only: nothing of it ships.
 *
 * `node --import tsx hack/fuzz/schemathesis.ts` just installs it (CI does so in its own phase).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRoot, which } from '../testenv/debian.js';

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
function run(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          out += `\n[killed after ${opts.timeoutMs} ms]`;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** The root of the fuzz tool cache. */
export function fuzzCacheRoot(): string {
  if (process.env['CREMA_FUZZ_CACHE']) return process.env['CREMA_FUZZ_CACHE'];
  const xdg = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(xdg, 'crema', 'fuzz');
}

/** The pinned schemathesis version, from requirements.txt. */
export async function pinnedVersion(): Promise<string> {
  const m = /^schemathesis==(\S+)$/m.exec(await readFile(REQUIREMENTS, 'utf8'));
  if (!m) throw new FuzzToolError(`${REQUIREMENTS} does not pin schemathesis==VERSION`);
  return m[1]!;
}

/**
 * The Debian package that provides `python3 -m venv`, from the error of a failed attempt
 * (Debian's python names it, e.g. "apt install python3.11-venv"), or python3-venv.
 */
export function venvPackageFrom(error: string): string {
  return /apt(?:-get)? install (python3(?:\.\d+)?-venv)/.exec(error)?.[1] ?? 'python3-venv';
}

async function aptInstall(pkgs: readonly string[], why: string, log: Log): Promise<void> {
  const cmd = `apt-get update && apt-get install -y ${pkgs.join(' ')}`;
  if (!isRoot() || !which('apt-get'))
    throw new FuzzToolError(
      `${why} needs the Debian packages ${pkgs.join(', ')}. Install them as root: ${cmd}`,
    );
  log(`installing Debian packages for ${why}: ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [
    ['update', '-qq'],
    ['install', '-y', '-qq', '--no-install-recommends', ...pkgs],
  ]) {
    const r = await run('apt-get', args, { env });
    if (r.code !== 0) throw new FuzzToolError(`apt-get ${args.join(' ')} failed:\n${r.out}`);
  }
}

/** Creates a venv in dir, installing Debian's venv package first when python3 lacks it. */
async function createVenv(python: string, dir: string, log: Log): Promise<void> {
  let r = await run(python, ['-m', 'venv', dir]);
  if (r.code === 0) return;
  await rm(dir, { recursive: true, force: true });
  if (!/ensurepip|venv/.test(r.out)) throw new FuzzToolError(`${python} -m venv ${dir} failed:\n${r.out}`);
  await aptInstall([venvPackageFrom(r.out)], 'the serving fuzz suite (python3 -m venv)', log);
  r = await run(python, ['-m', 'venv', dir]);
  if (r.code !== 0) throw new FuzzToolError(`${python} -m venv ${dir} failed:\n${r.out}`);
}

/**
 * Returns the venv's python with the pinned schemathesis installed, creating the venv on first
 * use (~30 s). It is built in a temporary sibling and renamed into place when complete, so an
 * interrupted install leaves nothing that looks usable. Run schemathesis as
 * `<python> -m schemathesis.cli` (the venv's own scripts name the temporary path).
 */
export async function ensureSchemathesis(log: Log = (l) => console.error(`[fuzz] ${l}`)): Promise<string> {
  if (!which('python3')) await aptInstall(['python3'], 'the serving fuzz suite', log);
  const python = which('python3')!;
  const pyVersion = (await run(python, ['-c', 'import sys; print(sys.version)'])).out.trim();
  const requirements = await readFile(REQUIREMENTS, 'utf8');
  const key = createHash('sha256')
    .update(`${python}\n${pyVersion}\n${requirements}`)
    .digest('hex')
    .slice(0, 16);
  const root = fuzzCacheRoot();
  const venv = join(root, `venv-${key}`);
  const venvPython = join(venv, 'bin', 'python');
  if (existsSync(venvPython)) return venvPython;

  await mkdir(root, { recursive: true });
  const version = await pinnedVersion();
  const building = `${venv}.building-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  log(`installing schemathesis ${version} into ${venv} (once per requirements and python)…`);
  const t0 = Date.now();
  try {
    await createVenv(python, building, log);
    const pip = await run(
      join(building, 'bin', 'python'),
      ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-input', '-r', REQUIREMENTS],
      { timeoutMs: 600_000 },
    );
    if (pip.code !== 0) throw new FuzzToolError(`pip install -r ${REQUIREMENTS} failed:\n${pip.out}`);
    const check = await run(join(building, 'bin', 'python'), ['-m', 'schemathesis.cli', '--version']);
    if (!check.out.includes(version))
      throw new FuzzToolError(`schemathesis --version printed ${check.out.trim()}, expected ${version}`);
    try {
      await rename(building, venv);
    } catch (err) {
      // Another process finished the same venv first: use that one.
      if (!existsSync(venvPython)) throw err;
    }
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  await pruneOtherVenvs(root, venv);
  log(`schemathesis ${version} installed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return venvPython;
}

/** Removes venvs of other requirements or interpreters, and builds left by dead processes. */
async function pruneOtherVenvs(root: string, keep: string): Promise<void> {
  for (const name of await readdir(root)) {
    const path = join(root, name);
    if (path === keep || !name.startsWith('venv-')) continue;
    const pid = Number(/\.building-(\d+)$/.exec(name)?.[1] ?? 0);
    if (pid && isAlive(pid)) continue;
    await rm(path, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
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
