import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { buildRouter } from '../router/app.js';
import { experimentTagOf, exposureIncrements, orderIncrements } from './counting.js';

describe('experiment sums', () => {
  it('an exposure adds covariate sums, or counts a user without history', () => {
    expect(exposureIncrements({ conversion: 3, orderValue: 40, attachRate: 0.5 })).toEqual({
      conversion: { sumX: 3, sumXX: 9 },
      orderValue: { sumX: 40, sumXX: 1600 },
      attachRate: { sumX: 0.5, sumXX: 0.25 },
    });
    expect(exposureIncrements(undefined).orderValue).toEqual({ nWithoutCovariate: 1 });
  });

  it("an order moves the user's Y: sumYY by the difference of squares, sumXY by X times the change", () => {
    const x = { conversion: 2, orderValue: 30, attachRate: 0.1 };
    // First order: converts, spends 5, with an add-on.
    expect(orderIncrements({ converted: true, oldTotal: 0, newTotal: 5, attached: true, x })).toEqual({
      conversion: { sumY: 1, sumYY: 1, sumXY: 2 },
      orderValue: { sumY: 5, sumYY: 25, sumXY: 150 },
      attachRate: { sumY: 1, sumYY: 1, sumXY: 0.1 },
    });
    // Second order of 3: only order value moves; (5+3)^2 - 5^2 = 39.
    expect(orderIncrements({ converted: false, oldTotal: 5, newTotal: 8, attached: false })).toEqual({
      orderValue: { sumY: 3, sumYY: 39 },
    });
    // Per-user totals reproduce Σy and Σy² exactly: users spending 5+3 and 4.
    const incs = [
      orderIncrements({ converted: true, oldTotal: 0, newTotal: 5, attached: false }),
      orderIncrements({ converted: false, oldTotal: 5, newTotal: 8, attached: false }),
      orderIncrements({ converted: true, oldTotal: 0, newTotal: 4, attached: false }),
    ];
    const sum = (k: 'sumY' | 'sumYY') => incs.reduce((s, i) => s + (i.orderValue?.[k] ?? 0), 0);
    expect([sum('sumY'), sum('sumYY')]).toEqual([12, 64 + 16]);
  });

  it('reads the tag only when every header is well-formed', () => {
    const h = {
      'x-crema-experiment': 'shop/ab',
      'x-crema-experiment-variant': 'v2',
      'x-crema-experiment-ttl': '3600',
    };
    expect(experimentTagOf(h)).toEqual({ namespace: 'shop', name: 'ab', variant: 'v2', ttlSeconds: 3600 });
    expect(experimentTagOf({ ...h, 'x-crema-experiment-ttl': '0' })).toBeUndefined();
    expect(experimentTagOf({ ...h, 'x-crema-experiment': 'ab' })).toBeUndefined();
    expect(experimentTagOf({ ...h, 'x-crema-experiment-variant': 'user:42' })).toBeUndefined();
    // The router's fallback to stable sends no variant: a tag that exposes nobody.
    const { 'x-crema-experiment-variant': _, ...fallback } = h;
    expect(experimentTagOf(fallback)).toEqual({ namespace: 'shop', name: 'ab', ttlSeconds: 3600 });
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
        experiment: { id: 'shop/ab', ttlSeconds: 60 },
      },
    });
    const res = await router.inject({
      method: 'GET',
      url: '/v1/users/u1/offers',
      headers: { 'x-crema-experiment': 'shop/other', 'x-crema-experiment-variant': 'control' },
    });
    await router.close();
    expect(res.statusCode).toBe(200);
    expect(seen[0]).toMatchObject({
      'x-crema-experiment': 'shop/ab',
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
          experiment: { id: 'shop/ab', ttlSeconds: 60 },
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
      expect(seen[0]).toMatchObject({ 'x-crema-experiment': 'shop/ab', 'x-crema-variant': 'control' });
      expect(seen[0]).not.toHaveProperty('x-crema-experiment-variant');
      expect(metrics).toMatch(
        new RegExp(
          `crema_router_fallbacks_total\\{variant="v2",reason="${v2.upstream ? 'upstream_down' : 'unknown_upstream'}"\\} 1`,
        ),
      );
    }
  });
});
