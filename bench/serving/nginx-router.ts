/**
 * The measured alternative to the Node router (ADR 0018): nginx with njs doing the same sticky
 * assignment. Not product code: bench/serving/router.ts renders it from the same RouterConfig
 * the Node router reads and compares the two.
 *
 * Per request: `js_content` reads the body, takes the user id from `/v1/users/{id}` or the JSON
 * body's userId, computes sha256(salt \0 userId)'s first 4 bytes big-endian mod 10,000 and the
 * variant owning that bucket (bounds precomputed here exactly as `assignVariant` does), sets
 * `$crema_variant` and redirects to the variant's named location, which proxies over keep-alive
 * connections with the router's request headers (only the forwarded ones; the experiment's from
 * the config; `x-crema-experiment-variant` only when the assigned variant serves) and adds
 * `x-crema-variant` and `x-crema-router-config` to the answer. A variant whose upstream refuses
 * or times out is served by stable (error_page), like the Node router.
 *
 * Left out (what an operator-rendered nginx would still need): the crema_router_* metrics (nginx
 * has no Prometheus endpoint; an exporter or njs counters), hot reload on a ConfigMap change (a
 * sidecar that re-renders and sends `nginx -s reload`), drain and connection-age limits.
 */
import { BUCKETS } from '../../contracts/variant-hash.js';
import { EXPERIMENT_HEADERS } from '../../contracts/experiments.js';
import type { RouterConfig } from '../../contracts/router-config.js';

/** What renderNginxRouter needs besides the config. */
export interface NginxRouterOptions {
  readonly config: RouterConfig;
  /** x-crema-router-config of this config (the Node router's 12 hex). */
  readonly configId: string;
  readonly port: number;
  /** Directory for pid, logs, temp files and the njs script. */
  readonly dir: string;
  /** nginx worker processes. Default 1 (the Node router is one process). */
  readonly workers?: number;
}

/** Upper bucket bound of each positive-weight variant, in order, as assignVariant computes them. */
export function bucketBounds(config: RouterConfig): { name: string; upper: number }[] {
  const out: { name: string; upper: number }[] = [];
  let upper = 0;
  for (const v of config.variants) {
    if (v.weight <= 0) continue;
    upper += (v.weight / 100) * BUCKETS;
    out.push({ name: v.name, upper: Math.round(upper) });
  }
  // the last positive-weight variant absorbs rounding
  if (out.length > 0) out[out.length - 1]!.upper = BUCKETS;
  return out;
}

const location = (name: string) => `crema_v_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;

/** The njs module: assignment and redirect. */
export function renderNjs(config: RouterConfig): string {
  const bounds = bucketBounds(config);
  const withUpstream = Object.fromEntries(config.variants.map((v) => [v.name, v.upstream !== undefined]));
  return `// Rendered by bench/serving/nginx-router.ts; the same assignment as contracts/variant-hash.ts.
var crypto = require('crypto');
var SALT = ${JSON.stringify(config.salt)};
var STABLE = ${JSON.stringify(config.stable)};
var BOUNDS = ${JSON.stringify(bounds)};
var HAS_UPSTREAM = ${JSON.stringify(withUpstream)};
var LOCATION = ${JSON.stringify(Object.fromEntries(config.variants.map((v) => [v.name, '@' + location(v.name)])))};

function userIdOf(r) {
  var m = /^\\/v1\\/users\\/([^\\/?]+)/.exec(r.variables.request_uri);
  if (m) {
    try { return decodeURIComponent(m[1]); } catch (e) { return undefined; }
  }
  var text = r.requestText;
  if (!text) return undefined;
  try {
    var p = JSON.parse(text);
    return p !== null && typeof p.userId === 'string' ? p.userId : undefined;
  } catch (e) {
    return undefined;
  }
}

function assign(userId) {
  var b = crypto.createHash('sha256').update(SALT).update('\\0').update(userId).digest().readUInt32BE(0) % ${BUCKETS};
  for (var i = 0; i < BOUNDS.length; i++) if (b < BOUNDS[i].upper) return BOUNDS[i].name;
  return BOUNDS[BOUNDS.length - 1].name;
}

function route(r) {
  var uid = userIdOf(r);
  var variant = uid === undefined ? STABLE : assign(uid);
  var served = HAS_UPSTREAM[variant] ? variant : STABLE;
  r.variables.crema_variant = served;
  // the assigned variant serves: serving may count the exposure
  r.variables.crema_exposed = served === variant ? variant : '';
  r.internalRedirect(LOCATION[served]);
}

export default { route: route };
`;
}

/** nginx.conf for the config (load the njs module, one upstream block and named location per variant). */
export function renderNginxConf(o: NginxRouterOptions): string {
  const { config, dir } = o;
  const e = config.experiment;
  const experiment = e
    ? [
        `proxy_set_header ${EXPERIMENT_HEADERS.experiment} ${JSON.stringify(e.id)};`,
        `proxy_set_header ${EXPERIMENT_HEADERS.run} ${JSON.stringify(e.run)};`,
        `proxy_set_header ${EXPERIMENT_HEADERS.ttlSeconds} ${JSON.stringify(String(e.ttlSeconds))};`,
      ]
    : [];
  const common = (variantHeader: string, exposed: string) =>
    [
      'proxy_http_version 1.1;',
      // only the headers the Node router forwards
      'proxy_pass_request_headers off;',
      'proxy_set_header Host $host;',
      'proxy_set_header Connection "";',
      'proxy_set_header Content-Type $http_content_type;',
      'proxy_set_header Accept $http_accept;',
      'proxy_set_header Authorization $http_authorization;',
      'proxy_set_header X-Client-Id $http_x_client_id;',
      'proxy_set_header X-Request-Id $http_x_request_id;',
      `proxy_set_header x-crema-variant ${variantHeader};`,
      ...experiment,
      // an empty value sends no header
      ...(e ? [`proxy_set_header ${EXPERIMENT_HEADERS.variant} ${exposed};`] : []),
      'proxy_connect_timeout 2s;',
      'proxy_read_timeout 2s;',
      'proxy_send_timeout 2s;',
      `add_header x-crema-variant ${variantHeader} always;`,
      `add_header x-crema-router-config ${o.configId} always;`,
    ]
      .map((l) => `      ${l}`)
      .join('\n');
  const upstreams = config.variants
    .filter((v) => v.upstream)
    .map((v) => {
      const u = new URL(v.upstream!);
      return `  upstream ${location(v.name)} {\n    server ${u.hostname}:${u.port || 80};\n    keepalive 128;\n    keepalive_requests 1000000;\n  }`;
    })
    .join('\n');
  const locations = config.variants
    .filter((v) => v.upstream)
    .map((v) => {
      const fallback =
        v.name === config.stable ? '' : `\n      error_page 502 504 = @${location(v.name)}_fallback;`;
      const fb =
        v.name === config.stable
          ? ''
          : `\n    location @${location(v.name)}_fallback {\n      proxy_pass http://${location(config.stable)};\n${common(config.stable, '""')}\n    }`;
      return `    location @${location(v.name)} {\n      proxy_pass http://${location(v.name)};${fallback}\n${common('$crema_variant', '$crema_exposed')}\n    }${fb}`;
    })
    .join('\n');
  return `# Rendered by bench/serving/nginx-router.ts (a measured alternative, not product).
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
daemon off;
master_process on;
worker_processes ${o.workers ?? 1};
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events {
  worker_connections 4096;
}
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  # the body stays in memory for njs (r.requestText) and for the proxied request
  client_max_body_size 1m;
  client_body_buffer_size 1m;
  client_body_in_single_buffer on;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  js_path ${dir};
  js_import crema from crema-router.js;
  js_var $crema_variant;
  js_var $crema_exposed;
${upstreams}
  server {
    listen 127.0.0.1:${o.port} backlog=4096;
    location = /healthz {
      default_type application/json;
      return 200 '{"status":"ok"}';
    }
    location /v1/ {
      js_content crema.route;
    }
${locations}
  }
}
`;
}
