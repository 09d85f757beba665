/**
 * One Go program built from the Go module proxy through its wrapper module under
 * hack/testenv/go (docs/adr/0002) and cached under the testenv cache root as
 * `<name>-<version>_<key>/<name>`: the key hashes the version, the Go toolchain and the wrapper's
 * go.mod and go.sum; a cached build is trusted only when its manifest's key and the binary's
 * sha256 match, and rebuilt otherwise. helm and vegeta are built this way.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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

interface Manifest {
  key: string;
  version: string;
  goVersion: string;
  sha256: string;
  builtAt: string;
  buildSeconds: number;
}

export interface GoTool {
  /** Absolute path of the verified binary. */
  readonly path: string;
  /** True when this call compiled it. */
  readonly built: boolean;
  /** Seconds the build took (this call's, or the cached build's). */
  readonly buildSeconds: number;
}

export interface GoToolOptions {
  /** The binary's name (and the cache directory's prefix). */
  readonly name: string;
  readonly version: string;
  /** The wrapper module's directory. */
  readonly moduleDir: string;
  /** The main package to build. */
  readonly pkg: string;
  /** The linker flags, computed only when a build is needed (they may ask `go list`). */
  readonly ldflags: (env: NodeJS.ProcessEnv) => Promise<string>;
  readonly log: Log;
  readonly forceRebuild?: boolean;
}

async function verify(dir: string, name: string, key: string): Promise<Manifest | string> {
  const m = await readFile(join(dir, 'manifest.json'), 'utf8').then(
    (t) => JSON.parse(t) as Manifest,
    () => undefined,
  );
  if (!m) return 'no cached build';
  if (m.key !== key) return `manifest key ${m.key} does not match ${key}`;
  if (!existsSync(join(dir, name))) return `${name} is missing`;
  if ((await sha256File(join(dir, name))) !== m.sha256) return `${name} is corrupt (sha256 mismatch)`;
  return m;
}

/** Returns the verified binary, building it when needed. */
export async function ensureGoTool(o: GoToolOptions): Promise<GoTool> {
  const { name, version, moduleDir, log } = o;
  const goV = await goVersion();
  const h = createHash('sha256');
  h.update(`${version}\n${goV}\n`);
  for (const f of ['go.mod', 'go.sum']) h.update(await readFile(join(moduleDir, f)));
  const key = h.digest('hex').slice(0, 16);
  const root = cacheRoot();
  const dir = join(root, `${name}-${version}_${key}`);
  const path = join(dir, name);
  const cached = o.forceRebuild ? 'rebuild requested' : await verify(dir, name, key);
  if (typeof cached !== 'string') return { path, built: false, buildSeconds: cached.buildSeconds };
  await mkdir(root, { recursive: true });
  return withLock(`${dir}.lock`, log, async () => {
    const again = o.forceRebuild ? 'rebuild requested' : await verify(dir, name, key);
    if (typeof again !== 'string') return { path, built: false, buildSeconds: again.buildSeconds };
    log(`building ${name} ${version} with ${goV} (${cached})`);
    const started = Date.now();
    const env = {
      ...process.env,
      CGO_ENABLED: '0',
      GOFLAGS: `${process.env['GOFLAGS'] ?? ''} -mod=readonly`.trim(),
    };
    const ldflags = await o.ldflags(env);
    const staging = `${dir}.building-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    try {
      const out = join(staging, name);
      const res = await run('go', ['build', '-trimpath', '-ldflags', ldflags, '-o', out, o.pkg], {
        cwd: moduleDir,
        env,
        log,
      });
      if (res.code !== 0) throw new TestEnvError(`building ${name} failed. ${explainGoFailure(res.stderr)}`);
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
      for (const entry of await readdir(root)) {
        if (
          entry.startsWith(`${name}-`) &&
          join(root, entry) !== dir &&
          !entry.endsWith('.lock') &&
          !entry.includes('.building-')
        )
          await rm(join(root, entry), { recursive: true, force: true });
      }
      log(`${name} ${version} cached in ${dir} (${manifest.buildSeconds} s)`);
      return { path, built: true, buildSeconds: manifest.buildSeconds };
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  });
}
