/**
 * When a client's keep-alive connection should end, and how: with `Connection: close` on an
 * answer, so the client opens its next connection (wherever the Service sends it now) and no
 * request ever meets a closed socket.
 *
 * - Draining (a terminating pod): the kubelet takes the pod out of its Services on SIGTERM, but
 *   kube-proxy and every client (a router's pool, a gateway) learn it a little later. So the
 *   process keeps answering for a drain period, reports not ready, and closes every connection
 *   after its next answer; then it stops.
 * - Connection age: a Service that changes its endpoints (a new pod from the HPA, the model's
 *   Service moved to the router pods for a canary) changes nothing for connections already
 *   open; a client with a keep-alive pool would stay on the old pods for as long as it keeps
 *   them busy. Ending connections older than `maxConnectionAgeMs` bounds that (the way gRPC's
 *   MaxConnectionAge and Envoy's max_connection_duration do).
 */
import type { Socket } from 'node:net';
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

/**
 * Adds `Connection: close` to an answer once `state` is active, or when its connection is older
 * than `maxConnectionAgeMs` (0 = no limit). Returns the same decision for answers written
 * without fastify's hooks (the router's forwarding path).
 */
export function registerDrain(
  app: FastifyInstance,
  state: DrainState,
  maxConnectionAgeMs = 0,
): (socket: Socket) => boolean {
  const born = new WeakMap<Socket, number>();
  if (maxConnectionAgeMs > 0) {
    app.server.on('connection', (socket: Socket) => born.set(socket, Date.now()));
  }
  const closes = (socket: Socket): boolean => {
    if (state.active) return true;
    if (maxConnectionAgeMs <= 0) return false;
    const since = born.get(socket);
    return since !== undefined && Date.now() - since > maxConnectionAgeMs;
  };
  app.addHook('onSend', (req, reply, payload, done) => {
    if (closes(req.raw.socket)) void reply.header('connection', 'close');
    done(null, payload);
  });
  return closes;
}
