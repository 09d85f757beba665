import { describe, expect, it } from 'vitest';
import { KEYS } from './features.js';
import { hashSlot } from './redis.js';
import { parseRedisTarget, RedisTargetError } from './redis-target.js';

describe('parseRedisTarget', () => {
  it.each([
    ['redis://127.0.0.1:6379', undefined, { kind: 'single', url: 'redis://127.0.0.1:6379' }],
    [
      'rediss://:pw@r.example:6380/2',
      undefined,
      { kind: 'single', display: 'rediss://:***@r.example:6380/2' },
    ],
    [
      'redis://a:7000,redis://b:7001 , redis://c',
      undefined,
      {
        kind: 'cluster',
        seeds: [
          { host: 'a', port: 7000 },
          { host: 'b', port: 7001 },
          { host: 'c', port: 6379 },
        ],
        tls: false,
      },
    ],
    ['redis://one:7000', '1', { kind: 'cluster', seeds: [{ host: 'one', port: 7000 }] }],
    ['redis://one:7000', 'true', { kind: 'cluster' }],
    ['redis://one:7000', 'false', { kind: 'single' }],
    [
      'rediss://user:s%40cret@a:7000/0,rediss://b:7000',
      undefined,
      {
        kind: 'cluster',
        username: 'user',
        password: 's@cret',
        tls: true,
        display: 'rediss://user:***@a:7000/0,rediss://b:7000',
      },
    ],
    [
      'redis://[::1]:7000,redis://[::1]:7001',
      undefined,
      { kind: 'cluster', seeds: [{ host: '::1', port: 7000 }, {}] },
    ],
  ])('%s (cluster flag %s)', (value, cluster, want) => {
    expect(parseRedisTarget(value, { cluster })).toMatchObject(want);
  });

  it.each([
    ['', undefined, 'REDIS_URL is empty'],
    [' , ', undefined, 'REDIS_URL is empty'],
    ['127.0.0.1:6379', undefined, 'REDIS_URL: "127.0.0.1:6379" must start with redis:// or rediss://'],
    ['http://a:1', undefined, 'REDIS_URL: "http://a:1" must start with redis:// or rediss://'],
    ['redis://a:1,redis://b:1', '0', 'REDIS_URL lists 2 seeds, but CREMA_REDIS_CLUSTER says no cluster'],
    ['redis://a:1', 'yes', 'CREMA_REDIS_CLUSTER must be 1, true, 0 or false, got "yes"'],
    ['redis://a:1,rediss://b:1', undefined, 'REDIS_URL: every seed must use the same scheme'],
    [
      'redis://:pw@a:1/3,redis://b:1',
      undefined,
      'REDIS_URL: a Redis Cluster has only database 0, redis://:***@a:1/3 asks for 3',
    ],
  ])('refuses %j (cluster flag %s)', (value, cluster, message) => {
    const parse = () => parseRedisTarget(value, { cluster, name: 'REDIS_URL' });
    expect(parse).toThrow(RedisTargetError);
    expect(parse).toThrow(message);
  });
});

describe('hashSlot', () => {
  // Expected values from `CLUSTER KEYSLOT` of redis-server 7.0 (the integration test
  // serving/src/cluster.int.test.ts also compares every published user key with it).
  it.each([
    ['123456789', 12739],
    ['foo', 12182],
    ['{user1000}.following', 3443],
    ['{user1000}.followers', 3443],
    ['foo{}{bar}', 8363],
    ['foo{{bar}}zap', 4015],
    ['foo{bar}{zap}', 5061],
    ['ünïcode', 6051],
  ])('%s → %i', (key, slot) => {
    expect(hashSlot(key)).toBe(slot);
    expect(hashSlot(Buffer.from(key))).toBe(slot);
  });

  it('puts every key a script writes together in one slot, and spreads users over slots', () => {
    expect(hashSlot(KEYS.eventSeen('e1'))).toBe(hashSlot(KEYS.events));
    expect(hashSlot(KEYS.eventApplied('u1', 'e1'))).toBe(hashSlot(KEYS.onlineUser('u1')));
    expect(hashSlot(KEYS.storeEventApplied('s1', 'e1'))).toBe(hashSlot(KEYS.storeQueue('s1')));
    const slots = new Set(Array.from({ length: 1000 }, (_, i) => hashSlot(KEYS.user('v1', `u${i}`))));
    expect(slots.size).toBeGreaterThan(950);
    const online = new Set(Array.from({ length: 1000 }, (_, i) => hashSlot(KEYS.onlineUser(`u${i}`))));
    expect(online.size).toBeGreaterThan(950);
  });
});
