import { once } from 'node:events';
import { connect } from 'node:net';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { KeyBatcher, type MultiGet } from './batch.js';
import { DeadlineExceededError } from './deadline.js';

/** A MultiGet over a map that records each call and answers after `delayMs`. */
function fakeStore(values: Record<string, string>, delayMs = 0) {
  const calls: string[][] = [];
  const mget: MultiGet = async (keys) => {
    calls.push(keys);
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    return keys.map((k) => (k in values ? Buffer.from(values[k]!) : null));
  };
  return { calls, mget };
}

describe('KeyBatcher', () => {
  it('reads the keys asked for in one turn with one MGET and gives each caller its value', async () => {
    const { calls, mget } = fakeStore({ a: '1', b: '2', c: '3' });
    const b = new KeyBatcher(mget);
    const got = await Promise.all(['a', 'x', 'c', 'b', 'a'].map((k) => b.get(k, 100)));
    expect(got.map((v) => v?.toString() ?? null)).toEqual(['1', null, '3', '2', '1']);
    expect(calls).toEqual([['a', 'x', 'c', 'b', 'a']]);
    // The next turn is a new MGET.
    expect((await b.get('b', 100))?.toString()).toBe('2');
    expect(calls).toHaveLength(2);
  });

  it('splits a turn with more than maxKeys keys', async () => {
    const { calls, mget } = fakeStore({});
    const sizes: number[] = [];
    const b = new KeyBatcher(mget, { maxKeys: 3, onFetch: (n) => sizes.push(n) });
    await Promise.all(Array.from({ length: 7 }, (_, i) => b.get(`k${i}`, 100)));
    expect(calls.map((c) => c.length)).toEqual([3, 3, 1]);
    expect(sizes).toEqual([3, 3, 1]);
  });

  it('rejects every caller of a failed MGET with the client error', async () => {
    const b = new KeyBatcher(async () => {
      throw new Error('Connection is closed.');
    });
    const r = await Promise.allSettled([b.get('a', 100), b.get('b', 100)]);
    expect(r.map((x) => (x as PromiseRejectedResult).reason.message)).toEqual([
      'Connection is closed.',
      'Connection is closed.',
    ]);
    const sync = new KeyBatcher(() => {
      throw new Error('sync failure');
    });
    await expect(sync.get('a', 100)).rejects.toThrow('sync failure');
  });

  it('fails only the keys whose node failed (a cluster), the others get their values', async () => {
    const down = new Error('Connection is closed.');
    const b = new KeyBatcher(async (keys) => keys.map((k) => (k.startsWith('down') ? down : Buffer.from(k))));
    const r = await Promise.allSettled(['up-1', 'down-1', 'up-2'].map((k) => b.get(k, 100)));
    expect(r.map((x) => (x.status === 'fulfilled' ? x.value?.toString() : x.reason))).toEqual([
      'up-1',
      down,
      'up-2',
    ]);
  });

  it('rejects callers whose deadline passes first, each after its own deadline, and ignores the late answer', async () => {
    const { mget } = fakeStore({ a: '1' }, 120);
    const b = new KeyBatcher(mget);
    const t0 = performance.now();
    const short = b.get('a', 20);
    const long = b.get('a', 60);
    const patient = b.get('a', 1000);
    const shortErr = await short.catch((e: unknown) => e);
    const t1 = performance.now() - t0;
    const longErr = await long.catch((e: unknown) => e);
    const t2 = performance.now() - t0;
    expect(shortErr).toBeInstanceOf(DeadlineExceededError);
    expect((shortErr as Error).message).toBe('feature deadline of 20 ms exceeded');
    expect(longErr).toBeInstanceOf(DeadlineExceededError);
    expect(t1).toBeGreaterThanOrEqual(19);
    expect(t2).toBeGreaterThanOrEqual(59);
    expect(t2).toBeLessThan(115);
    expect((await patient)?.toString()).toBe('1');
  });

  it('uses a reply that arrived in time while the process was busy past the deadline', async () => {
    // An echo server on another thread stands in for Redis: it answers while this loop is busy.
    const echo = new Worker(
      `const net = require('node:net');
       const s = net.createServer((c) => c.on('data', (d) => c.write(d))).listen(0, '127.0.0.1', () =>
         require('node:worker_threads').parentPort.postMessage(s.address().port));`,
      { eval: true },
    );
    const [port] = (await once(echo, 'message')) as [number];
    const sock = connect(port, '127.0.0.1');
    await once(sock, 'connect');
    try {
      const mget: MultiGet = (keys) =>
        new Promise((resolve) => {
          sock.once('data', () => resolve(keys.map(() => Buffer.from('v'))));
          sock.write('x');
        });
      const b = new KeyBatcher(mget);
      const got = b.get('a', 20);
      // The MGET goes out in this check phase; then the loop is busy for 60 ms (a long turn of
      // an overloaded process). The reply is in the socket long before the deadline.
      setImmediate(() => {
        const until = performance.now() + 60;
        while (performance.now() < until) {
          /* busy */
        }
      });
      // Before: the deadline timer ran before the poll that reads the reply → deadline exceeded.
      expect((await got)?.toString()).toBe('v');
    } finally {
      sock.destroy();
      await echo.terminate();
    }
  });

  it('refuses a maxKeys below 1', () => {
    expect(() => new KeyBatcher(async () => [], { maxKeys: 0 })).toThrow(/maxKeys/);
  });
});
