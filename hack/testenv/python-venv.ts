/**
 * Pinned Python venvs for test tools (the fuzz suite's schemathesis, the statistics oracles'
 * scipy/statsmodels): each pinned with its whole dependency closure in a requirements file, in a
 * venv under the user cache ($<cacheEnv>, else $XDG_CACHE_HOME/crema/<name>, else
 * ~/.cache/crema/<name>). A venv is keyed by the requirements and the interpreter, created on
 * first use in a temporary sibling and renamed into place only when complete (an interrupted
 * install leaves nothing that looks usable), and other keys are pruned. Missing python3 or its
 * venv module are installed from Debian as root; otherwise the error names the command. Python
 * is a test tool here only: nothing of it ships.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { isRoot, which } from './debian.js';

type Log = (line: string) => void;

export interface ProcessResult {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

/** Runs cmd to completion, collecting stdout and stderr; `input` goes to stdin. */
export function runProcess(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {},
): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          err += `\n[killed after ${opts.timeoutMs} ms]`;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * The Debian package that provides `python3 -m venv`, from the error of a failed attempt
 * (Debian's python names it, e.g. "apt install python3.11-venv"), or python3-venv.
 */
export function venvPackageFrom(error: string): string {
  return /apt(?:-get)? install (python3(?:\.\d+)?-venv)/.exec(error)?.[1] ?? 'python3-venv';
}

/** What one tool's venv is. */
export interface PinnedVenv {
  /** Cache directory name under crema/ (e.g. fuzz). */
  readonly name: string;
  /** Environment variable that overrides the cache root. */
  readonly cacheEnv: string;
  readonly requirements: string;
  /** Who needs it, for messages ("the serving fuzz suite"). */
  readonly why: string;
  /** What is installed, for the log ("schemathesis 4.32.5"). */
  readonly what: string;
  /** Checks the freshly installed venv's python; returns a problem, or undefined when it works. */
  readonly verify: (python: string) => Promise<string | undefined>;
  /** The error type the tool's callers expect. */
  readonly error: (message: string) => Error;
}

/** The root of a tool's venv cache. */
export function venvCacheRoot(spec: Pick<PinnedVenv, 'name' | 'cacheEnv'>): string {
  const override = process.env[spec.cacheEnv];
  if (override) return override;
  const xdg = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(xdg, 'crema', spec.name);
}

async function aptInstall(spec: PinnedVenv, pkgs: readonly string[], log: Log): Promise<void> {
  const cmd = `apt-get update && apt-get install -y ${pkgs.join(' ')}`;
  if (!isRoot() || !which('apt-get'))
    throw spec.error(
      `${spec.why} needs the Debian packages ${pkgs.join(', ')}. Install them as root: ${cmd}`,
    );
  log(`installing Debian packages for ${spec.why}: ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [
    ['update', '-qq'],
    ['install', '-y', '-qq', '--no-install-recommends', ...pkgs],
  ]) {
    const r = await runProcess('apt-get', args, { env });
    if (r.code !== 0) throw spec.error(`apt-get ${args.join(' ')} failed:\n${r.out}${r.err}`);
  }
}

/** Creates a venv in dir, installing Debian's venv package first when python3 lacks it. */
async function createVenv(spec: PinnedVenv, python: string, dir: string, log: Log): Promise<void> {
  let r = await runProcess(python, ['-m', 'venv', dir]);
  if (r.code === 0) return;
  await rm(dir, { recursive: true, force: true });
  const out = r.out + r.err;
  if (!/ensurepip|venv/.test(out)) throw spec.error(`${python} -m venv ${dir} failed:\n${out}`);
  await aptInstall(spec, [venvPackageFrom(out)], log);
  r = await runProcess(python, ['-m', 'venv', dir]);
  if (r.code !== 0) throw spec.error(`${python} -m venv ${dir} failed:\n${r.out}${r.err}`);
}

/** Returns the venv's python with the pinned requirements installed, creating it on first use. */
export async function ensurePinnedVenv(spec: PinnedVenv, log: Log): Promise<string> {
  if (!which('python3')) await aptInstall(spec, ['python3'], log);
  const python = which('python3')!;
  const pyVersion = (await runProcess(python, ['-c', 'import sys; print(sys.version)'])).out.trim();
  const requirements = await readFile(spec.requirements, 'utf8');
  const key = createHash('sha256')
    .update(`${python}\n${pyVersion}\n${requirements}`)
    .digest('hex')
    .slice(0, 16);
  const root = venvCacheRoot(spec);
  const venv = join(root, `venv-${key}`);
  const venvPython = join(venv, 'bin', 'python');
  if (existsSync(venvPython)) return venvPython;

  await mkdir(root, { recursive: true });
  const building = `${venv}.building-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  log(`installing ${spec.what} into ${venv} (once per requirements and python)…`);
  const t0 = Date.now();
  try {
    await createVenv(spec, python, building, log);
    const pip = await runProcess(
      join(building, 'bin', 'python'),
      [
        '-m',
        'pip',
        'install',
        '--quiet',
        '--disable-pip-version-check',
        '--no-input',
        '-r',
        spec.requirements,
      ],
      { timeoutMs: 600_000 },
    );
    if (pip.code !== 0) throw spec.error(`pip install -r ${spec.requirements} failed:\n${pip.out}${pip.err}`);
    const problem = await spec.verify(join(building, 'bin', 'python'));
    if (problem) throw spec.error(problem);
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
  log(`${spec.what} installed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
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
