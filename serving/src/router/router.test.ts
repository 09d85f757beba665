import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { DrainState } from '../plugins/drain.js';
import { buildRouter, userIdOf } from './app.js';
import { parseRouterConfig, routeFor, validateRouterConfig, type RouterConfig } from './config.js';

const cfg = (
  weights: [number, number],
  canaryUpstream: string | null = 'http://127.0.0.1:2',
): RouterConfig => ({
  salt: 'exp-1',
  stable: 'stable',
  variants: [
    { name: 'stable', weight: weights[0], upstream: 'http://127.0.0.1:1' },
    { name: 'canary', weight: weights[1], ...(canaryUpstream ? { upstream: canaryUpstream } : {}) },
  ],
});

describe('router config', () => {
  const cases: [string, unknown, RegExp][] = [
    ['weights not summing to 100', { ...cfg([90, 20]) }, /sum to 110/],
    ['stable not a variant', { ...cfg([90, 10]), stable: 'prod' }, /stable: must name a variant/],
    ['no salt', { ...cfg([90, 10]), salt: '' }, /salt/],
    [
      'duplicate names',
      {
        ...cfg([50, 50]),
        variants: [cfg([50, 50]).variants[0], { ...cfg([50, 50]).variants[0], weight: 50 }],
      },
      /duplicate/,
    ],
    ['https upstream', cfg([90, 10], 'https://x'), /only http/],
    [
      'an experiment without its run',
      { ...cfg([90, 10]), experiment: { id: 'shop/ab', ttlSeconds: 60 } },
      /experiment\.run: 8 to 32 lowercase hex digits/,
    ],
    [
      'an experiment run that is not from a uid',
      { ...cfg([90, 10]), experiment: { id: 'shop/ab', run: '0A1B-2C3D', ttlSeconds: 60 } },
      /experiment\.run/,
    ],
  ];
  for (const [name, c, re] of cases)
    it(`rejects ${name}`, () => expect(validateRouterConfig(c).join('; ')).toMatch(re));

  it('reads YAML and JSON', () => {
    const y = parseRouterConfig(
      'salt: s\nstable: a\nvariants:\n  - {name: a, weight: 100, upstream: "http://127.0.0.1:1"}\n',
    );
    expect(y.variants[0]!.name).toBe('a');
    expect(parseRouterConfig(JSON.stringify(cfg([90, 10]))).salt).toBe('exp-1');
  });
});

describe('sticky assignment over 100k users', { timeout: 30_000 }, () => {
  const users = Array.from({ length: 100_000 }, (_, i) => `user-${i}`);

  it('splits within 0.5 percentage points of the weights', () => {
    const c = cfg([80, 20]);
    const canary = users.filter((u) => routeFor(c, u).variant === 'canary').length;
    expect(Math.abs(canary / users.length - 0.2)).toBeLessThan(0.005);
  });

  it('the same user gets the same variant from a fresh config object (another replica or a restart)', () => {
    const a = cfg([50, 50]);
    const b = parseRouterConfig(JSON.stringify(cfg([50, 50])));
    for (const u of users.slice(0, 20_000)) expect(routeFor(b, u).variant).toBe(routeFor(a, u).variant);
  });

  it('raising the canary from 10% to 20% moves only stable users to canary, about 10% of all', () => {
    const before = cfg([90, 10]);
    const after = cfg([80, 20]);
    let moved = 0;
    for (const u of users) {
      const x = routeFor(before, u).variant;
      const y = routeFor(after, u).variant;
      if (x !== y) {
        expect([x, y]).toEqual(['stable', 'canary']);
        moved++;
      }
    }
    expect(Math.abs(moved / users.length - 0.1)).toBeLessThan(0.005);
  });

  it('a variant without an upstream is served by stable', () => {
    const c = cfg([0, 100], null);
    // The route keeps the assigned variant (the router strips its experiment tag: see below).
    expect(routeFor(c, 'u1')).toEqual({ variant: 'canary', rerouted: true, upstream: 'http://127.0.0.1:1' });
  });
});

describe('userIdOf', () => {
  it('reads the path for user routes and the JSON body otherwise', () => {
    expect(userIdOf('/v1/users/ab%40c/offers', undefined)).toBe('ab@c');
    expect(userIdOf('/v1/recommendations', Buffer.from('{"userId":"u7"}'))).toBe('u7');
    expect(userIdOf('/v1/recommendations', Buffer.from('not json'))).toBeUndefined();
  });
});

describe('router forwarding (loopback upstreams)', () => {
  const upstreams: FastifyInstance[] = [];
  const urls: Record<string, string> = {};
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'crema-router-'));
    for (const name of ['stable', 'canary']) {
      const u = Fastify();
      u.post('/v1/recommendations', async (req) => ({
        servedBy: name,
        variantHeader: req.headers['x-crema-variant'],
        body: req.body,
      }));
      u.get('/v1/users/:id/offers', async () => ({ servedBy: name }));
      u.addContentTypeParser('text/plain', { parseAs: 'string' }, (_req, body, done) => done(null, body));
      u.post('/v1/echo', async (req, reply) =>
        reply
          .code(429)
          .header('retry-after', '3')
          .send({ servedBy: name, headers: req.headers, body: req.body }),
      );
      urls[name] = await u.listen({ host: '127.0.0.1', port: 0 });
      upstreams.push(u);
    }
  });
  afterAll(async () => {
    for (const u of upstreams) await u.close();
    await rm(dir, { recursive: true, force: true });
  });

  const config = (canaryWeight: number, canaryUpstream?: string): RouterConfig => ({
    salt: 'exp-2',
    stable: 'stable',
    variants: [
      { name: 'stable', weight: 100 - canaryWeight, upstream: urls['stable']! },
      { name: 'canary', weight: canaryWeight, upstream: canaryUpstream ?? urls['canary']! },
    ],
  });

  it('forwards to the assigned variant, body intact, same answer from two router replicas', async () => {
    const r1 = await buildRouter({ config: config(50) });
    const r2 = await buildRouter({ config: config(50) });
    try {
      const seen = new Set<string>();
      for (let i = 0; i < 40; i++) {
        const payload = { userId: `u-${i}`, storeId: 's', context: { time: '2026-11-24T08:00:00Z' } };
        const a = await r1.inject({ method: 'POST', url: '/v1/recommendations', payload });
        const b = await r2.inject({ method: 'POST', url: '/v1/recommendations', payload });
        expect(a.statusCode).toBe(200);
        expect(a.json().servedBy).toBe(b.json().servedBy);
        expect(a.json().variantHeader).toBe(a.json().servedBy);
        expect(a.json().body).toEqual(payload);
        expect(a.headers['x-crema-variant']).toBe(a.json().servedBy);
        seen.add(a.json().servedBy);
      }
      expect(seen).toEqual(new Set(['stable', 'canary']));
    } finally {
      await r1.close();
      await r2.close();
    }
  });

  it('a down upstream falls back to stable, and the fallback is counted', async () => {
    const r = await buildRouter({ config: config(100, 'http://127.0.0.1:1') });
    try {
      const res = await r.inject({ url: '/v1/users/u1/offers' });
      expect(res.statusCode).toBe(200);
      expect(res.json().servedBy).toBe('stable');
      expect((await r.inject({ url: '/metrics' })).body).toMatch(
        /crema_router_fallbacks_total\{variant="canary",reason="upstream_down"\} 1/,
      );
    } finally {
      await r.close();
    }
  });

  it('applies a changed config file without a restart and keeps the old one when the new is invalid', async () => {
    const path = join(dir, 'router.json');
    await writeFile(path, JSON.stringify(config(0)));
    const r = await buildRouter({ configPath: path, watchIntervalMs: 50 });
    try {
      const served = async () => (await r.inject({ url: '/v1/users/someone/offers' })).json().servedBy;
      expect(await served()).toBe('stable');
      await writeFile(path, JSON.stringify(config(100)));
      await expect.poll(served, { timeout: 3000, interval: 50 }).toBe('canary');
      await writeFile(path, '{"salt": ');
      await new Promise((res) => setTimeout(res, 300));
      expect(await served()).toBe('canary');
    } finally {
      await r.close();
    }
  });

  it('over a real socket: the same routing, headers, body, metrics, drain and limits as inject', async () => {
    const drain = new DrainState();
    const r = await buildRouter({
      config: { ...config(50), experiment: { id: 'shop/ab', run: '0a1b2c3d4e5f', ttlSeconds: 60 } },
      drain,
    });
    try {
      const base = await r.listen({ host: '127.0.0.1', port: 0 });
      // idle keep-alive connections last as long as fastify's own server kept them
      expect(r.server.keepAliveTimeout).toBe(72_000);
      for (let i = 0; i < 20; i++) {
        const payload = JSON.stringify({ userId: `u-${i}`, storeId: 's' });
        const viaSocket = await request(`${base}/v1/echo`, {
          method: 'POST',
          headers: {
            // a body the router must pass on whatever its type (it used to drop non-JSON bodies)
            'content-type': 'text/plain',
            'x-request-id': `req-${i}`,
            'x-crema-experiment-variant': 'forged',
          },
          body: payload,
        });
        const viaInject = await r.inject({
          method: 'POST',
          url: '/v1/echo',
          headers: { 'content-type': 'text/plain', 'x-request-id': `req-${i}` },
          payload,
        });
        const answer = (await viaSocket.body.json()) as {
          servedBy: string;
          headers: Record<string, string>;
          body: string;
        };
        expect(viaSocket.statusCode).toBe(429);
        expect(viaInject.statusCode).toBe(429);
        expect(answer.servedBy).toBe(viaInject.json().servedBy);
        expect(answer.body).toBe(payload);
        expect(viaInject.json().body).toBe(payload);
        expect(answer.headers).toMatchObject({
          'x-crema-variant': answer.servedBy,
          'x-request-id': `req-${i}`,
          'x-crema-experiment': 'shop/ab',
          'x-crema-experiment-run': '0a1b2c3d4e5f',
          'x-crema-experiment-variant': answer.servedBy,
          'x-crema-experiment-ttl': '60',
        });
        for (const h of ['x-crema-variant', 'x-crema-router-config', 'retry-after', 'content-type'])
          expect([h, viaSocket.headers[h]]).toEqual([h, viaInject.headers[h]]);
        expect(viaSocket.headers['x-crema-variant']).toBe(answer.servedBy);
      }
      const metrics = await (await request(`${base}/metrics`)).body.text();
      expect(metrics).toMatch(/crema_router_requests_total\{variant="stable",served_by="stable"\} \d+/);
      expect(metrics).toMatch(/crema_router_request_duration_seconds_count\{variant="canary"\} \d+/);

      const big = await request(`${base}/v1/echo`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: Buffer.alloc(2 << 20, 0x20),
      });
      expect(big.statusCode).toBe(413);
      expect(((await big.body.json()) as { code: string }).code).toBe('BODY_TOO_LARGE');

      drain.begin();
      const draining = await request(`${base}/v1/users/u1/offers`);
      await draining.body.dump();
      expect(draining.statusCode).toBe(200);
      expect(draining.headers['connection']).toBe('close');
    } finally {
      await r.close();
    }
  });
});
