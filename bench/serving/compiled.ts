/**
 * What the serving benchmarks share: the compiled serving program (the image's esbuild bundle,
 * hack/images/bundle.ts) started with the shipped models (manifests/models/artifacts), and the
 * synthetic feature data it reads from a private redis-server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import { encodeUserFeatures, KEYS, type Catalog } from '../../contracts/features.js';
import type { ModelTask } from '../../contracts/model-metadata.js';
import { modelEnvNames } from '../../contracts/serving-env.js';
import { bundleComponent, COMPONENTS, REPO } from '../../hack/images/bundle.js';
import { buildCatalog, buildStores, rng, seedFeatures, syntheticUser } from '../../serving/test/fixtures.js';

/** The shipped models' folder (what the training job writes and the image's init container fetches). */
export const ARTIFACTS = join(REPO, 'manifests', 'models', 'artifacts');

/**
 * Seeds the feature version 'bench': the fixtures' menu (150 drinks + 40 add-ons, the shipped
 * models' catalog size), `stores` stores, and `users` users u0…u<users-1> as binary blobs.
 */
export async function seedBenchFeatures(redis: Redis, users: number, stores: number): Promise<Catalog> {
  const catalog = buildCatalog(150, 40);
  await seedFeatures(redis, { version: 'bench', catalog, stores: buildStores(stores) });
  const r = rng(1);
  for (let start = 0; start < users; start += 20_000) {
    const p = redis.pipeline();
    for (let i = start; i < Math.min(users, start + 20_000); i++) {
      p.set(KEYS.user('bench', `u${i}`), encodeUserFeatures(syntheticUser(r, 150)));
    }
    await p.exec();
  }
  return catalog;
}

/**
 * `n` request bodies for random users at random stores: a share `withoutFeatures` of them for
 * users with no stored features (ids past the seeded ones → cold start), the rest for seeded users.
 */
export function requestBodies(
  n: number,
  o: { readonly users: number; readonly stores: number; readonly withoutFeatures: number },
): string[] {
  const r = rng(99);
  const spread = o.users / (1 - o.withoutFeatures);
  return Array.from({ length: n }, () =>
    JSON.stringify({
      userId: `u${Math.floor(r() * spread)}`,
      storeId: `store-${Math.floor(r() * o.stores)}`,
      context: {
        time: new Date(Date.UTC(2026, 10, 24, Math.floor(r() * 24))).toISOString(),
        channel: 'app',
      },
      limit: 5,
    }),
  );
}

/** Writes the serving image's program into `out` (emptied first); returns its entry file. */
export async function bundleServing(out: string): Promise<string> {
  await bundleComponent(COMPONENTS.serving, out);
  return join(out, 'serving.js');
}

/** The environment that points serving at the shipped models of `tasks`, with their pinned digests. */
export async function shippedModelEnv(tasks: readonly ModelTask[]): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const task of tasks) {
    const meta = JSON.parse(await readFile(join(ARTIFACTS, `${task}.meta.json`), 'utf8')) as {
      sha256: string;
    };
    const names = modelEnvNames(task);
    env[names.uri] = pathToFileURL(join(ARTIFACTS, `${task}.onnx`)).href;
    env[names.sha256] = meta.sha256;
  }
  return env;
}

/** Options of startCompiledServing. */
export interface CompiledServingOptions {
  /** The bundle's entry file (bundleServing). */
  readonly entry: string;
  readonly env: Record<string, string>;
  /** Pin the server to these CPUs (taskset list, e.g. "0"). */
  readonly cpus?: string;
  /** Node flags before the entry (e.g. --cpu-prof). */
  readonly nodeArgs?: readonly string[];
}

/** Starts the compiled serving program (listening on env.PORT) with stdout/stderr inherited. */
export function startCompiledServing(o: CompiledServingOptions): ChildProcess {
  const node = [...(o.nodeArgs ?? []), o.entry];
  const [cmd, args] = o.cpus
    ? ['taskset', ['-c', o.cpus, process.execPath, ...node]]
    : [process.execPath, node];
  return spawn(cmd, args, {
    cwd: join(o.entry, '..'),
    env: { ...process.env, NODE_ENV: 'production', LOG_LEVEL: 'warn', ...o.env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}

/** Resolves once `url` answers 2xx; throws after `timeoutMs`. */
export async function waitHttp(url: string, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`${url} not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  // fields 14 and 15 (utime, stime) are at 11 and 12 after the ") " split; clock ticks are 100/s
  return (Number(stat[11]) + Number(stat[12])) / 100;
}
