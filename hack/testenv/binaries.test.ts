import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BINARIES,
  TestEnvError,
  cacheKey,
  ensureBinaries,
  readVersions,
  verifyCacheEntry,
  type Manifest,
} from './binaries.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A fake cache entry: small files standing in for binaries, with a matching manifest. */
async function fakeEntry(key: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'crema-cache-test-'));
  dirs.push(dir);
  const sha256 = {} as Manifest['sha256'];
  for (const b of BINARIES) {
    const content = `#!/bin/sh\necho ${b}\n`;
    await writeFile(join(dir, b), content);
    sha256[b] = createHash('sha256').update(content).digest('hex');
  }
  const manifest: Manifest = {
    key,
    versions: { kube: 'v1.34.4', etcd: 'v3.6.8', metricsServer: 'v0.8.0', coredns: 'v1.14.7' },
    goVersion: 'go1.26.8',
    sha256,
    builtAt: new Date().toISOString(),
    buildSeconds: 1,
  };
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

describe('binary cache verification', () => {
  it('trusts an entry whose manifest and hashes match', async () => {
    expect(await verifyCacheEntry(await fakeEntry('k1'), 'k1')).toBeNull();
  });

  it('rejects a corrupted binary', async () => {
    const dir = await fakeEntry('k1');
    await writeFile(join(dir, 'kube-apiserver'), 'truncated');
    expect(await verifyCacheEntry(dir, 'k1')).toBe('kube-apiserver is corrupt (sha256 mismatch)');
  });

  it('rejects a missing binary, a missing manifest and a garbled manifest', async () => {
    const dir = await fakeEntry('k1');
    await rm(join(dir, 'etcd'));
    expect(await verifyCacheEntry(dir, 'k1')).toBe('etcd is missing');
    await writeFile(join(dir, 'manifest.json'), '{not json');
    expect(await verifyCacheEntry(dir, 'k1')).toBe('manifest.json is unreadable');
    await rm(join(dir, 'manifest.json'));
    expect(await verifyCacheEntry(dir, 'k1')).toBe('no cached build');
  });

  it('rejects an entry built for other versions', async () => {
    expect(await verifyCacheEntry(await fakeEntry('old'), 'new')).toMatch(/does not match/);
  });

  it('keys the cache by Kubernetes, etcd and Go versions', async () => {
    const v = await readVersions();
    const a = await cacheKey(v, 'go1.26.8');
    expect(await cacheKey(v, 'go1.26.8')).toBe(a);
    expect(await cacheKey({ ...v, kube: 'v1.35.4' }, 'go1.26.8')).not.toBe(a);
    expect(await cacheKey({ ...v, etcd: 'v3.6.9' }, 'go1.26.8')).not.toBe(a);
    expect(await cacheKey(v, 'go1.27.0')).not.toBe(a);
  });
});

describe('missing prerequisites', () => {
  it('says how to get Go when it is not on PATH', async () => {
    const path = process.env['PATH'];
    process.env['PATH'] = '/nonexistent';
    try {
      const err = await ensureBinaries({ log: () => {} }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TestEnvError);
      expect((err as Error).message).toMatch(/Go is not installed or not on PATH.*Go >= 1\.24/s);
    } finally {
      process.env['PATH'] = path;
    }
  });
});
