import { describe, expect, it } from 'vitest';
import { NotLeaderError, fenceWrites } from './fence.js';
import { KubeApiError, type KubeClient } from './kube.js';
import { LeaderElector } from './leader.js';

/** A fake of our own KubeClient holding one Lease object in memory. */
function leaseStore() {
  let lease: Record<string, unknown> | undefined;
  let rv = 0;
  const sent: string[] = [];
  const client: KubeClient = {
    requestCounts: {},
    async request<T>(method: string, path: string, opts?: { body?: unknown }): Promise<T> {
      sent.push(`${method} ${path}`);
      if (method === 'GET') {
        if (!lease) throw new KubeApiError('GET', path, 404, 'NotFound', 'not found');
        return structuredClone(lease) as T;
      }
      const body = opts?.body as { metadata: Record<string, unknown> };
      if (method === 'PUT' && body.metadata['resourceVersion'] !== String(rv))
        throw new KubeApiError('PUT', path, 409, 'Conflict', 'conflict');
      lease = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
      return structuredClone(lease) as T;
    },
    async watch() {},
    close() {},
  };
  return { client, sent };
}

describe('LeaderElector fencing', () => {
  it('holds the lease only until renewDeadline after its last renewal began, by the monotonic clock', async () => {
    const { client } = leaseStore();
    let mono = 1_000;
    const le = new LeaderElector(client, {
      namespace: 'ns',
      name: 'crema-operator',
      identity: 'a',
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      monotonicMs: () => mono,
    });
    expect(le.holdsLease()).toBe(false);
    let started = false;
    const running = le.run(
      () => (started = true),
      () => {},
    );
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toBe(true);
    expect(le.isLeader).toBe(true);
    expect(le.holdsLease()).toBe(true);
    mono += 9_999;
    expect(le.holdsLease()).toBe(true);
    // Frozen past the deadline (no renewal ran): still "leader" as far as its flags go, but it
    // may not write: a standby may have taken over.
    mono += 1;
    expect(le.isLeader).toBe(true);
    expect(le.holdsLease()).toBe(false);
    // A successful renewal gives it another renewDeadline.
    expect(await le.tryAcquireOrRenew()).toBe(true);
    expect(le.holdsLease()).toBe(true);
    await le.release();
    await running;
    expect(le.holdsLease()).toBe(false);
  });
});

describe('LeaderElector renewal', () => {
  it('does not write on a lease read that came back a renew deadline or more after it was sent', async () => {
    const store = leaseStore();
    let mono = 1_000;
    const le = new LeaderElector(store.client, {
      namespace: 'ns',
      name: 'crema-operator',
      identity: 'a',
      leaseDurationMs: 3_000,
      renewDeadlineMs: 2_000,
      monotonicMs: () => mono,
    });
    expect(await le.tryAcquireOrRenew()).toBe(true);
    // The renewal's GET answer arrives after the process was frozen for 5 s (SIGSTOP).
    const frozen: KubeClient = {
      ...store.client,
      async request<T>(method: string, path: string, opts?: { body?: unknown }): Promise<T> {
        const r = await store.client.request<T>(method, path, opts);
        if (method === 'GET') mono += 5_000;
        return r;
      },
    };
    const stale = new LeaderElector(frozen, {
      namespace: 'ns',
      name: 'crema-operator',
      identity: 'a',
      leaseDurationMs: 3_000,
      renewDeadlineMs: 2_000,
      monotonicMs: () => mono,
    });
    const before = store.sent.length;
    expect(await stale.tryAcquireOrRenew()).toBe(false);
    expect(store.sent.slice(before)).toEqual([
      'GET /apis/coordination.k8s.io/v1/namespaces/ns/leases/crema-operator',
    ]);
  });
});

describe('fenceWrites', () => {
  it('refuses writes without the lease before sending them; reads always pass', async () => {
    const { client, sent } = leaseStore();
    let may = false;
    const fenced = fenceWrites(client, () => may);
    await expect(
      fenced.request('PATCH', '/apis/apps/v1/namespaces/ns/deployments/d', {}),
    ).rejects.toBeInstanceOf(NotLeaderError);
    await expect(fenced.request('DELETE', '/api/v1/namespaces/ns/services/s')).rejects.toThrow(
      /DELETE \/api\/v1\/namespaces\/ns\/services\/s refused: this replica does not hold a valid leader lease/,
    );
    await expect(fenced.request('GET', '/x')).rejects.toBeInstanceOf(KubeApiError); // sent: 404 from the fake
    expect(sent).toEqual(['GET /x']);
    may = true;
    await fenced.request('POST', '/x', { body: { metadata: {} } });
    expect(sent).toEqual(['GET /x', 'POST /x']);
  });
});
