/**
 * A proxy between one operator process and the API server that kills the operator (SIGKILL)
 * right after a chosen write has been carried out by the API server and before the operator
 * sees the answer: the moment between two writes, chosen by write, not by timing. The operator
 * talks plain HTTP to the proxy (a kubeconfig without credentials); the proxy forwards to the
 * API server with the test's credentials and the operator's user agent, so the audit log names
 * the operator.
 */
import * as k8s from '@kubernetes/client-node';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One write as the proxy saw it. */
export interface SeenWrite {
  readonly method: string;
  /** Path and query, as sent. */
  readonly path: string;
  /** The parsed JSON body, when there was one. */
  readonly body?: unknown;
  readonly status?: number;
}

/**
 * Where to kill: from the first write `anchor` accepts on (itself included), right after the
 * `occurrence`-th write that `target` accepts.
 */
export interface KillAt {
  readonly anchor: (w: SeenWrite) => boolean;
  readonly target: (w: SeenWrite) => boolean;
  readonly occurrence: number;
  readonly kill: () => void;
}

export interface KillProxy {
  /** A kubeconfig pointing at the proxy. */
  readonly kubeconfigPath: string;
  /** Arms the kill; `killedAfter` says which write it followed once it fired. */
  arm(at: KillAt): void;
  readonly killedAfter: () => SeenWrite | undefined;
  close(): Promise<void>;
}

async function body(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function startKillProxy(kubeconfigPath: string): Promise<KillProxy> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const upstream = new URL(kc.getCurrentCluster()!.server);
  const tls: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  await kc.applyToHTTPSOptions(tls);
  const agent = new Agent({ keepAlive: true, ca: tls.ca, cert: tls.cert, key: tls.key });
  let armed: KillAt | undefined;
  let anchored = false;
  let hits = 0;
  let killedAfter: SeenWrite | undefined;
  let dead = false;

  const server = createServer((req, res) => {
    void (async () => {
      const raw = await body(req);
      const method = req.method ?? 'GET';
      const isWrite = method !== 'GET' && method !== 'HEAD';
      let parsed: unknown;
      if (isWrite && raw.length) {
        try {
          parsed = JSON.parse(raw.toString('utf8'));
        } catch {
          parsed = undefined;
        }
      }
      if (dead) {
        // Requests already on their way when the process died go nowhere.
        res.destroy();
        return;
      }
      const up = httpsRequest({
        agent,
        host: upstream.hostname,
        port: upstream.port,
        method,
        path: req.url,
        headers: { ...req.headers, host: upstream.host },
      });
      req.on('close', () => {
        if (!res.writableEnded) up.destroy();
      });
      up.on('error', () => res.destroy());
      up.on('response', (ur) => {
        let killNow = false;
        if (isWrite) {
          const w: SeenWrite = {
            method,
            path: req.url ?? '',
            ...(parsed !== undefined ? { body: parsed } : {}),
            ...(ur.statusCode ? { status: ur.statusCode } : {}),
          };
          if (armed) {
            if (!anchored && armed.anchor(w)) anchored = true;
            if (anchored && armed.target(w) && ++hits === armed.occurrence) {
              killNow = true;
              killedAfter = w;
            }
          }
        }
        if (killNow) {
          // The API server has carried the write out; the operator never hears back.
          const at = armed!;
          armed = undefined;
          dead = true;
          ur.resume();
          ur.on('end', () => {
            at.kill();
            res.destroy();
          });
          return;
        }
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      up.end(raw);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const path = join(tmpdir(), `crema-kill-proxy-${port}.kubeconfig`);
  await writeFile(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      // client-node refuses http:// unless this is set (there is no TLS to skip).
      'clusters: [{name: proxy, cluster: {server: "http://127.0.0.1:' +
        port +
        '", insecure-skip-tls-verify: true}}]',
      'users: [{name: proxy, user: {}}]',
      'contexts: [{name: proxy, context: {cluster: proxy, user: proxy}}]',
      'current-context: proxy',
      '',
    ].join('\n'),
  );
  return {
    kubeconfigPath: path,
    arm(at) {
      armed = at;
      anchored = false;
      hits = 0;
      killedAfter = undefined;
      dead = false;
    },
    killedAfter: () => killedAfter,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      agent.destroy();
    },
  };
}
