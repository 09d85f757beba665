/**
 * The launcher leaves nothing behind: not on Ctrl-C, not on SIGTERM, and not even when it is
 * SIGKILLed (the next start reaps the orphans). A port taken between probe and bind is retried.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TestEnvError } from './binaries.js';
import { startRedis } from './environment.js';
import { freePort, reapAbandoned } from './process.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts `npm run testenv` equivalent as a child and resolves once it printed its banner. */
async function launchCli(): Promise<{ child: ChildProcess; dir: string; pids: number[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'hack/testenv/cli.ts'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('Press Ctrl-C') || child.exitCode !== null, 90_000);
  const dir = /logs:\s+(\S+)\/\*\.log/.exec(out)?.[1];
  if (!dir) throw new Error(`testenv did not start:\n${out}`);
  const pids = readFileSync(join(dir, 'pids'), 'utf8').split('\n').filter(Boolean).map(Number);
  return { child, dir, pids };
}

describe('testenv lifecycle', () => {
  it.each(['SIGINT', 'SIGTERM'] as const)(
    '%s stops every process and removes the temp dir',
    async (signal) => {
      const { child, dir, pids } = await launchCli();
      expect(pids).toHaveLength(4); // redis-server, etcd, kube-apiserver, kube-controller-manager
      expect(pids.every(alive)).toBe(true);
      child.kill(signal);
      await new Promise((r) => child.once('exit', r));
      expect(child.exitCode).toBe(signal === 'SIGINT' ? 130 : 143);
      expect(pids.filter(alive)).toEqual([]);
      expect(existsSync(dir)).toBe(false);
    },
  );

  it('reaps the processes and files of a launcher that was SIGKILLed', async () => {
    const { child, dir, pids } = await launchCli();
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // Orphans survive their parent's SIGKILL...
    expect(pids.some(alive)).toBe(true);
    // ...until the next start (which calls this) reaps them.
    expect(reapAbandoned()).toBeGreaterThanOrEqual(1);
    await waitFor(() => pids.every((p) => !alive(p)), 10_000);
    expect(existsSync(dir)).toBe(false);
  });

  it('retries on another port when the probed one is taken before the bind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'crema-port-test-'));
    const squatter: Server = createServer();
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
    const taken = (squatter.address() as { port: number }).port;
    const picks: number[] = [];
    // The first pick returns the port someone else holds; later picks are really free.
    const pickPort = async () => {
      const p = picks.length === 0 ? taken : await freePort();
      picks.push(p);
      return p;
    };
    try {
      const { redis, procs } = await startRedis(dir, () => {}, pickPort);
      expect(picks.length).toBeGreaterThanOrEqual(2);
      expect(redis.port).not.toBe(taken);
      expect(readFileSync(procs()[0]!.logPath, 'utf8')).toMatch(/already in use/i);
      await redis.stop();
    } finally {
      squatter.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('says how to install redis-server when it is missing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'crema-missing-test-'));
    const path = process.env['PATH'];
    process.env['PATH'] = '/nonexistent';
    try {
      const err = await startRedis(dir, () => {}).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TestEnvError);
      expect((err as Error).message).toMatch(/apt-get install -y redis-server/);
    } finally {
      process.env['PATH'] = path;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
