import * as k8s from '@kubernetes/client-node';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { generateTestPki } from '../../../hack/testenv/pki.js';
import { NotLeaderError, fenceWrites } from './fence.js';
import { createKubeClient } from './kube.js';

const closers: (() => void)[] = [];
afterEach(() => {
  while (closers.length) closers.pop()!();
});

/**
 * A TLS API stand-in behind a TCP relay that holds every byte from the client until released:
 * the client's new connection sits in its TLS handshake, as it does when the process is frozen
 * (SIGSTOP, a long GC pause) right after it issued a request.
 */
async function heldConnection() {
  const pki = await generateTestPki(1);
  const received: string[] = [];
  const api = createHttpsServer({ cert: pki.servingCert, key: pki.servingKey }, (req, res) => {
    received.push(`${req.method} ${req.url}`);
    res.setHeader('content-type', 'application/json');
    res.end('{}');
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  let released = false;
  const waiting: (() => void)[] = [];
  const sockets: Socket[] = [];
  const relay = createTcpServer((client) => {
    sockets.push(client);
    const upstream = connect((api.address() as AddressInfo).port, '127.0.0.1');
    sockets.push(upstream);
    upstream.pipe(client);
    const forward = () => client.pipe(upstream);
    if (released) forward();
    else {
      client.pause();
      waiting.push(forward);
    }
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  closers.push(() => {
    for (const s of sockets) s.destroy();
    relay.close();
    api.close();
  });
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'c',
        server: `https://127.0.0.1:${(relay.address() as AddressInfo).port}`,
        caData: Buffer.from(pki.caCert).toString('base64'),
      },
    ],
    users: [
      {
        name: 'u',
        certData: Buffer.from(pki.adminCert).toString('base64'),
        keyData: Buffer.from(pki.adminKey).toString('base64'),
      },
    ],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  const client = await createKubeClient(kc);
  closers.push(() => client.close());
  return {
    client,
    received,
    connections: () => sockets.length / 2,
    release() {
      released = true;
      for (const f of waiting.splice(0)) f();
    },
  };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe('fenceWrites on a real connection', () => {
  it('refuses a write that waited for its connection while the lease ran out', async () => {
    const api = await heldConnection();
    let may = true;
    const fenced = fenceWrites(api.client, () => may);
    const write = fenced.request('PATCH', '/apis/crema.io/v1alpha1/namespaces/ns/recommendermodels/f1', {
      body: { status: {} },
      contentType: 'application/merge-patch+json',
    });
    const settled = write.then(
      () => 'sent',
      (e: unknown) => e,
    );
    await until(() => api.connections() === 1); // issued with the lease, now in its handshake
    may = false; // frozen past the lease; a standby took over
    api.release();
    expect(await settled).toBeInstanceOf(NotLeaderError);
    expect(api.received).toEqual([]);
  });

  it('sends a write whose lease is still valid when the connection is ready, and reuses it', async () => {
    const api = await heldConnection();
    const fenced = fenceWrites(api.client, () => true);
    const first = fenced.request('POST', '/x', { body: {} });
    await until(() => api.connections() === 1);
    api.release();
    await first;
    await fenced.request('PUT', '/y', { body: {} });
    expect(api.received).toEqual(['POST /x', 'PUT /y']);
  });
});
