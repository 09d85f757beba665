/** `/healthz`, `/readyz` and `/metrics` on one small HTTP server. */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface HealthServerOptions {
  readonly port: number;
  readonly host?: string;
  readonly registry: Registry;
  /** Live: the process is not wedged. */
  readonly live: () => boolean;
  /** Ready: caches synced (a standby replica is ready too: it can take over at once). */
  readonly ready: () => { ok: boolean; reason: string };
}

/** Starts the server; resolves with it once listening (port 0 picks a free port). */
export function startHealthServer(opts: HealthServerOptions): Promise<Server> {
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/healthz')) {
      const ok = opts.live();
      res.writeHead(ok ? 200 : 500, { 'content-type': 'text/plain' }).end(ok ? 'ok' : 'unhealthy');
    } else if (url.startsWith('/readyz')) {
      const r = opts.ready();
      res.writeHead(r.ok ? 200 : 503, { 'content-type': 'text/plain' }).end(r.reason);
    } else if (url.startsWith('/metrics')) {
      opts.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => resolve(server));
  });
}
