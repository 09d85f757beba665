/**
 * The operator as a separate process (`operator/src/main.ts` under tsx), for tests that kill,
 * freeze or restart it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { eventually } from './helpers.js';
import { TEST_SERVING_REDIS_URL } from './operator.js';

export type OperatorProcess = ChildProcess & { output: () => string };

/** Starts the operator for namespace `ns`; resolves once it logged that it runs. */
export async function startOperatorProcess(opts: {
  readonly kubeconfigPath: string;
  readonly ns: string;
  readonly identity: string;
  readonly leaseMs?: number;
  readonly env?: Record<string, string>;
}): Promise<OperatorProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'operator/src/main.ts'], {
    env: {
      ...process.env,
      KUBECONFIG: opts.kubeconfigPath,
      CREMA_NAMESPACE: opts.ns,
      CREMA_LEASE_NAMESPACE: opts.ns,
      CREMA_LEASE_DURATION_MS: String(opts.leaseMs ?? 3000),
      CREMA_HEALTH_PORT: '0',
      CREMA_IDENTITY: opts.identity,
      CREMA_SERVING_REDIS_URL: TEST_SERVING_REDIS_URL,
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await eventually(
    () => out.includes('running (health') || child.exitCode !== null || child.signalCode !== null,
    30_000,
    `${opts.identity} started`,
  );
  if (child.exitCode !== null) throw new Error(`operator exited: ${out}`);
  return Object.assign(child, { output: () => out });
}

/** Resolves when `p` has exited (at once if it already has). */
export async function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise((r) => p.once('exit', r));
}
