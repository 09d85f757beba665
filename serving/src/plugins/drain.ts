/**
 * Graceful drain of a terminating pod. On SIGTERM the kubelet also takes the pod out of its
 * Services, but kube-proxy and every client (a router's keep-alive pool, a load balancer) learn
 * that a little later. So the process keeps answering for a drain period, reports not ready,
 * and answers every request with `Connection: close`, which makes clients open their next
 * connection elsewhere; only then does it close. No request meets a closed socket.
 */
import type { FastifyInstance } from 'fastify';

/** Whether this process is draining; shared by the app's hook and its /readyz. */
export class DrainState {
  private activeSince: number | undefined;
  get active(): boolean {
    return this.activeSince !== undefined;
  }
  begin(now = Date.now()): void {
    this.activeSince ??= now;
  }
}

/** Adds `Connection: close` to every answer once `state` is active. */
export function registerDrain(app: FastifyInstance, state: DrainState): void {
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (state.active) void reply.header('connection', 'close');
    done(null, payload);
  });
}
