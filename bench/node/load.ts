/**
 * The node capacity bench's load generator, run as its own process (so the in-process operator
 * and the bench's bookkeeping never delay its requests): a closed loop of `connections`
 * keep-alive clients (autocannon) sending `POST /v1/recommendations` with the given bodies in
 * turn, a warm-up and then a measured run. Prints one JSON line: requests, rate, p50/p99 (ms),
 * non-2xx answers, errors and the answers that were fallbacks.
 *
 *   tsx bench/node/load.ts '{"url":"http://10.96.0.12","connections":8,"seconds":8,"warmSeconds":2,"bodiesFile":"/tmp/b.json"}'
 */
import { readFile } from 'node:fs/promises';
import autocannon from 'autocannon';

interface Args {
  readonly url: string;
  readonly connections: number;
  readonly seconds: number;
  readonly warmSeconds: number;
  readonly bodiesFile: string;
}

const args = JSON.parse(process.argv[2] ?? '') as Args;
const bodies = JSON.parse(await readFile(args.bodiesFile, 'utf8')) as string[];
let i = 0;
let fallbacks = 0;
let answers = 0;
const run = (duration: number, count: boolean) =>
  autocannon({
    url: args.url,
    connections: args.connections,
    duration,
    requests: [
      {
        method: 'POST',
        path: '/v1/recommendations',
        headers: { 'content-type': 'application/json' },
        setupRequest: (req) => ({ ...req, body: bodies[i++ % bodies.length] }),
        onResponse: (status, body) => {
          if (!count || status !== 200) return;
          answers++;
          if (body.includes('"fallback":true')) fallbacks++;
        },
      },
    ],
  });
if (args.warmSeconds > 0) await run(args.warmSeconds, false);
const r = await run(args.seconds, true);
console.log(
  JSON.stringify({
    requests: r.requests.total,
    rps: Math.round(r.requests.average),
    p50ms: r.latency.p50,
    p99ms: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors + r.timeouts,
    fallbackShare: answers ? Math.round((fallbacks / answers) * 1000) / 1000 : 0,
  }),
);
