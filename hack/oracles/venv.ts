/**
 * The test oracles' Python: scipy and statsmodels, pinned with their whole dependency closure in
 * hack/oracles/requirements.txt, in a venv under the user cache ($CREMA_ORACLE_CACHE, else
 * $XDG_CACHE_HOME/crema/oracles, else ~/.cache/crema/oracles). The same pattern as the fuzz
 * suite's schemathesis venv (hack/fuzz/schemathesis.ts): created on first use, keyed by the
 * requirements and the interpreter, built in a temporary sibling and renamed into place, other
 * keys pruned. Python is a test tool here only: nothing of it ships.
 *
 * `node --import tsx hack/oracles/venv.ts` just installs it (CI does so in its own phase).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { venvPackageFrom } from '../fuzz/schemathesis.js';
import { isRoot, which } from '../testenv/debian.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REQUIREMENTS = join(HERE, 'requirements.txt');

type Log = (line: string) => void;

/** A problem setting up the oracles' Python, with what to do about it. */
export class OracleToolError extends Error {
  override readonly name = 'OracleToolError';
}

/** Runs cmd to completion, collecting stdout and stderr together; `input` goes to stdin. */
export function runPython(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
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

/** The root of the oracle venv cache. */
export function oracleCacheRoot(): string {
  if (process.env['CREMA_ORACLE_CACHE']) return process.env['CREMA_ORACLE_CACHE'];
  const xdg = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(xdg, 'crema', 'oracles');
}

/** Why the oracles cannot run here, or null when they can (python3 present, or root to install it). */
export function oracleUnavailable(): string | null {
  if (which('python3')) return null;
  if (isRoot() && which('apt-get')) return null;
  return 'python3 is not installed and this user cannot install it (apt-get install python3 as root)';
}

async function aptInstall(pkgs: readonly string[], log: Log): Promise<void> {
  const cmd = `apt-get update && apt-get install -y ${pkgs.join(' ')}`;
  if (!isRoot() || !which('apt-get'))
    throw new OracleToolError(`the statistics oracles need the Debian packages ${pkgs.join(', ')}: ${cmd}`);
  log(`installing Debian packages for the statistics oracles: ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [
    ['update', '-qq'],
    ['install', '-y', '-qq', '--no-install-recommends', ...pkgs],
  ]) {
    const r = await runPython('apt-get', args, { env });
    if (r.code !== 0) throw new OracleToolError(`apt-get ${args.join(' ')} failed:\n${r.out}${r.err}`);
  }
}

async function createVenv(python: string, dir: string, log: Log): Promise<void> {
  let r = await runPython(python, ['-m', 'venv', dir]);
  if (r.code === 0) return;
  await rm(dir, { recursive: true, force: true });
  const out = r.out + r.err;
  if (!/ensurepip|venv/.test(out)) throw new OracleToolError(`${python} -m venv ${dir} failed:\n${out}`);
  await aptInstall([venvPackageFrom(out)], log);
  r = await runPython(python, ['-m', 'venv', dir]);
  if (r.code !== 0) throw new OracleToolError(`${python} -m venv ${dir} failed:\n${r.out}${r.err}`);
}

/**
 * Returns the venv's python with the pinned scipy and statsmodels, creating the venv on first
 * use (~1 min: wheels for numpy, scipy, pandas, statsmodels).
 */
export async function ensureOracleVenv(log: Log = (l) => console.error(`[oracles] ${l}`)): Promise<string> {
  if (!which('python3')) await aptInstall(['python3'], log);
  const python = which('python3')!;
  const pyVersion = (await runPython(python, ['-c', 'import sys; print(sys.version)'])).out.trim();
  const requirements = await readFile(REQUIREMENTS, 'utf8');
  const key = createHash('sha256')
    .update(`${python}\n${pyVersion}\n${requirements}`)
    .digest('hex')
    .slice(0, 16);
  const root = oracleCacheRoot();
  const venv = join(root, `venv-${key}`);
  const venvPython = join(venv, 'bin', 'python');
  if (existsSync(venvPython)) return venvPython;

  await mkdir(root, { recursive: true });
  const building = `${venv}.building-${process.pid}`;
  await rm(building, { recursive: true, force: true });
  log(`installing scipy and statsmodels into ${venv} (once per requirements and python)…`);
  const t0 = Date.now();
  try {
    await createVenv(python, building, log);
    const pip = await runPython(
      join(building, 'bin', 'python'),
      ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-input', '-r', REQUIREMENTS],
      { timeoutMs: 600_000 },
    );
    if (pip.code !== 0)
      throw new OracleToolError(`pip install -r ${REQUIREMENTS} failed:\n${pip.out}${pip.err}`);
    const check = await runPython(join(building, 'bin', 'python'), [
      '-c',
      'import scipy, statsmodels; print(scipy.__version__, statsmodels.__version__)',
    ]);
    if (check.code !== 0) throw new OracleToolError(`importing scipy and statsmodels failed:\n${check.err}`);
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
  log(`oracle venv ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
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

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  try {
    console.log(`oracle python ready: ${await ensureOracleVenv()}`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}
