/**
 * Feature-jobs benchmark (not a test): one full-scale day (2M orders, 5M users) → features in
 * Redis, against redis-benchmark's pipelined SET on the same box in the same run; then training
 * on 30 days at 1/10 scale. Each phase runs as its own process under GNU time for wall time
 * and peak RSS. The last line of output is JSON, also written to bench/results/feature-jobs.json.
 *
 *   npm run bench:feature-jobs [-- --users 5000000 --train-users 500000 --keep]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startRedis } from '../../hack/testenv/environment.js';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '5000000' },
    'train-users': { type: 'string', default: '500000' },
    'train-days': { type: 'string', default: '30' },
    keep: { type: 'boolean', default: false },
  },
});
const users = Number(values.users);
const trainUsers = Number(values['train-users']);
const trainDays = Number(values['train-days']);
const work = mkdtempSync(join(tmpdir(), 'crema-bench-fj-'));
const log = (s: string) => console.error(`[bench] ${s}`);

/** Runs the CLI in a child under GNU time; returns its JSON summary, wall seconds and peak RSS. */
async function timed(
  args: string[],
): Promise<{ out: Record<string, unknown>; wallS: number; peakRssMiB: number }> {
  const timeFile = join(work, 'time.txt');
  return new Promise((resolve, reject) => {
    const child = spawn(
      '/usr/bin/time',
      [
        '-f',
        '%e %M',
        '-o',
        timeFile,
        process.execPath,
        '--import',
        'tsx',
        'feature-jobs/src/cli.ts',
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`crema-jobs ${args[0]} exited ${code}`));
      const [wall, rssKiB] = readFileSync(timeFile, 'utf8').trim().split(/\s+/).map(Number);
      const lines = stdout.trim().split('\n');
      resolve({
        out: JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>,
        wallS: wall!,
        peakRssMiB: Math.round(rssKiB! / 1024),
      });
    });
  });
}

/** redis-benchmark -P 16 -t set; `shape` adds random keys over 5M and 84-byte values (our write's shape). */
function redisBenchmarkSet(port: number, shape = false): number {
  const extra = shape ? ['-r', '5000000', '-d', '84'] : [];
  const out = execFileSync(
    'redis-benchmark',
    ['-h', '127.0.0.1', '-p', String(port), '-P', '16', '-t', 'set', '-n', '2000000', '-q', ...extra],
    {
      encoding: 'utf8',
    },
  );
  const m = /SET: ([\d.]+) requests per second/.exec(out.replace(/\r/g, '\n'));
  if (!m) throw new Error(`cannot parse redis-benchmark output: ${out}`);
  return Number(m[1]);
}

const { redis } = await startRedis(join(work));
try {
  log(`redis-server at ${redis.url}; ${cpus().length} cores`);
  const setRpsBefore = redisBenchmarkSet(redis.port);
  log(`redis-benchmark -P 16 -t set: ${setRpsBefore} SET/s`);
  execFileSync('redis-cli', ['-p', String(redis.port), 'FLUSHALL']);

  log(`generating one full-scale day (${users} users)`);
  const gen = await timed([
    'generate',
    '--out',
    join(work, 'day'),
    '--users',
    String(users),
    '--days',
    '1',
    '--seed',
    '1',
  ]);
  const orders = (gen.out['counts'] as { orders: number }).orders;

  log('features: history → Redis');
  const feat = await timed(['features', '--data', join(work, 'day'), '--redis', redis.url]);
  const usersWritten = feat.out['usersWritten'] as number;
  const writeMs = feat.out['writeMs'] as number;
  const keysPerSec = Math.round(usersWritten / (writeMs / 1000));
  const setRpsAfter = redisBenchmarkSet(redis.port);
  const setRps = (setRpsBefore + setRpsAfter) / 2;
  execFileSync('redis-cli', ['-p', String(redis.port), 'FLUSHALL']);
  // Same command, but inserting new keys with our value size: how much of the gap is the shape.
  const shapedRps = redisBenchmarkSet(redis.port, true);
  execFileSync('redis-cli', ['-p', String(redis.port), 'FLUSHALL']);

  log(`generating ${trainDays} days at ${trainUsers} users for training`);
  const trainGen = await timed([
    'generate',
    '--out',
    join(work, 'train'),
    '--users',
    String(trainUsers),
    '--days',
    String(trainDays),
    '--seed',
    '2',
  ]);
  log('training');
  const train = await timed([
    'train',
    '--data',
    join(work, 'train'),
    '--out',
    join(work, 'models'),
    '--manifests',
    '',
  ]);
  const evaluation = await timed(['evaluate', '--models', join(work, 'models')]);
  const metrics = train.out['metrics'] as Record<string, Record<string, number>>;

  const result = {
    bench: 'feature-jobs',
    at: new Date().toISOString(),
    cores: cpus().length,
    fullScaleDay: {
      users,
      orders,
      generateWallS: gen.wallS,
      featuresWallS: feat.wallS,
      featuresGoalS: 60,
      computeMs: feat.out['computeMs'],
      writeMs,
      usersWritten,
      writeKeysPerSec: keysPerSec,
      redisBenchmarkSetPerSec: Math.round(setRps),
      writeThroughputRatio: Math.round((keysPerSec / setRps) * 1000) / 1000,
      redisBenchmarkSetNewKeys84BPerSec: Math.round(shapedRps),
      writeThroughputRatioSameShape: Math.round((keysPerSec / shapedRps) * 1000) / 1000,
      peakRssMiB: feat.peakRssMiB,
    },
    training: {
      users: trainUsers,
      days: trainDays,
      orders: (trainGen.out['counts'] as { orders: number }).orders,
      trainWallS: train.wallS,
      peakRssMiB: train.peakRssMiB,
      timingsMs: train.out['timingsMs'],
      evaluateWallS: evaluation.wallS,
    },
    offline: {
      rankingRecallAt5: metrics['drink-ranking']!['recall_at_5'],
      popularityRecallAt5: metrics['drink-ranking']!['popularity_recall_at_5'],
      recallAt5Lift: metrics['drink-ranking']!['recall_at_5_lift'],
      ndcgAt10: metrics['drink-ranking']!['ndcg_at_10'],
      popularityNdcgAt10: metrics['drink-ranking']!['popularity_ndcg_at_10'],
      pickupMaeMinutes: metrics['pickup-time']!['mae_minutes'],
      pickupBaselineMaeMinutes: metrics['pickup-time']!['baseline_mean_mae_minutes'],
      churnAuc: metrics['churn']!['auc'],
      churnRecencyBaselineAuc: metrics['churn']!['baseline_recency_auc'],
      addonAttachAuc: metrics['addon-attach']!['auc'],
      addonAttachBaselineAuc: metrics['addon-attach']!['baseline_rate_x_popularity_auc'],
    },
  };
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/feature-jobs.json', JSON.stringify(result, null, 2) + '\n');
  console.log(JSON.stringify(result));
} finally {
  await redis.stop();
  if (!values.keep) rmSync(work, { recursive: true, force: true });
  else log(`kept ${work}`);
}
