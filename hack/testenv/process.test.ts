import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManagedProcess, ProcessStartError, waitReady } from './process.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('ManagedProcess', () => {
  it('keeps what a child wrote on both streams when it exits at once, for the error it raises', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'crema-proc-test-'));
    dirs.push(dir);
    // A program that prints its usage on stderr after stdout has closed, then exits (like
    // metrics-server refusing a flag).
    const p = new ManagedProcess(
      'usage',
      '/bin/sh',
      ['-c', 'echo starting; exec 1>&-; sleep 0.1; echo "Error: bad flag" >&2; exit 2'],
      dir,
    );
    const err = await waitReady(p, async () => false, 10_000, 'ready').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProcessStartError);
    expect((err as Error).message).toMatch(/usage exited before ready/);
    expect((err as Error).message).toMatch(/starting\nError: bad flag/);
  });
});
