import Fastify from 'fastify';
import { Client } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { DrainState, registerDrain } from './drain.js';

const apps: Array<{ close(): Promise<unknown> }> = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});

async function serve(state: DrainState, maxAgeMs: number) {
  const app = Fastify();
  registerDrain(app, state, maxAgeMs);
  app.get('/x', async () => ({ ok: true }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  const client = new Client(`http://127.0.0.1:${(app.server.address() as { port: number }).port}`);
  apps.push(client, app);
  const get = async () => {
    const res = await client.request({ path: '/x', method: 'GET' });
    await res.body.text();
    return res.headers['connection'];
  };
  return { get };
}

describe('connection policy', () => {
  it('keeps a young connection alive and closes one older than the limit after its answer', async () => {
    const { get } = await serve(new DrainState(), 100);
    expect(await get()).not.toBe('close');
    await new Promise((r) => setTimeout(r, 150));
    expect(await get()).toBe('close');
    // The client reconnects: a new connection is young again.
    expect(await get()).not.toBe('close');
  });

  it('closes every connection after its answer while draining', async () => {
    const state = new DrainState();
    const { get } = await serve(state, 0);
    expect(await get()).not.toBe('close');
    state.begin();
    expect(await get()).toBe('close');
    expect(await get()).toBe('close');
  });
});
