/**
 * vegeta (github.com/tsenart/vegeta), the constant-rate HTTP load generator bench:overload
 * offers its spike with, compiled from the Go module proxy like the cluster's binaries
 * (docs/adr/0002): the wrapper module hack/testenv/go/vegeta pins it (VEGETA_VERSION in
 * versions.env) and its committed go.sum verifies every download. Cached per version under the
 * testenv cache root (`vegeta-<version>_<key>/vegeta`), trusted only when its manifest's sha256
 * matches, rebuilt otherwise (about 30 s on 2 cores).
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestEnvError, type Log } from './binaries.js';
import { ensureGoTool } from './go-tool.js';

const here = dirname(fileURLToPath(import.meta.url));
const moduleDir = join(here, 'go', 'vegeta');

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

/** Returns the path of the verified vegeta binary, building it when needed. */
export async function ensureVegeta(opts: { log?: Log } = {}): Promise<string> {
  const version = await readVegetaVersion();
  const tool = await ensureGoTool({
    name: 'vegeta',
    version,
    moduleDir,
    pkg: 'github.com/tsenart/vegeta/v12',
    log: opts.log ?? ((l: string) => console.error(`[testenv] ${l}`)),
    ldflags: async () => `-s -w -X main.Version=${version}`,
  });
  return tool.path;
}
