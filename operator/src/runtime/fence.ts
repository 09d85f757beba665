/**
 * Write fencing: every write the controllers send goes through a client that first asks
 * whether this replica still holds a valid lease (`LeaderElector.holdsLease`, monotonic clock).
 * Reads pass; a write without the lease fails with `NotLeaderError` before it is sent, so a
 * leader that was frozen (SIGSTOP, GC, a stalled VM) and wakes after a standby took over writes
 * nothing, even from a reconcile that was in flight when it froze. The check runs twice: at the
 * call, and again when a socket is ready and the request is about to be written (a request that
 * waited for a new connection's TLS handshake across the freeze would otherwise go out stale).
 */
import type { KubeClient } from './kube.js';

export class NotLeaderError extends Error {
  constructor(method: string, path: string) {
    super(`${method} ${path} refused: this replica does not hold a valid leader lease`);
    this.name = 'NotLeaderError';
  }
}

/** `client`, with every non-GET request refused unless `mayWrite()` says yes at that moment. */
export function fenceWrites(client: KubeClient, mayWrite: () => boolean): KubeClient {
  return {
    request(method, path, opts) {
      if (method === 'GET') return client.request(method, path, opts);
      const refuse = () => (mayWrite() ? undefined : new NotLeaderError(method, path));
      const refused = refuse();
      if (refused) return Promise.reject(refused);
      // Checked again when the bytes go out: a request can wait for a connection across a freeze.
      return client.request(method, path, { ...opts, beforeSend: refuse });
    },
    watch: (path, query, onEvent, signal) => client.watch(path, query, onEvent, signal),
    get requestCounts() {
      return client.requestCounts;
    },
    close: () => client.close(),
  };
}
