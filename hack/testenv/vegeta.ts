/**
 * vegeta (github.com/tsenart/vegeta), the constant-rate HTTP load generator bench:overload
 * offers its spike with, compiled from the Go module proxy like the cluster's binaries
 * (docs/adr/0002): the wrapper module hack/testenv/go/vegeta pins it (VEGETA_VERSION in
 * versions.env) and its committed go.sum verifies every download. Cached per version under the
 * testenv cache root (`vegeta-<version>_<key>/vegeta`), trusted only when its manifest's sha256
 * matches, rebuilt otherwise (about 30 s on 2 cores).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  TestEnvError,
  cacheRoot,
  explainGoFailure,
  goVersion,
  run,
  sha256File,
  withLock,
  type Log,
} from './binaries.js';

const here = dirname(fileURLToPath(import.meta.url));
const moduleDir = join(here, 'go', 'vegeta');

interface Manifest {
  key: string;
  version: string;
  goVersion: string;
  sha256: string;
  builtAt: string;
  buildSeconds: number;
}

/** VEGETA_VERSION from versions.env. */
export async function readVegetaVersion(): Promise<string> {
  for (const raw of (await readFile(join(here, 'versions.env'), 'utf8')).split('\n')) {
    const m = /^VEGETA_VERSION=(.*)$/.exec(raw.trim());
    if (m) {
      if (!/^v\d+\.\d+\.\d+$/.test(m[1]!)) throw new TestEnvError(`versions.env: bad VEGETA_VERSION ${m[1]}`);
      return m[1]!;
    }
  }
  throw new TestEnvError('versions.env: VEGETA_VERSION is missing');
}

async function verify(dir: string, key: string): Promise<Manifest | string> {
  const m = await readFile(join(dir, 'manifest.json'), 'utf8').then(
    (t) => JSON.parse(t) as Manifest,
    () => undefined,
  );
  if (!m) return 'no cached build';
  if (m.key !== key) return `manifest key ${m.key} does not match ${key}`;
  if (!existsSync(join(dir, 'vegeta'))) return 'vegeta is missing';
  if ((await sha256File(join(dir, 'vegeta'))) !== m.sha256) return 'vegeta is corrupt (sha256 mismatch)';
  return m;
}

/** Returns the path of the verified vegeta binary, building it when needed. */
export async function ensureVegeta(opts: { log?: Log } = {}): Promise<string> {
  const log = opts.log ?? ((l: string) => console.error(`[testenv] ${l}`));
  const version = await readVegetaVersion();
  const goV = await goVersion();
  const h = createHash('sha256');
  h.update(`${version}\n${goV}\n`);
  for (const f of ['go.mod', 'go.sum']) h.update(await readFile(join(moduleDir, f)));
  const key = h.digest('hex').slice(0, 16);
  const root = cacheRoot();
  const dir = join(root, `vegeta-${version}_${key}`);
  const path = join(dir, 'vegeta');
  if (typeof (await verify(dir, key)) !== 'string') return path;
  await mkdir(root, { recursive: true });
  return withLock(`${dir}.lock`, log, async () => {
    const why = await verify(dir, key);
    if (typeof why !== 'string') return path;
    log(`building vegeta ${version} with ${goV} (${why})`);
    const started = Date.now();
    const staging = `${dir}.building-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    try {
      const out = join(staging, 'vegeta');
      const res = await run(
        'go',
        [
          'build',
          '-trimpath',
          '-ldflags',
          `-s -w -X main.Version=${version}`,
          '-o',
          out,
          'github.com/tsenart/vegeta/v12',
        ],
        {
          cwd: moduleDir,
          env: {
            ...process.env,
            CGO_ENABLED: '0',
            GOFLAGS: `${process.env['GOFLAGS'] ?? ''} -mod=readonly`.trim(),
          },
          log,
        },
      );
      if (res.code !== 0) throw new TestEnvError(`building vegeta failed. ${explainGoFailure(res.stderr)}`);
      const manifest: Manifest = {
        key,
        version,
        goVersion: goV,
        sha256: await sha256File(out),
        builtAt: new Date().toISOString(),
        buildSeconds: Math.round((Date.now() - started) / 1000),
      };
      await writeFile(join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2));
      await rm(dir, { recursive: true, force: true });
      await rename(staging, dir);
      for (const name of await readdir(root)) {
        if (
          name.startsWith('vegeta-') &&
          join(root, name) !== dir &&
          !name.endsWith('.lock') &&
          !name.includes('.building-')
        )
          await rm(join(root, name), { recursive: true, force: true });
      }
      log(`vegeta ${version} cached in ${dir} (${manifest.buildSeconds} s)`);
      return path;
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  });
}
