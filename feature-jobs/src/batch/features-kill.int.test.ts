/**
 * `crema-jobs features` SIGKILLed mid-write and started again: the second run resumes after the
 * checkpoint, switches, and every user blob is right; serving never saw the partial version.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEYS, USER_FEATURES, decodeUserFeatures } from '../../../contracts/features.js';
import { startRedis, type RedisServer } from '../../../hack/testenv/environment.js';
import { Dataset, generateDataset } from '../generate/dataset.js';
import { computeUserFeatures } from './features.js';
import { computeSnapshot } from './snapshot.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-fkill-'));
let server: RedisServer;
let redis: Redis;

beforeAll(async () => {
  ({ redis: server } = await startRedis(dir));
  redis = new Redis(server.url);
  generateDataset({ seed: 9, users: 40_000, stores: 30, start: '2026-10-01', days: 2 }, join(dir, 'ds'));
});
afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function cli(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'feature-jobs/src/cli.ts', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<{ code: number | null; out: string }>((r) =>
    child.on('exit', (code) => r({ code, out })),
  );
  return { child, done };
}

describe('features job killed and restarted', () => {
  it('resumes from the checkpoint and ends with a complete, switched version', async () => {
    const args = ['features', '--data', join(dir, 'ds'), '--redis', server.url, '--batch-size', '20'];
    const first = cli(args);
    const deadline = Date.now() + 30_000;
    let checkpoint = 0;
    while (checkpoint < 4000) {
      if (Date.now() > deadline) throw new Error('no checkpoint progress');
      const keys = await redis.keys('crema:features:*:checkpoint:0');
      checkpoint = keys[0] ? Number(await redis.get(keys[0])) : 0;
      await new Promise((r) => setTimeout(r, 5));
    }
    first.child.kill('SIGKILL');
    const killed = await first.done;
    expect(killed.code).toBeNull();
    expect(await redis.get(KEYS.current)).toBeNull();

    const second = cli(args);
    const res = await second.done;
    expect(res.code).toBe(0);
    const summary = JSON.parse(res.out.trim().split('\n').pop()!);
    expect(summary.resumedFrom).toBeGreaterThanOrEqual(4000);
    expect(summary.resumedFrom).toBeLessThan(40_000);
    expect(summary.switched).toBe(true);
    expect(await redis.get(KEYS.current)).toBe(summary.version);

    const snap = computeSnapshot(Dataset.open(join(dir, 'ds')), summary.asOf, 30);
    const vec = new Float32Array(USER_FEATURES.length);
    const users = Array.from({ length: 40_000 }, (_, u) => u);
    const blobs = await redis.mgetBuffer(...users.map((u) => KEYS.user(summary.version, `u${u}`)));
    let written = 0;
    users.forEach((u) => {
      const has = computeUserFeatures(snap.agg, u, vec);
      const blob = blobs[u];
      if (!has) return expect(blob, `u${u}`).toBeNull();
      written++;
      expect(Array.from(decodeUserFeatures(blob!)), `u${u}`).toEqual(Array.from(vec));
    });
    expect(written).toBeGreaterThan(10_000);
  }, 60_000);
});
