/**
 * crema-jobs: the feature-jobs command line (`npm run jobs -- <command> --help`).
 * Wiring only: parse flags, build clients, call the command, print a one-line JSON summary.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { runFeatures } from './batch/run.js';
import { parseShard } from './batch/shard.js';
import { InputFileError } from './common/files.js';
import { connectJobRedis, jobDurability, parseJobTarget } from './common/redis.js';
import { RedisTargetError, type RedisClient, type RedisTarget } from '../../contracts/redis.js';
import { Dataset, generateDataset } from './generate/dataset.js';
import { runEvaluation } from './evaluate/evaluate.js';
import { runStreamJob } from './stream/consumer.js';
import { runTraining } from './train/train.js';

type Options = NonNullable<ParseArgsConfig['options']>;

interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly options: Options;
  run(values: Record<string, string | boolean | undefined>): Promise<unknown>;
}

class UsageError extends Error {}

const str = (v: Record<string, unknown>, k: string): string | undefined => v[k] as string | undefined;
function need(v: Record<string, unknown>, k: string): string {
  const s = str(v, k);
  if (!s) throw new UsageError(`--${k} is required`);
  return s;
}
function int(v: Record<string, unknown>, k: string, dflt: number): number {
  const s = str(v, k);
  if (s === undefined) return dflt;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${k} "${s}": expected a non-negative integer`);
  return n;
}
const log = (line: string) => console.error(line);
const REDIS_DEFAULT = process.env['CREMA_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

function targetOf(address: string): RedisTarget {
  try {
    return parseJobTarget(address);
  } catch (err) {
    if (err instanceof RedisTargetError) throw new UsageError(err.message);
    throw err;
  }
}

/**
 * Runs `f` with a connected client for `target` (one instance or a cluster). A batch job gives
 * up after a few reconnects instead of retrying forever, so it fails visibly; `patient` (the
 * stream job) keeps reconnecting and decides itself how long an outage may last.
 */
async function withRedis<T>(
  target: RedisTarget,
  f: (r: RedisClient) => Promise<T>,
  patient = false,
): Promise<T> {
  let redis: RedisClient;
  try {
    redis = await connectJobRedis(target, { patient });
  } catch (err) {
    throw new UsageError(`cannot connect to Redis at ${target.display}: ${(err as Error).message}`);
  }
  try {
    return await f(redis);
  } finally {
    redis.disconnect();
  }
}

const COMMANDS: Record<string, Command> = {
  generate: {
    summary: 'write a deterministic synthetic order history (columnar files + manifest)',
    usage: `crema-jobs generate --out DIR [--seed 1] [--users 50000] [--stores 840] [--start 2026-10-01]
                   [--days 30] [--orders-per-day N] [--force]
  --users          users to simulate (up to 5000000); orders/day default to 0.4 x users
  --force          replace DIR if it exists (written to a temp dir, renamed at the end)`,
    options: {
      out: { type: 'string' },
      seed: { type: 'string' },
      users: { type: 'string' },
      stores: { type: 'string' },
      start: { type: 'string' },
      days: { type: 'string' },
      'orders-per-day': { type: 'string' },
      force: { type: 'boolean' },
    },
    async run(v) {
      const users = int(v, 'users', 50_000);
      if (users < 1 || users > 5_000_000) throw new UsageError('--users: between 1 and 5000000');
      const perDay = str(v, 'orders-per-day');
      const t0 = Date.now();
      const m = generateDataset(
        {
          seed: int(v, 'seed', 1),
          users,
          stores: int(v, 'stores', 840),
          start: str(v, 'start') ?? '2026-10-01',
          days: int(v, 'days', 30),
          ...(perDay ? { ordersPerDay: int(v, 'orders-per-day', 0) } : {}),
        },
        need(v, 'out'),
        (date, n) => log(`generate: ${date} ${n} orders`),
        v['force'] === true,
      );
      return {
        out: need(v, 'out'),
        hash: m.hash,
        counts: { ...m.counts, ordersByDay: undefined },
        ms: Date.now() - t0,
      };
    },
  },
  features: {
    summary: 'batch job: history -> user/item/store features in Redis under a new version, then switch',
    usage: `crema-jobs features --data DIR [--redis URL] [--as-of YYYY-MM-DD] [--window-days 30]
                   [--shard i/N | --shards N] [--ttl SECONDS] [--batch-size 2000]
  --as-of          features describe history before 00:00 UTC of this date (default: after the last day)
  --shard i/N      this run writes users with hash(userId) % N == i; the last shard to finish switches
  --shards N       shard count; the index comes from $JOB_COMPLETION_INDEX (Kubernetes Indexed Job)
  --redis          default $CREMA_REDIS_URL or redis://127.0.0.1:6379; several URLs separated by
                   commas are a Redis Cluster's seeds (or set CREMA_REDIS_CLUSTER=1 for one seed)
A killed run resumes from its checkpoint; re-running the same inputs rewrites the same version.`,
    options: {
      data: { type: 'string' },
      redis: { type: 'string' },
      'as-of': { type: 'string' },
      'window-days': { type: 'string' },
      shard: { type: 'string' },
      shards: { type: 'string' },
      ttl: { type: 'string' },
      'batch-size': { type: 'string' },
    },
    async run(v) {
      let shard = { index: 0, count: 1 };
      if (str(v, 'shard')) shard = parseShard(need(v, 'shard'));
      else if (str(v, 'shards')) {
        const idx = process.env['JOB_COMPLETION_INDEX'];
        if (idx === undefined)
          throw new UsageError('--shards needs $JOB_COMPLETION_INDEX (or use --shard i/N)');
        shard = parseShard(`${idx}/${need(v, 'shards')}`);
      }
      const asOf = str(v, 'as-of');
      const ttl = str(v, 'ttl');
      // Inputs first: a bad dataset is reported before any connection is made.
      const dataset = Dataset.open(need(v, 'data'));
      return withRedis(targetOf(str(v, 'redis') ?? REDIS_DEFAULT), (redis) =>
        runFeatures({
          dataset,
          windowDays: int(v, 'window-days', 30),
          shard,
          redis,
          tty: process.stdout.isTTY === true,
          log,
          ...(asOf ? { asOf } : {}),
          ...(ttl ? { ttlSeconds: int(v, 'ttl', 0) } : {}),
          batchSize: Math.max(1, int(v, 'batch-size', 2000)),
        }),
      );
    },
  },
  stream: {
    summary: 'stream job: events stream -> online user features and store queue counters (exactly once)',
    usage: `crema-jobs stream [--redis URL] [--consumer NAME] [--group crema-stream-job]
                   [--claim-idle-ms 30000] [--count 200] [--until-idle]
                   [--wait-replicas N] [--wait-timeout-ms 100] [--max-outage-ms 60000]
  --redis          as for features: one URL, or a Redis Cluster's seeds separated by commas
  --consumer       a stable name per replica (default: hostname-pid)
  --claim-idle-ms  pending entries of another consumer idle this long are claimed (XAUTOCLAIM)
  --until-idle     exit when the group has nothing new and nothing pending (replays, tests)
  --wait-replicas  replicas that must confirm an entry's effects before it is acknowledged
                   (default $CREMA_REDIS_WAIT_REPLICAS, else 1 on a cluster, 0 on one instance)
  --max-outage-ms  how long Redis may keep failing (a failover) before the job exits
Stops cleanly on SIGTERM/SIGINT.`,
    options: {
      redis: { type: 'string' },
      consumer: { type: 'string' },
      group: { type: 'string' },
      'claim-idle-ms': { type: 'string' },
      count: { type: 'string' },
      'until-idle': { type: 'boolean' },
      'wait-replicas': { type: 'string' },
      'wait-timeout-ms': { type: 'string' },
      'max-outage-ms': { type: 'string' },
    },
    async run(v) {
      const ac = new AbortController();
      const stop = () => ac.abort();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      const group = str(v, 'group');
      const target = targetOf(str(v, 'redis') ?? REDIS_DEFAULT);
      const durability = jobDurability(target, {
        replicas: str(v, 'wait-replicas') === undefined ? undefined : int(v, 'wait-replicas', 0),
        timeoutMs: str(v, 'wait-timeout-ms') === undefined ? undefined : int(v, 'wait-timeout-ms', 0),
      });
      return withRedis(
        target,
        (redis) =>
          runStreamJob({
            redis,
            durability,
            maxOutageMs: int(v, 'max-outage-ms', 60_000),
            consumer: str(v, 'consumer') ?? `${hostname()}-${process.pid}`,
            ...(group ? { group } : {}),
            claimIdleMs: int(v, 'claim-idle-ms', 30_000),
            count: int(v, 'count', 200),
            untilIdle: v['until-idle'] === true,
            signal: ac.signal,
            log,
          }),
        true,
      );
    },
  },
  train: {
    summary:
      'train ranking, add-on attach, pickup-time and churn models -> ONNX + metadata + RecommenderModel YAML',
    usage: `crema-jobs train --data DIR --out DIR [--manifests manifests/models] [--uri-base URL]
                   [--eval-days 7] [--window-days 30] [--seed 1] [--lists 40000] [--rows 100000] [--epochs 4]
  --out            where <model>.onnx and <model>.meta.json are written
  --manifests      where RecommenderModel YAML is written ("" to skip)
  --uri-base       model URI prefix in the YAML (default: file://<absolute --out>)
  --eval-days      length of the training label window and of the held-out window after it
  --lists          ranking lists sampled for training; --rows: rows for the other models`,
    options: {
      data: { type: 'string' },
      out: { type: 'string' },
      manifests: { type: 'string' },
      'uri-base': { type: 'string' },
      'eval-days': { type: 'string' },
      'window-days': { type: 'string' },
      seed: { type: 'string' },
      lists: { type: 'string' },
      rows: { type: 'string' },
      epochs: { type: 'string' },
    },
    async run(v) {
      const dataset = Dataset.open(need(v, 'data'));
      const manifests = str(v, 'manifests') ?? 'manifests/models';
      const uriBase = str(v, 'uri-base');
      const t0 = Date.now();
      const r = await runTraining({
        dataset,
        outDir: need(v, 'out'),
        ...(manifests ? { manifestsDir: manifests } : {}),
        ...(uriBase ? { uriBase } : {}),
        evalDays: int(v, 'eval-days', 7),
        windowDays: int(v, 'window-days', 30),
        seed: int(v, 'seed', 1),
        rankingLists: int(v, 'lists', 40_000),
        rows: int(v, 'rows', 100_000),
        epochs: int(v, 'epochs', 4),
        log,
      });
      return {
        models: r.models.map((m) => ({ name: m.name, sha256: m.meta.sha256, ...m.paths })),
        metrics: r.metrics,
        timingsMs: r.timingsMs,
        ms: Date.now() - t0,
      };
    },
  },
  evaluate: {
    summary:
      'run the ONNX models on the held-out window vs popularity baselines; write report.md + report.json',
    usage: `crema-jobs evaluate --models DIR [--data DIR] [--out DIR]
  --models         directory written by \`crema-jobs train --out\`
  --data           dataset (default: the one recorded in the models' metadata)
  --out            where report.md and report.json go (default: --models)`,
    options: {
      models: { type: 'string' },
      data: { type: 'string' },
      out: { type: 'string' },
    },
    async run(v) {
      const data = str(v, 'data');
      const r = await runEvaluation({
        modelsDir: need(v, 'models'),
        outDir: str(v, 'out') ?? need(v, 'models'),
        ...(data ? { dataDir: data } : {}),
        log,
      });
      return { report: join(str(v, 'out') ?? need(v, 'models'), 'report.md'), goals: r.goals };
    },
  },
};

function help(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `crema-jobs: Crema feature jobs, training and model artifacts

Usage: crema-jobs <command> [flags]    (npm run jobs -- <command> --help)

Commands:
${lines.join('\n')}
`;
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help());
    return name ? 0 : 64;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`crema-jobs: unknown command "${name}"\n\n${help()}`);
    return 64;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.summary}\n\n${cmd.usage}\n`);
    return 0;
  }
  try {
    const { values } = parseArgs({
      args: [...rest],
      options: cmd.options,
      strict: true,
      allowPositionals: false,
    });
    const result = await cmd.run(values as Record<string, string | boolean | undefined>);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof InputFileError) {
      process.stderr.write(`crema-jobs ${name}: ${err.message}\n`);
      return 2;
    }
    if (
      err instanceof UsageError ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ||
      err instanceof RangeError
    ) {
      process.stderr.write(
        `crema-jobs ${name}: ${(err as Error).message}\n  see: crema-jobs ${name} --help\n`,
      );
      return 64;
    }
    throw err;
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err: unknown) => {
      process.stderr.write(`crema-jobs: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
