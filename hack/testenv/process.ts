/**
 * Child-process plumbing for the test environment: free loopback ports, readiness polling,
 * orderly shutdown, and cleanup that also runs on SIGINT/SIGTERM or when an earlier run died
 * without cleaning up (its processes and temp dir are reaped on the next start).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  createWriteStream,
  existsSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions as HttpsRequestOptions } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Prefix of every temp dir an environment creates under os.tmpdir(). */
export const TEMP_PREFIX = 'crema-testenv-';

/** Asks the kernel for a free loopback port. Another process may take it before we bind: callers retry. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * A free loopback port below the kernel's ephemeral range (32768+ on Linux), for servers whose
 * port must be fixed in advance (e.g. configured as a Prometheus scrape target before the
 * server starts). Ports the kernel hands out — to outgoing connections and to `listen(0)` —
 * come from the ephemeral range, so they can never take a port chosen here in the meantime.
 */
export async function freeFixedPort(taken: ReadonlySet<number> = new Set()): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (taken.has(port)) continue;
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port found in 20000-31999');
}

/** True when GET `url` answers 200 within 2 s. `tls` applies to https URLs. */
export function probeHttp(url: string, tls: HttpsRequestOptions = {}): Promise<boolean> {
  return new Promise((resolve) => {
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = send(url, { ...tls, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** A started child whose output goes to a log file in the environment's directory. */
export class ManagedProcess {
  readonly child: ChildProcess;
  readonly logPath: string;
  private exited = false;
  private readonly exitPromise: Promise<number | null>;
  /** Resolves once everything the child wrote is in the log file (after it exited). */
  private readonly logWritten: Promise<void>;

  constructor(
    readonly name: string,
    command: string,
    args: string[],
    dir: string,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.logPath = join(dir, `${name}.log`);
    const out = createWriteStream(this.logPath, { flags: 'a' });
    this.child = spawn(command, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    // Both streams write into one file: neither may end it (the first to end would close it under
    // the other, losing e.g. a usage message on stderr); it ends once the child's stdio closed.
    this.child.stdout?.pipe(out, { end: false });
    this.child.stderr?.pipe(out, { end: false });
    this.logWritten = new Promise((resolve) => {
      this.child.once('close', () => out.end(resolve));
      this.child.once('error', () => out.end(resolve));
    });
    this.exitPromise = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exited = true;
        resolve(code ?? (signal ? 128 : null));
      });
      this.child.on('error', () => {
        this.exited = true;
        resolve(null);
      });
    });
    if (this.child.pid) appendFileSync(join(dir, 'pids'), `${this.child.pid}\n`);
  }

  get running(): boolean {
    return !this.exited;
  }

  /** The last lines of the process's log, for error messages. */
  async tail(lines = 25): Promise<string> {
    // An exited child's last words may still be in the pipe: wait for them (briefly).
    if (this.exited) await Promise.race([this.logWritten, new Promise((r) => setTimeout(r, 1000))]);
    const text = await readFile(this.logPath, 'utf8').catch(() => '');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.exited) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exitPromise;
    clearTimeout(timer);
  }

  /** Synchronous last-resort kill, for process 'exit' handlers. */
  killNow(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

/** Raised when a process exits or never becomes ready; carries its log tail. */
export class ProcessStartError extends Error {
  override readonly name = 'ProcessStartError';
  constructor(
    message: string,
    readonly log: string,
    readonly portInUse: boolean,
  ) {
    super(`${message}\n--- last log lines ---\n${log}`);
  }
}

const PORT_IN_USE = /address already in use|bind: address|EADDRINUSE/i;

/**
 * Polls `probe` until it returns true. Fails early when the process exits, and after
 * `timeoutMs`. The failure says whether a port collision caused it, so callers can retry.
 */
export async function waitReady(
  proc: ManagedProcess,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 50;
  while (Date.now() < deadline) {
    if (!proc.running) {
      const log = await proc.tail();
      throw new ProcessStartError(`${proc.name} exited before ${what}`, log, PORT_IN_USE.test(log));
    }
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 500);
  }
  const log = await proc.tail();
  await proc.stop(2000);
  throw new ProcessStartError(
    `${proc.name} not ${what} after ${timeoutMs / 1000} s`,
    log,
    PORT_IN_USE.test(log),
  );
}

/**
 * Starts a process on freshly probed ports, retrying with new ports when one was taken
 * between the probe and the bind.
 */
export async function startWithPortRetry<T>(
  ports: number,
  attempt: (ports: number[]) => Promise<T>,
  opts: { tries?: number; pickPort?: () => Promise<number> } = {},
): Promise<T> {
  const tries = opts.tries ?? 5;
  const pick = opts.pickPort ?? freePort;
  for (let i = 1; ; i++) {
    const picked: number[] = [];
    while (picked.length < ports) {
      const p = await pick();
      if (!picked.includes(p)) picked.push(p);
    }
    try {
      return await attempt(picked);
    } catch (err) {
      if (!(err instanceof ProcessStartError && err.portInUse) || i >= tries) throw err;
    }
  }
}

/** Things to tear down when this process is interrupted or exits. */
interface Cleanup {
  /** Orderly async stop, used on SIGINT/SIGTERM. */
  stop(): Promise<void>;
  /** Synchronous last resort, used on process exit. */
  stopNow(): void;
}

const live = new Set<Cleanup>();
let handlersInstalled = false;

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const onSignal = (signal: NodeJS.Signals) => {
    const code = signal === 'SIGINT' ? 130 : 143;
    void Promise.allSettled([...live].map((c) => c.stop())).finally(() => process.exit(code));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('SIGHUP', onSignal);
  process.on('exit', () => {
    for (const c of live) c.stopNow();
  });
}

/** Registers a cleanup to run on interruption or exit; returns the function that unregisters it. */
export function registerCleanup(c: Cleanup): () => void {
  installHandlers();
  live.add(c);
  return () => live.delete(c);
}

/** Marks `dir` as owned by this process, so a later run can tell whether it was abandoned. */
export function claimDir(dir: string): void {
  writeFileSync(join(dir, 'owner.pid'), String(process.pid));
}

/** True when process `pid` exists (EPERM: it exists but is not ours). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when `pid` runs with `dir` as its working directory (every child is spawned there). */
function startedIn(pid: number, dir: string): boolean {
  try {
    return readlinkSync(`/proc/${pid}/cwd`).startsWith(dir);
  } catch {
    return false;
  }
}

/**
 * Kills the processes and removes the temp dirs of environments whose owner died without
 * cleaning up (SIGKILL, OOM, a crashed test runner). Only processes whose working directory
 * is that environment's dir are killed, so a recycled pid is never hit.
 */
export function reapAbandoned(
  log: (l: string) => void = () => {},
  cleanupNode?: (dir: string, log: (l: string) => void) => void,
): number {
  let reaped = 0;
  const base = tmpdir();
  for (const name of readdirSync(base)) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    const dir = join(base, name);
    const ownerFile = join(dir, 'owner.pid');
    if (!existsSync(ownerFile)) continue;
    const owner = Number(readFileSync(ownerFile, 'utf8'));
    if (owner && isAlive(owner)) continue;
    const pids = existsSync(join(dir, 'pids'))
      ? readFileSync(join(dir, 'pids'), 'utf8').split('\n').map(Number)
      : [];
    for (const pid of pids) {
      if (!pid || !isAlive(pid)) continue;
      if (startedIn(pid, dir)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    // A node leaves mounts, cgroups and network devices: remove those before the files.
    if (cleanupNode && existsSync(join(dir, 'node.json'))) cleanupNode(dir, log);
    rmSync(dir, { recursive: true, force: true });
    reaped++;
    log(`reaped abandoned environment ${dir}`);
  }
  return reaped;
}
