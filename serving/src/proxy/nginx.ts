/**
 * The admission proxy's nginx configuration (ADR 0019): nginx in the serving pod passes at most
 * `maxConcurrency` requests at once to the serving container and answers the rest itself with
 * 503 and Retry-After, at a tenth of what a refusal costs inside Node (ADR 0007 amendment 4).
 */

/** What renderNginxConf needs. */
export interface ProxyConfig {
  /** Port nginx listens on (the pod's serving port, the Service's target). */
  readonly port: number;
  /** Port of the serving container on 127.0.0.1. */
  readonly upstreamPort: number;
  /** Requests passed to serving at once. */
  readonly maxConcurrency: number;
  /** Writable directory for nginx's pid and temp files. */
  readonly dir: string;
  /** File nginx appends one byte to per refused request (default `<dir>/refused.log`). */
  readonly refusalLog?: string;
}

/** The 503 body, as serving's own overload refusals are shaped ({code, message}). */
export const PROXY_REFUSAL_BODY =
  '{"code":"OVERLOADED","message":"server is overloaded (proxy), retry later"}';
/** A request larger than serving accepts (serving's bodyLimit, 1 MiB). */
export const PROXY_TOO_LARGE_BODY =
  '{"code":"PAYLOAD_TOO_LARGE","message":"request body is larger than 1 MiB"}';

/** Throws a RangeError naming the field when a value cannot go into the config. */
export function checkProxyConfig(c: ProxyConfig): void {
  const port = (n: number) => Number.isInteger(n) && n > 0 && n < 65536;
  if (!port(c.port)) throw new RangeError(`proxy: port must be an integer in 1..65535, got ${c.port}`);
  if (!port(c.upstreamPort))
    throw new RangeError(`proxy: upstream port must be an integer in 1..65535, got ${c.upstreamPort}`);
  if (c.upstreamPort === c.port) throw new RangeError(`proxy: upstream port must differ from port ${c.port}`);
  if (!(Number.isInteger(c.maxConcurrency) && c.maxConcurrency >= 1 && c.maxConcurrency <= 4096))
    throw new RangeError(`proxy: maxConcurrency must be an integer in 1..4096, got ${c.maxConcurrency}`);
  for (const [k, v] of [
    ['dir', c.dir],
    ['refusalLog', c.refusalLog ?? c.dir],
  ] as const)
    if (!v.startsWith('/') || /[\s;{}'"$]/.test(v))
      throw new RangeError(`proxy: ${k} must be an absolute path without spaces or quotes, got ${v}`);
}

/**
 * nginx.conf. One worker (a pod's proxy shares the pod's CPU with serving). Every request
 * nginx refuses because all `maxConcurrency` upstream slots are taken ("no live upstreams":
 * `$upstream_addr` is then the upstream's name) appends one byte (an empty log line) to
 * `refusalLog`, buffered and flushed every second, whose size the proxy process reads; a 502 from serving itself (down, restarting) is answered the same 503
 * but not counted as a refusal. Bodies are read in full before a slot is taken (request
 * buffering), so a slow client cannot hold one.
 */
export function renderNginxConf(c: ProxyConfig): string {
  checkProxyConfig(c);
  const d = c.dir;
  return `# Rendered by serving/src/proxy/nginx.ts (crema admission proxy).
worker_processes 1;
daemon off;
pid ${d}/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
  access_log off;
  server_tokens off;
  client_body_temp_path ${d}/body;
  proxy_temp_path ${d}/proxy;
  fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi;
  scgi_temp_path ${d}/scgi;
  client_max_body_size 1m;
  map $upstream_addr $crema_refused { crema_serving 1; default 0; }
  log_format crema_refused '';
  upstream crema_serving {
    server 127.0.0.1:${c.upstreamPort} max_conns=${c.maxConcurrency};
    keepalive ${c.maxConcurrency};
  }
  server {
    listen ${c.port} backlog=4096;
    keepalive_requests 100000;
    location / {
      proxy_pass http://crema_serving;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_next_upstream off;
      proxy_read_timeout 30s;
      error_page 502 = @crema_overloaded;
      error_page 413 = @crema_too_large;
    }
    location @crema_overloaded {
      access_log ${c.refusalLog ?? `${d}/refused.log`} crema_refused buffer=64k flush=1s if=$crema_refused;
      default_type application/json;
      add_header Retry-After 1 always;
      return 503 '${PROXY_REFUSAL_BODY}';
    }
    location @crema_too_large {
      default_type application/json;
      return 413 '${PROXY_TOO_LARGE_BODY}';
    }
  }
}
`;
}
