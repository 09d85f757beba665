/**
 * The test oracles' Python: scipy and statsmodels, pinned with their whole dependency closure in
 * hack/oracles/requirements.txt, in a venv under the user cache ($CREMA_ORACLE_CACHE, else
 * $XDG_CACHE_HOME/crema/oracles, else ~/.cache/crema/oracles), made by the same code as the
 * fuzz suite's schemathesis venv (hack/testenv/python-venv.ts). Python is a test tool here
 * only: nothing of it ships.
 *
 * `node --import tsx hack/oracles/venv.ts` just installs it (CI does so in its own phase).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRoot, which } from '../testenv/debian.js';
import { ensurePinnedVenv, runProcess, venvCacheRoot, type ProcessResult } from '../testenv/python-venv.js';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REQUIREMENTS = join(HERE, 'requirements.txt');

type Log = (line: string) => void;

/** A problem setting up the oracles' Python, with what to do about it. */
export class OracleToolError extends Error {
  override readonly name = 'OracleToolError';
}

/** Runs cmd to completion, collecting stdout and stderr; `input` goes to stdin. */
export function runPython(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<ProcessResult> {
  return runProcess(cmd, args, opts);
}

const VENV = { name: 'oracles', cacheEnv: 'CREMA_ORACLE_CACHE' } as const;

/** The root of the oracle venv cache. */
export function oracleCacheRoot(): string {
  return venvCacheRoot(VENV);
}

/** Why the oracles cannot run here, or null when they can (python3 present, or root to install it). */
export function oracleUnavailable(): string | null {
  if (which('python3')) return null;
  if (isRoot() && which('apt-get')) return null;
  return 'python3 is not installed and this user cannot install it (apt-get install python3 as root)';
}

/**
 * Returns the venv's python with the pinned scipy and statsmodels, creating the venv on first
 * use (~1 min: wheels for numpy, scipy, pandas, statsmodels).
 */
export function ensureOracleVenv(log: Log = (l) => console.error(`[oracles] ${l}`)): Promise<string> {
  return ensurePinnedVenv(
    {
      ...VENV,
      requirements: REQUIREMENTS,
      why: 'the statistics oracles',
      what: 'scipy and statsmodels',
      async verify(python) {
        const check = await runProcess(python, [
          '-c',
          'import scipy, statsmodels; print(scipy.__version__, statsmodels.__version__)',
        ]);
        return check.code === 0 ? undefined : `importing scipy and statsmodels failed:\n${check.err}`;
      },
      error: (message) => new OracleToolError(message),
    },
    log,
  );
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  try {
    console.log(`oracle python ready: ${await ensureOracleVenv()}`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}
