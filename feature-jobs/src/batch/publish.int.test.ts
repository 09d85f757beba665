/**
 * The batch job against a real redis-server: resume after a kill, idempotent re-run, sharded
 * completion, and readers that never see a half-written version while a new one is written.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BATCH_TTL_SECONDS,
  KEYS,
  SEGMENTS,
  USER_FEATURES,
  decodeMatrix,
  decodeUserFeatures,
  encodeUserFeatures,
} from '../../../contracts/features.js';
import { startRedis } from '../../../hack/testenv/environment.js';
import type { RedisServer } from '../../../hack/testenv/environment.js';
import { Dataset, generateDataset } from '../generate/dataset.js';
import { computeUserFeatures } from './features.js';
import { computeVersionId, publishFeatures } from './publish.js';
import { RespBulkWriter, SetBatch } from './resp.js';
import { shardOfUser } from './shard.js';
import { computeSnapshot } from './snapshot.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-batch-'));
let server: RedisServer;
let redis: Redis;
let ds: Dataset;

beforeAll(async () => {
  ({ redis: server } = await startRedis(dir));
  redis = new Redis(server.url);
  generateDataset({ seed: 5, users: 2000, stores: 12, start: '2026-10-01', days: 4 }, join(dir, 'ds'));
  ds = Dataset.open(join(dir, 'ds'));
});
afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  await redis.flushall();
});

function versionFor(asOf: string, shards = 1) {
  const snapshot = computeSnapshot(ds, asOf, 30, { index: 0, count: 1 });
  const version = computeVersionId({
    datasetHash: ds.manifest.hash,
    asOf: snapshot.asOf,
    windowDays: 30,
    shards,
  });
  return { snapshot, version };
}

describe.each(['ioredis pipelines', 'raw RESP writer'])('batch feature publish (%s)', (writer) => {
  let bulk: RespBulkWriter | undefined;
  beforeAll(async () => {
    if (writer === 'raw RESP writer')
      bulk = await RespBulkWriter.connect({ host: '127.0.0.1', port: server.port });
  });
  afterAll(() => bulk?.close());
  const base = () => ({
    redis,
    catalog: ds.catalog,
    stores: ds.stores,
    batchSize: 100,
    ...(bulk ? { bulk } : {}),
  });

  it('resumes a killed run from its checkpoint and only then switches; values match the pure features', async () => {
    const { snapshot, version } = versionFor('2026-10-05');
    const killed = await publishFeatures({
      ...base(),
      version,
      shard: { index: 0, count: 1 },
      snapshot,
      stopAfterBatches: 5,
    });
    expect(killed.switched).toBe(false);
    expect(await redis.get(KEYS.current)).toBeNull();

    const resumed = await publishFeatures({ ...base(), version, shard: { index: 0, count: 1 }, snapshot });
    expect(resumed.resumedFrom).toBe(500);
    expect(resumed.switched).toBe(true);
    expect(await redis.get(KEYS.current)).toBe(version);

    const vec = new Float32Array(USER_FEATURES.length);
    let users = 0;
    for (let u = 0; u < snapshot.agg.n; u++) {
      const blob = await redis.getBuffer(KEYS.user(version, `u${u}`));
      if (!computeUserFeatures(snapshot.agg, u, vec)) {
        expect(blob).toBeNull();
        continue;
      }
      users++;
      expect(Array.from(decodeUserFeatures(blob!))).toEqual(Array.from(vec));
    }
    expect(users).toBeGreaterThan(1000);
    const ttl = await redis.ttl(KEYS.user(version, 'u1'));
    expect(ttl).toBeGreaterThan(BATCH_TTL_SECONDS - 60);
    expect(ttl).toBeLessThanOrEqual(BATCH_TTL_SECONDS);
    const segments = decodeMatrix((await redis.getBuffer(KEYS.segments(version)))!);
    expect(segments.length).toBe(SEGMENTS.length * USER_FEATURES.length);
    const pop = decodeMatrix((await redis.getBuffer(KEYS.storePopularity(version, ds.stores[0]!.id)))!);
    expect(pop.length).toBe(24 * ds.catalog.items.length);
    expect(JSON.parse((await redis.hget(KEYS.stores(version), ds.stores[0]!.id))!).capacityPerHour).toBe(
      ds.stores[0]!.capacityPerHour,
    );
  });

  it('a late run for an older cutoff never switches back over a newer version', async () => {
    const newer = versionFor('2026-10-05');
    const older = versionFor('2026-10-04');
    await publishFeatures({
      ...base(),
      version: newer.version,
      shard: { index: 0, count: 1 },
      snapshot: newer.snapshot,
    });
    const late = await publishFeatures({
      ...base(),
      version: older.version,
      shard: { index: 0, count: 1 },
      snapshot: older.snapshot,
    });
    expect(late.switched).toBe(false);
    expect(await redis.get(KEYS.current)).toBe(newer.version);
  });

  it('a re-run of the same inputs changes nothing', async () => {
    const { snapshot, version } = versionFor('2026-10-05');
    await publishFeatures({ ...base(), version, shard: { index: 0, count: 1 }, snapshot });
    const before = (await redis.keys('*')).sort();
    const blob = await redis.getBuffer(KEYS.user(version, 'u7'));
    const again = await publishFeatures({ ...base(), version, shard: { index: 0, count: 1 }, snapshot });
    expect(again.alreadyDone).toBe(true);
    expect(again.usersWritten).toBe(0);
    expect((await redis.keys('*')).sort()).toEqual(before);
    expect(await redis.getBuffer(KEYS.user(version, 'u7'))).toEqual(blob);
  });

  it('switches only after the last of N shards; each shard writes only its users', async () => {
    const asOf = '2026-10-05';
    const version = computeVersionId({
      datasetHash: ds.manifest.hash,
      asOf: Date.parse(`${asOf}T00:00:00Z`) / 1000,
      windowDays: 30,
      shards: 3,
    });
    for (const index of [2, 0, 1]) {
      const snapshot = computeSnapshot(ds, asOf, 30, { index, count: 3 });
      const r = await publishFeatures({ ...base(), version, shard: { index, count: 3 }, snapshot });
      expect(r.switched).toBe(index === 1);
      expect(await redis.get(KEYS.current)).toBe(index === 1 ? version : null);
    }
    const full = computeSnapshot(ds, asOf, 30);
    const vec = new Float32Array(USER_FEATURES.length);
    for (let u = 0; u < 300; u++) {
      const has = computeUserFeatures(full.agg, u, vec);
      const blob = await redis.getBuffer(KEYS.user(version, `u${u}`));
      expect(blob !== null, `u${u} in shard ${shardOfUser(`u${u}`, 3)}`).toBe(has);
      if (blob) expect(Array.from(decodeUserFeatures(blob))).toEqual(Array.from(vec));
    }
  });

  it('readers resolving `current` never see a missing key while a new version is written and switched', async () => {
    const v1 = versionFor('2026-10-04');
    const v2 = versionFor('2026-10-05');
    await publishFeatures({
      ...base(),
      version: v1.version,
      shard: { index: 0, count: 1 },
      snapshot: v1.snapshot,
    });
    // Users with orders in both versions, so every one must have a blob under any current version.
    const vec = new Float32Array(USER_FEATURES.length);
    const probe = Array.from({ length: 2000 }, (_, u) => u)
      .filter((u) => computeUserFeatures(v1.snapshot.agg, u, vec))
      .slice(0, 20);
    const reader = new Redis(server.url);
    const seen = new Set<string>();
    let reads = 0;
    let stop = false;
    const problems: string[] = [];
    const readers = Array.from({ length: 3 }, async (_, r) => {
      while (!stop) {
        const v = (await reader.get(KEYS.current))!;
        seen.add(v);
        const u = probe[(reads + r) % probe.length]!;
        const [cat, items, seg, user, pop] = await Promise.all([
          reader.get(KEYS.catalog(v)),
          reader.getBuffer(KEYS.items(v)),
          reader.getBuffer(KEYS.segments(v)),
          reader.getBuffer(KEYS.user(v, `u${u}`)),
          reader.getBuffer(KEYS.storePopularity(v, ds.stores[r]!.id)),
        ]);
        if (!cat || !items || !seg || !user || !pop) problems.push(`version ${v}: missing key for u${u}`);
        reads++;
      }
    });
    await publishFeatures({
      ...base(),
      batchSize: 20,
      version: v2.version,
      shard: { index: 0, count: 1 },
      snapshot: v2.snapshot,
    });
    await new Promise((r) => setTimeout(r, 50));
    stop = true;
    await Promise.all(readers);
    reader.disconnect();
    expect(problems).toEqual([]);
    expect(reads).toBeGreaterThan(50);
    expect([...seen]).toEqual([v1.version, v2.version]);
  });
});

describe('raw RESP writer', () => {
  it('surfaces an error reply instead of hanging (AUTH against a server without a password)', async () => {
    await expect(
      RespBulkWriter.connect({ host: '127.0.0.1', port: server.port, password: 'nope' }),
    ).rejects.toThrow(/redis: .*AUTH/i);
  });

  it('writes byte-identical blobs to encodeUserFeatures, with the TTL', async () => {
    const w = await RespBulkWriter.connect({ host: '127.0.0.1', port: server.port });
    const b = new SetBatch(120);
    const v = Float32Array.from({ length: USER_FEATURES.length }, (_, i) => i / 3 - 2);
    b.setFloat32('t:blob', v);
    b.setString('t:str', 'hello');
    await w.send(b.bytes(), b.count);
    w.close();
    expect(await redis.getBuffer('t:blob')).toEqual(encodeUserFeatures(v));
    expect(await redis.get('t:str')).toBe('hello');
    expect(await redis.ttl('t:blob')).toBeGreaterThan(100);
  });
});
