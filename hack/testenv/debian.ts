/**
 * Debian packages the test environment needs. As root (CI, or `sudo npm start`) missing ones are
 * installed with apt-get; otherwise the error names the exact command to run.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { TestEnvError } from './binaries.js';

const run = promisify(execFile);

/** A program the environment runs and the Debian package that provides it. */
export interface Requirement {
  /** A command looked up on PATH, or an absolute path. */
  readonly command: string;
  readonly pkg: string;
}

/** The absolute path of `cmd` (on PATH, or the path itself when absolute and present), or null. */
export function which(cmd: string): string | null {
  if (cmd.startsWith('/')) return existsSync(cmd) ? cmd : null;
  try {
    return execFileSync('/bin/sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/**
 * Makes sure every requirement is present: installs the missing packages when running as root,
 * else throws a TestEnvError with the apt-get command that installs them.
 */
export async function ensureDebianPackages(
  reqs: readonly Requirement[],
  log: (line: string) => void,
  why: string,
): Promise<void> {
  const missing = [...new Set(reqs.filter((r) => !which(r.command)).map((r) => r.pkg))];
  if (missing.length === 0) return;
  if (!isRoot() || !which('apt-get')) {
    throw new TestEnvError(
      `${why} needs the Debian packages ${missing.join(', ')}. Install them as root: ` +
        `apt-get update && apt-get install -y ${missing.join(' ')}`,
    );
  }
  log(`installing Debian packages for ${why}: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await run('apt-get', ['update', '-qq'], { env, maxBuffer: 64 << 20 });
    await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
      env,
      maxBuffer: 64 << 20,
    });
  } catch (err) {
    throw new TestEnvError(
      `installing ${missing.join(', ')} failed: ${(err as { stderr?: string }).stderr ?? String(err)}`,
    );
  }
  // Debian starts services on install (policy-rc.d permitting); the environment runs its own.
  for (const pkg of missing) {
    const svc = { 'redis-server': 'redis-server', containerd: 'containerd', nginx: 'nginx' }[pkg];
    if (svc) await run('service', [svc, 'stop']).catch(() => undefined);
  }
  const still = reqs.filter((r) => !which(r.command));
  if (still.length > 0)
    throw new TestEnvError(`after installing, still missing: ${still.map((r) => r.command).join(', ')}`);
}
