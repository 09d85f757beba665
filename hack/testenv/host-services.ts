/**
 * Programs on the node's host that pods use as if they were in the cluster: the host's
 * redis-server and a static artifact store (the object storage a real cluster would have for
 * model files). Each gets a Service without a selector whose Endpoints are the node IP, so pods
 * reach it by its cluster DNS name, exactly as they would reach an in-cluster or external
 * service in production.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join, normalize, sep } from 'node:path';
import { KubeApiError, type KubeClient } from '../../operator/src/runtime/kube.js';
import { NODE_IP } from './node.js';

async function apply(client: KubeClient, path: string, body: object): Promise<void> {
  await client.request('PATCH', path, {
    body,
    contentType: 'application/apply-patch+yaml',
    query: { fieldManager: 'crema-testenv', force: true },
  });
}

/** Creates `namespace` if it does not exist. */
export async function ensureNamespace(client: KubeClient, namespace: string): Promise<void> {
  try {
    await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: namespace } } });
  } catch (err) {
    if (!(err instanceof KubeApiError && err.conflict)) throw err;
  }
}

/**
 * Service `namespace/name` on `port`, backed by `hostPort` on the node IP. Resolves once the
 * Service and its Endpoints exist (kube-proxy programs them within a second).
 */
export async function exposeHostPort(
  client: KubeClient,
  o: { namespace: string; name: string; port: number; hostPort: number },
): Promise<{ host: string; url: (scheme: string) => string }> {
  await ensureNamespace(client, o.namespace);
  const labels = { 'app.kubernetes.io/part-of': 'crema-testenv' };
  await apply(client, `/api/v1/namespaces/${o.namespace}/services/${o.name}`, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: o.name, namespace: o.namespace, labels },
    spec: { ports: [{ name: 'tcp', port: o.port, protocol: 'TCP', targetPort: o.hostPort }] },
  });
  await apply(client, `/api/v1/namespaces/${o.namespace}/endpoints/${o.name}`, {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: { name: o.name, namespace: o.namespace, labels },
    subsets: [{ addresses: [{ ip: NODE_IP }], ports: [{ name: 'tcp', port: o.hostPort, protocol: 'TCP' }] }],
  });
  const host = `${o.name}.${o.namespace}.svc`;
  return { host, url: (scheme) => `${scheme}://${host}:${o.port}` };
}

/** A read-only static file server (GET and HEAD) for a directory of model artifacts. */
export interface ArtifactServer {
  readonly port: number;
  /** Requests served, by path (to show the pods really fetched their models). */
  readonly served: Map<string, number>;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = { '.onnx': 'application/octet-stream', '.json': 'application/json' };

/** Serves the files of `root` on `host:port` (port 0 picks one). Paths outside `root` are 404. */
export async function startArtifactServer(root: string, host = NODE_IP, port = 0): Promise<ArtifactServer> {
  const served = new Map<string, number>();
  const base = normalize(root) + sep;
  const server: Server = createServer((req, res) => {
    void (async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      const file = normalize(join(base, path));
      const st = file.startsWith(base) ? await stat(file).catch(() => undefined) : undefined;
      if (!st?.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`no artifact at ${path}\n`);
        return;
      }
      served.set(path, (served.get(path) ?? 0) + 1);
      const ext = path.slice(path.lastIndexOf('.'));
      res.writeHead(200, {
        'content-type': TYPES[ext] ?? 'application/octet-stream',
        'content-length': st.size,
      });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file).pipe(res);
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    served,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
