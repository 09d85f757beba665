/**
 * Inject tests of everything that is decided before Redis is consulted: validation (400 naming
 * the field), auth, not-ready answers, probes, OpenAPI, rate limiting and load shedding. The
 * Redis client points at a closed port; answers that need Redis are in app.int.test.ts.
 */
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { build, createModelStore, type BuildOptions } from './app.js';

const apps: FastifyInstance[] = [];
const clients: Redis[] = [];

async function app(extra: Partial<BuildOptions> = {}, before?: (a: FastifyInstance) => void) {
  const redis = new Redis({
    port: 1,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  clients.push(redis);
  const a = await build({ redis, models: createModelStore(), adminToken: 'secret', ...extra });
  before?.(a);
  await a.ready();
  apps.push(a);
  return a;
}

afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
  for (const c of clients.splice(0)) c.disconnect();
});

const rec = {
  userId: 'u1',
  storeId: 'store-0',
  context: { time: '2026-11-24T08:00:00Z', weather: { condition: 'rain', temperatureC: 8 }, channel: 'app' },
  limit: 5,
};

describe('request validation names the offending field', () => {
  const cases: {
    name: string;
    url: string;
    method?: 'POST' | 'GET' | 'PUT' | 'DELETE';
    body?: unknown;
    field: string;
  }[] = [
    {
      name: 'missing userId',
      url: '/v1/recommendations',
      body: { ...rec, userId: undefined },
      field: 'userId',
    },
    {
      name: 'missing context.time',
      url: '/v1/recommendations',
      body: { ...rec, context: {} },
      field: 'context.time',
    },
    {
      name: 'malformed context.time',
      url: '/v1/recommendations',
      body: { ...rec, context: { time: 'yesterday' } },
      field: 'context.time',
    },
    {
      name: 'unknown channel',
      url: '/v1/recommendations',
      body: { ...rec, context: { ...rec.context, channel: 'fax' } },
      field: 'context.channel',
    },
    { name: 'limit out of range', url: '/v1/recommendations', body: { ...rec, limit: 0 }, field: 'limit' },
    {
      name: 'limit not an integer',
      url: '/v1/recommendations',
      body: { ...rec, limit: 'five' },
      field: 'limit',
    },
    {
      name: 'pickup without items',
      url: '/v1/pickup-estimate',
      body: { storeId: 's', items: [] },
      field: 'items',
    },
    {
      name: 'pickup with a malformed wantedAt',
      url: '/v1/pickup-estimate',
      body: { storeId: 's', items: ['drink-1'], wantedAt: 'soon' },
      field: 'wantedAt',
    },
    {
      name: 'event of unknown type',
      url: '/v1/events',
      body: { eventId: 'e1', type: 'purchase', userId: 'u', storeId: 's', at: '2026-11-24T08:00:00Z' },
      field: 'type',
    },
    ...(
      [
        ['event with a leap second off 23:59 UTC', { at: '2026-11-24T08:00:60Z' }, 'at'],
        ['event with a space for the T', { at: '2026-11-24 08:00:00Z' }, 'at'],
        ['event with an offset without minutes', { at: '2026-11-24T08:00:00+05' }, 'at'],
        ['event older than the dedup window', { at: '2020-01-01T00:00:00Z' }, 'at'],
        ['event an hour in the future', { at: new Date(Date.now() + 3_600_000).toISOString() }, 'at'],
        ['event with a comma in an item id', { itemIds: ['drink-1,drink-2'] }, 'itemIds[0]'],
        ['event with a negative value', { value: -1 }, 'value'],
        ['event with an unknown property', { price: 5 }, 'price'],
      ] as const
    ).map(([name, patch, field]) => ({
      name,
      url: '/v1/events',
      body: {
        eventId: 'e1',
        type: 'order',
        userId: 'u',
        storeId: 's',
        at: new Date().toISOString(),
        ...patch,
      },
      field,
    })),
    { name: 'user id with glob characters', url: '/v1/users/a*b/offers', method: 'GET', field: 'id' },
    { name: 'erase of a malformed user id', url: '/v1/users/a%20b', method: 'DELETE', field: 'id' },
    {
      name: 'model load for an unknown task',
      url: '/v1/admin/models/horoscope',
      method: 'PUT',
      body: { uri: 'file:///x' },
      field: 'task',
    },
    {
      name: 'model load for a task name longer than the router default of 100',
      url: `/v1/admin/models/${'t'.repeat(101)}`,
      method: 'PUT',
      body: { uri: 'file:///x.onnx' },
      field: 'task',
    },
    { name: 'model load without uri', url: '/v1/admin/models/churn', method: 'PUT', body: {}, field: 'uri' },
    ...['0', 'x.onnx', '/models/churn.onnx', 'http://', 'ftp://h/m.onnx'].map((uri) => ({
      name: `model load from ${uri}`,
      url: '/v1/admin/models/churn',
      method: 'PUT' as const,
      body: { uri },
      field: 'uri',
    })),
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const a = await app();
      const res = await a.inject({
        method: c.method ?? 'POST',
        url: c.url,
        payload: c.body as object,
        headers: { authorization: 'Bearer secret' },
      });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ code: 'VALIDATION', field: c.field });
      expect(res.json().message).toContain(
        c.field
          .split('.')
          .pop()!
          .replace(/\[\d+\]$/, ''),
      );
    });
  }

  it('malformed JSON is a 400, not a 500', async () => {
    const a = await app();
    const res = await a.inject({
      method: 'POST',
      url: '/v1/recommendations',
      headers: { 'content-type': 'application/json' },
      payload: '{"userId": ',
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().code).toBe('VALIDATION');
  });
});

describe('build options', () => {
  it('refuses an events stream length or dedup window that is not a positive integer, naming it', async () => {
    await expect(app({ eventsMaxLen: 0 })).rejects.toThrow(/eventsMaxLen must be a positive integer/);
    await expect(app({ eventDedupTtlSeconds: 1.5 })).rejects.toThrow(/eventDedupTtlSeconds/);
  });
});

describe('auth, readiness and ops routes', () => {
  it('erase needs the bearer token', async () => {
    const a = await app();
    expect((await a.inject({ method: 'DELETE', url: '/v1/users/u1' })).statusCode).toBe(401);
    const wrong = await a.inject({
      method: 'DELETE',
      url: '/v1/users/u1',
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().code).toBe('UNAUTHORIZED');
    // Auth is checked before input, so an anonymous caller learns nothing from validation.
    expect((await a.inject({ method: 'DELETE', url: '/v1/users/a%20b' })).statusCode).toBe(401);
    const load = await a.inject({
      method: 'PUT',
      url: '/v1/admin/models/churn',
      payload: { uri: 'file:///x' },
    });
    expect(load.statusCode).toBe(401);
  });

  it('erase is refused entirely when no token is configured', async () => {
    const a = await app({ adminToken: undefined });
    const res = await a.inject({
      method: 'DELETE',
      url: '/v1/users/u1',
      headers: { authorization: 'Bearer ' },
    });
    expect(res.statusCode).toBe(401);
  });

  it('without features or a model: not ready, recommendations 503 with Retry-After', async () => {
    const a = await app();
    const ready = await a.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json()).toEqual({
      ready: false,
      checks: { model: false, redis: false, fallback: false },
      draining: false,
    });
    const res = await a.inject({ method: 'POST', url: '/v1/recommendations', payload: rec });
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(res.json().code).toBe('NOT_READY');
    expect((await a.inject({ url: '/healthz' })).json()).toEqual({ status: 'ok' });
  });

  it('unknown routes are a coded 404', async () => {
    const a = await app();
    for (const [method, url] of [
      ['GET', '/v2/nothing'],
      ['POST', '/v1/nothing'],
      ['DELETE', '/v1/users/x/offers/extra'],
      ['PUT', '/metrics/x'],
    ] as const) {
      const res = await a.inject({ method, url });
      expect(res.statusCode, `${method} ${url}`).toBe(404);
      expect(res.json().code).toBe('NOT_FOUND');
      expect(res.headers['allow']).toBeUndefined();
    }
  });

  it('a method a path does not declare is a 405 with Allow, before its body is read', async () => {
    const a = await app();
    // method, url, route template, Allow, body
    const cases: [string, string, string, string, string?][] = [
      ['POST', '/v1/users/x/offers', '/v1/users/:id/offers', 'GET, HEAD'],
      ['DELETE', '/v1/users/x/offers?storeId=store-0', '/v1/users/:id/offers', 'GET, HEAD'],
      ['PATCH', '/v1/users/x', '/v1/users/:id', 'DELETE'],
      ['GET', '/v1/users/x', '/v1/users/:id', 'DELETE'],
      ['PUT', '/metrics', '/metrics', 'GET, HEAD'],
      ['POST', '/readyz', '/readyz', 'GET, HEAD'],
      ['DELETE', '/v1/recommendations?userId=x', '/v1/recommendations', 'POST'],
      ['GET', '/v1/recommendations', '/v1/recommendations', 'POST'],
      ['HEAD', '/v1/events', '/v1/events', 'POST'],
      ['OPTIONS', '/v1/pickup-estimate', '/v1/pickup-estimate', 'POST'],
      ['GET', '/v1/admin/models/churn', '/v1/admin/models/:task', 'PUT'],
      // A body that would be a 400 (malformed JSON) or a 415 on a declared method.
      ['POST', '/v1/users/x/offers', '/v1/users/:id/offers', 'GET, HEAD', '{"broken": '],
      ['PUT', '/healthz', '/healthz', 'GET, HEAD', '<xml/>'],
    ];
    for (const [method, url, template, allow, payload] of cases) {
      const res = await a.inject({
        method: method as 'GET',
        url,
        ...(payload
          ? {
              payload,
              headers: { 'content-type': payload.startsWith('<') ? 'text/xml' : 'application/json' },
            }
          : {}),
      });
      expect(res.statusCode, `${method} ${url}`).toBe(405);
      expect(res.headers['allow'], `${method} ${url}`).toBe(allow);
      if (method !== 'HEAD') {
        expect(res.json()).toEqual({
          code: 'METHOD_NOT_ALLOWED',
          message: `${method} is not allowed on ${template}; allowed: ${allow}`,
        });
      }
    }
    // Counted under the route template, like every other answer.
    expect((await a.inject({ url: '/metrics' })).body).toContain(
      'route="/v1/users/:id/offers",method="POST",status_code="405"',
    );
  });

  it('publishes OpenAPI with every versioned route and its schemas', async () => {
    const a = await app();
    const doc = (await a.inject({ url: '/openapi.json' })).json();
    expect(doc.openapi).toMatch(/^3\./);
    for (const p of [
      '/v1/recommendations',
      '/v1/pickup-estimate',
      '/v1/events',
      '/v1/users/{id}/offers',
      '/v1/users/{id}',
    ]) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
    // Only the declared methods: the routes that answer 405 are not part of the API.
    const methods = Object.fromEntries(
      Object.entries(doc.paths as Record<string, object>).map(([p, ops]) => [p, Object.keys(ops).sort()]),
    );
    expect(methods).toEqual({
      '/readyz': ['get'],
      '/v1/admin/models/{task}': ['put'],
      '/v1/recommendations': ['post'],
      '/v1/pickup-estimate': ['post'],
      '/v1/events': ['post'],
      '/v1/users/{id}/offers': ['get'],
      '/v1/users/{id}': ['delete'],
    });
    const body = doc.paths['/v1/recommendations'].post.requestBody.content['application/json'].schema;
    expect(body.required).toEqual(expect.arrayContaining(['userId', 'storeId', 'context']));
    expect(doc.paths['/v1/recommendations'].post.responses['200']).toBeDefined();
    // An order without value is accepted (value unknown), and the document says so.
    const event = doc.paths['/v1/events'].post.requestBody.content['application/json'].schema;
    expect(event.required).not.toContain('value');
    expect(event.properties.value.description).toMatch(/order without it is an order of unknown value/);
    expect(event.properties.at.pattern).toBeDefined();
  });

  it('serves Prometheus metrics with route templates, never raw paths', async () => {
    const a = await app();
    await a.inject({ url: '/v1/users/alice-123/offers' });
    const text = (await a.inject({ url: '/metrics' })).body;
    expect(text).toContain('crema_http_request_duration_seconds_bucket');
    expect(text).toContain('route="/v1/users/:id/offers"');
    expect(text).not.toContain('alice-123');
    // Without CREMA_MODEL_NAME and POD_NAMESPACE (a local run) and without a model loaded.
    expect(text).toContain(
      'crema_http_request_duration_seconds_count{model="local",namespace="local",revision="none",',
    );
    expect(text).toContain('process_resident_memory_bytes');
  });

  // Two apps to build: more than the default 5 s on a busy 2-core machine.
  it(
    'labels request metrics with the RecommenderModel, namespace and revision, so two models are told apart',
    { timeout: 20_000 },
    async () => {
      // Two canaries of different RecommenderModels, as the operator renders them (no model
      // loaded here: revision "none"); the second one's requests fail the same way.
      const north = await app({ modelName: 'drinks', namespace: 'north', variant: 'canary' });
      const south = await app({ modelName: 'addons', namespace: 'south', variant: 'canary' });
      for (let i = 0; i < 3; i++)
        await north.inject({ method: 'POST', url: '/v1/recommendations', payload: rec });
      await south.inject({ method: 'POST', url: '/v1/recommendations', payload: rec });
      const series = (a: FastifyInstance) =>
        a
          .inject({ url: '/metrics' })
          .then((r) =>
            r.body
              .split('\n')
              .filter(
                (l) => l.startsWith('crema_http_request_duration_seconds_count{') && l.includes('/v1/'),
              ),
          );
      const labels = 'variant="canary",route="/v1/recommendations",method="POST",status_code="503"';
      expect(await series(north)).toEqual([
        `crema_http_request_duration_seconds_count{model="drinks",namespace="north",revision="none",${labels}} 3`,
      ]);
      expect(await series(south)).toEqual([
        `crema_http_request_duration_seconds_count{model="addons",namespace="south",revision="none",${labels}} 1`,
      ]);
    },
  );
});

describe('protection', () => {
  it('rate limits per client with 429 and Retry-After', async () => {
    const a = await app({ protection: { rateLimit: { perSecond: 1, burst: 2 } } });
    const hit = (client: string) =>
      a.inject({ url: '/v1/users/u1/offers', headers: { 'x-client-id': client } });
    expect((await hit('a')).statusCode).not.toBe(429);
    expect((await hit('a')).statusCode).not.toBe(429);
    const third = await hit('a');
    expect(third.statusCode).toBe(429);
    expect(third.json().code).toBe('RATE_LIMITED');
    expect(Number(third.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect((await hit('b')).statusCode).not.toBe(429);
    expect((await a.inject({ url: '/healthz', headers: { 'x-client-id': 'a' } })).statusCode).toBe(200);
  });

  const busy = (ms: number) => {
    const until = performance.now() + ms;
    while (performance.now() < until) {
      /* block the event loop */
    }
  };
  const ok = (a: FastifyInstance) => a.inject({ url: '/v1/test-ok' });
  const withOk = (x: FastifyInstance) => x.get('/v1/test-ok', async () => ({ ok: true }));

  it('one event-loop stall does not shed the requests after it', async () => {
    // Before: p99 over 500 ms windows, so one 300 ms stall (GC, a busy node) shed the next window.
    const a = await app({ protection: { maxEventLoopDelayMs: 50 } }, withOk);
    await new Promise((r) => setTimeout(r, 300));
    busy(300);
    const after = [];
    for (let i = 0; i < 12; i++) {
      after.push((await ok(a)).statusCode);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(after.every((c) => c === 200)).toBe(true);
  });

  it(
    'a sustained event-loop lag sheds with 503, and answers again once it ends',
    { timeout: 15_000 },
    async () => {
      const a = await app({ protection: { maxEventLoopDelayMs: 20 } }, withOk);
      const load = setInterval(() => busy(60), 1);
      let shed;
      try {
        const until = Date.now() + 6000;
        while (Date.now() < until && !shed) {
          const r = await ok(a);
          if (r.statusCode === 503) shed = r;
          await new Promise((r) => setTimeout(r, 50));
        }
      } finally {
        clearInterval(load);
      }
      expect(shed?.json().code).toBe('OVERLOADED');
      // The probes are never refused, even while lagging.
      expect((await a.inject({ url: '/healthz' })).statusCode).toBe(200);
      await new Promise((r) => setTimeout(r, 2200));
      expect((await ok(a)).statusCode).toBe(200);
    },
  );

  it('holds a 503 for shedPaceMs, so a client that resends at once cannot busy-loop the process', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = await app({ protection: { maxInFlight: 1, shedPaceMs: 150 } }, (x) => {
      x.get('/v1/test-slow', async () => {
        await gate;
        return { ok: true };
      });
    });
    const slow = a.inject({ url: '/v1/test-slow' });
    await new Promise((r) => setTimeout(r, 20));
    const t0 = performance.now();
    const shed = await a.inject({ url: '/v1/test-slow' });
    const held = performance.now() - t0;
    expect(shed.statusCode).toBe(503);
    expect(shed.headers['retry-after']).toBe('1');
    expect(held).toBeGreaterThanOrEqual(140);
    // Probes are never held or refused.
    const t1 = performance.now();
    expect((await a.inject({ url: '/healthz' })).statusCode).toBe(200);
    expect(performance.now() - t1).toBeLessThan(140);
    release();
    expect((await slow).statusCode).toBe(200);
  });

  describe('the adaptive limit refuses only while the process is saturated', () => {
    // Requests that take 80 ms (over the 50 ms target) while the loop idles: a stall elsewhere
    // (a slow dependency, the node descheduling the pod), not too much admitted work.
    const slow = (x: FastifyInstance) =>
      x.get('/v1/test-slow', async () => {
        await new Promise((r) => setTimeout(r, 80));
        return { ok: true };
      });
    const waves = async (a: FastifyInstance) => {
      const codes: number[] = [];
      const messages = new Set<string>();
      for (let w = 0; w < 12; w++) {
        const rs = await Promise.all(Array.from({ length: 24 }, () => a.inject({ url: '/v1/test-slow' })));
        for (const r of rs) {
          codes.push(r.statusCode);
          if (r.statusCode === 503) messages.add((r.json() as { message: string }).message);
        }
      }
      return { refused: codes.filter((c) => c === 503).length, total: codes.length, messages: [...messages] };
    };

    it('slow answers of a process with CPU to spare are served late, never refused', async () => {
      const a = await app({ protection: { latencyTargetMs: 50, maxQueueMs: 25, shedPaceMs: 0 } }, slow);
      expect(await waves(a)).toMatchObject({ refused: 0, total: 288 });
    });

    it('the same load on a saturated process shrinks the limit and refuses, naming the check', async () => {
      const a = await app(
        { protection: { latencyTargetMs: 50, maxQueueMs: 0, saturationUtilization: 0, shedPaceMs: 0 } },
        slow,
      );
      const r = await waves(a);
      expect(r.refused).toBeGreaterThan(0);
      expect(r.messages).toEqual(['server is overloaded (concurrency_limit), retry later']);
    });
  });

  it('on a socket, a refused request is answered before the framework sees it, and still counted', async () => {
    // At 10x the sustainable rate nine requests in ten are refused: a refusal that goes through
    // routing, hooks, the error handler and the serializer takes the CPU the admitted ones need.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seen: number[] = [];
    const a = await app({ protection: { maxInFlight: 2, shedPaceMs: 0 } }, (x) => {
      x.get('/v1/test-slow', async () => {
        await gate;
        return { ok: true };
      });
      x.addHook('onResponse', (_req, reply, done) => {
        seen.push(reply.statusCode);
        done();
      });
    });
    await a.listen({ host: '127.0.0.1', port: 0 });
    const { port } = a.server.address() as { port: number };
    const url = `http://127.0.0.1:${port}/v1/test-slow`;
    const slow = [fetch(url), fetch(url)];
    await new Promise((r) => setTimeout(r, 50));
    const shed = await fetch(url);
    expect(shed.status).toBe(503);
    expect(shed.headers.get('retry-after')).toBe('1');
    expect(shed.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(await shed.json()).toEqual({
      code: 'OVERLOADED',
      message: 'server is overloaded (in_flight), retry later',
    });
    // The framework never saw it: no onResponse for the 503.
    expect(seen).toEqual([]);
    release();
    expect((await Promise.all(slow)).map((r) => r.status)).toEqual([200, 200]);
    expect(seen).toEqual([200, 200]);
    // Counted like any answer: the shed reason, and the request metrics with its route.
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/crema_requests_rejected_total\{[^}]*reason="in_flight"[^}]*\} 1/);
    expect(metrics).toMatch(
      /http_request_duration_seconds_count\{(?=[^}]*route="\/v1\/test-slow")(?=[^}]*method="GET")(?=[^}]*status_code="503")[^}]*\} 1$/m,
    );
  });

  it('sheds load beyond maxInFlight with 503 and Retry-After', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = await app({ protection: { maxInFlight: 2 } }, (x) => {
      x.get('/v1/test-slow', async () => {
        await gate;
        return { ok: true };
      });
    });
    const slow = [a.inject({ url: '/v1/test-slow' }), a.inject({ url: '/v1/test-slow' })];
    await new Promise((r) => setTimeout(r, 20));
    const shed = await a.inject({ url: '/v1/test-slow' });
    expect(shed.statusCode).toBe(503);
    expect(shed.headers['retry-after']).toBe('1');
    expect(shed.json().code).toBe('OVERLOADED');
    release();
    expect((await Promise.all(slow)).map((r) => r.statusCode)).toEqual([200, 200]);
    expect((await a.inject({ url: '/v1/test-slow' })).statusCode).toBe(200);
  });
});
