import Fastify from 'fastify';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import type { RedisClient, ScriptCall } from '../../../contracts/redis.js';
import type { ScriptRunner } from '../features/scripts.js';
import { buildRouter } from '../router/app.js';
import { ExperimentCounting, ExposedUsers, experimentTagOf, exposureIncrements } from './counting.js';

describe('experiment sums', () => {
  it('an exposure adds covariate sums, or counts a user without history', () => {
    expect(exposureIncrements({ conversion: 3, orderValue: 40, attachRate: 0.5 })).toEqual({
      conversion: { sumX: 3, sumXX: 9 },
      orderValue: { sumX: 40, sumXX: 1600 },
      attachRate: { sumX: 0.5, sumXX: 0.25 },
    });
    expect(exposureIncrements(undefined).orderValue).toEqual({ nWithoutCovariate: 1 });
  });

  it('reads the tag only when every header is well-formed', () => {
    const h = {
      'x-crema-experiment': 'shop/ab',
      'x-crema-experiment-run': '0a1b2c3d4e5f',
      'x-crema-experiment-variant': 'v2',
      'x-crema-experiment-ttl': '3600',
    };
    expect(experimentTagOf(h)).toEqual({
      namespace: 'shop',
      name: 'ab',
      run: '0a1b2c3d4e5f',
      variant: 'v2',
      ttlSeconds: 3600,
    });
    // No run, or not one from a uid: not counted (it would mix with another run's counts).
    const { 'x-crema-experiment-run': _run, ...noRun } = h;
    expect(experimentTagOf(noRun)).toBeUndefined();
    for (const run of [
      '',
      '0A1B2C3D4E5F',
      '0a1b-2c3d',
      'abc',
      'g'.repeat(12),
      'a'.repeat(33),
      'ab/../cd1234',
    ])
      expect(experimentTagOf({ ...h, 'x-crema-experiment-run': run }), run).toBeUndefined();
    expect(experimentTagOf({ ...h, 'x-crema-experiment-ttl': '0' })).toBeUndefined();
    expect(experimentTagOf({ ...h, 'x-crema-experiment': 'ab' })).toBeUndefined();
    expect(experimentTagOf({ ...h, 'x-crema-experiment-variant': 'user:42' })).toBeUndefined();
    // The router's fallback to stable sends no variant: a tag that exposes nobody.
    const { 'x-crema-experiment-variant': _, ...fallback } = h;
    expect(experimentTagOf(fallback)).toEqual({
      namespace: 'shop',
      name: 'ab',
      run: '0a1b2c3d4e5f',
      ttlSeconds: 3600,
    });
  });
});

describe('exposures already known to this process', () => {
  /** Redis as the exposure script sees it: a user's key is made once, per run. */
  class Scripts implements ScriptRunner {
    readonly calls: ScriptCall[] = [];
    readonly keys = new Set<string>();
    failNext = false;
    async run(call: ScriptCall): Promise<unknown> {
      this.calls.push(call);
      if (this.failNext) {
        this.failNext = false;
        throw new Error('connection lost');
      }
      const key = call.keys[0]!;
      if (this.keys.has(key)) return 0;
      this.keys.add(key);
      return 1;
    }
  }
  const redis = { sadd: async () => 1 } as unknown as RedisClient;
  const tag = { namespace: 'shop', name: 'ab', run: '0a1b2c3d4e5f', variant: 'v2', ttlSeconds: 60 };

  it('asks Redis once per user and run; a failed call is asked again', async () => {
    const scripts = new Scripts();
    const counting = new ExperimentCounting(new Registry(), 'drinks', scripts, redis);
    expect(await counting.expose(tag, 'u1', undefined)).toBe(true);
    expect(await counting.expose(tag, 'u1', undefined)).toBe(false);
    expect(scripts.calls).toHaveLength(1);
    // Another user, another run of the same experiment: each its own exposure.
    expect(await counting.expose(tag, 'u2', undefined)).toBe(true);
    expect(await counting.expose({ ...tag, run: 'ffffffffffff' }, 'u1', undefined)).toBe(true);
    expect(scripts.calls).toHaveLength(3);
    // The router's fallback to stable carries no variant: nothing to record, nothing asked.
    const { variant: _, ...fallback } = tag;
    expect(await counting.expose(fallback, 'u9', undefined)).toBe(false);
    expect(scripts.calls).toHaveLength(3);
    // Redis failed: not remembered, so the user's next request records the exposure.
    scripts.failNext = true;
    await expect(counting.expose(tag, 'u3', undefined)).rejects.toThrow('connection lost');
    expect(await counting.expose(tag, 'u3', undefined)).toBe(true);
    expect(scripts.calls).toHaveLength(5);
  });

  it('a user exposed by another replica is asked once, then remembered', async () => {
    const scripts = new Scripts();
    const a = new ExperimentCounting(new Registry(), 'drinks', scripts, redis);
    const b = new ExperimentCounting(new Registry(), 'drinks', scripts, redis);
    expect(await a.expose(tag, 'u1', undefined)).toBe(true);
    expect(await b.expose(tag, 'u1', undefined)).toBe(false);
    expect(await b.expose(tag, 'u1', undefined)).toBe(false);
    expect(scripts.calls).toHaveLength(2);
  });

  it('remembers at most its capacity, forgetting the oldest first; 0 remembers nothing', async () => {
    const known = new ExposedUsers(2);
    for (const k of ['a', 'b', 'a', 'c']) known.add(k);
    expect([known.has('a'), known.has('b'), known.has('c'), known.size]).toEqual([false, true, true, 2]);
    const scripts = new Scripts();
    const counting = new ExperimentCounting(new Registry(), 'drinks', scripts, redis, 0);
    await counting.expose(tag, 'u1', undefined);
    await counting.expose(tag, 'u1', undefined);
    expect(scripts.calls).toHaveLength(2);
    expect(() => new ExposedUsers(-1)).toThrow(RangeError);
  });
});

describe('the experiment router', () => {
  const upstream = Fastify();
  const seen: Array<Record<string, unknown>> = [];
  upstream.all('/v1/*', async (req) => {
    seen.push(req.headers);
    return {};
  });
  afterAll(() => upstream.close());

  it('tags forwarded requests with the experiment and the assigned variant; a client cannot forge them', async () => {
    await upstream.listen({ port: 0, host: '127.0.0.1' });
    const addr = upstream.server.address() as { port: number };
    const up = `http://127.0.0.1:${addr.port}`;
    const router = await buildRouter({
      config: {
        salt: 's',
        stable: 'control',
        variants: [
          { name: 'control', weight: 0, upstream: up },
          { name: 'v2', weight: 100, upstream: up },
        ],
        experiment: { id: 'shop/ab', run: '0a1b2c3d4e5f', ttlSeconds: 60 },
      },
    });
    const res = await router.inject({
      method: 'GET',
      url: '/v1/users/u1/offers',
      headers: {
        'x-crema-experiment': 'shop/other',
        'x-crema-experiment-run': 'ffffffffffff',
        'x-crema-experiment-variant': 'control',
      },
    });
    await router.close();
    expect(res.statusCode).toBe(200);
    expect(seen[0]).toMatchObject({
      'x-crema-experiment': 'shop/ab',
      'x-crema-experiment-run': '0a1b2c3d4e5f',
      'x-crema-experiment-variant': 'v2',
      'x-crema-experiment-ttl': '60',
    });
  });

  it('a user sent to stable instead of their variant (down or unknown upstream) carries no variant', async () => {
    const addr = upstream.server.address() as { port: number };
    const up = `http://127.0.0.1:${addr.port}`;
    // A port nobody listens on: a real refused connection.
    const down = Fastify();
    await down.listen({ port: 0, host: '127.0.0.1' });
    const downUrl = `http://127.0.0.1:${(down.server.address() as { port: number }).port}`;
    await down.close();
    for (const v2 of [{ upstream: downUrl }, {}]) {
      const router = await buildRouter({
        config: {
          salt: 's',
          stable: 'control',
          variants: [
            { name: 'control', weight: 0, upstream: up },
            { name: 'v2', weight: 100, ...v2 },
          ],
          experiment: { id: 'shop/ab', run: '0a1b2c3d4e5f', ttlSeconds: 60 },
        },
      });
      seen.length = 0;
      const res = await router.inject({ method: 'GET', url: '/v1/users/u1/offers' });
      const metrics = (await router.inject({ url: '/metrics' })).body;
      await router.close();
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-crema-variant']).toBe('control');
      expect(seen).toHaveLength(1);
      // The experiment and its ttl still go (an order of an already exposed user counts), the
      // variant does not: serving exposes nobody on this request.
      expect(seen[0]).toMatchObject({
        'x-crema-experiment': 'shop/ab',
        'x-crema-experiment-run': '0a1b2c3d4e5f',
        'x-crema-variant': 'control',
      });
      expect(seen[0]).not.toHaveProperty('x-crema-experiment-variant');
      expect(metrics).toMatch(
        new RegExp(
          `crema_router_fallbacks_total\\{variant="v2",reason="${v2.upstream ? 'upstream_down' : 'unknown_upstream'}"\\} 1`,
        ),
      );
    }
  });
});
