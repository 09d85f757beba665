/**
 * `npm run build:plugin`: bundles `kubectl crema` into one ES module, dist/plugin/kubectl-crema.js,
 * which bin/kubectl-crema.js runs when present. One file with its dependencies starts in a
 * fraction of the time tsx needs to load the TypeScript source and @kubernetes/client-node.
 */
import { build } from 'esbuild';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
// Bundled CommonJS dependencies call require() for Node built-ins; an ESM bundle has none.
const REQUIRE_SHIM =
  "import { createRequire as __cremaCreateRequire } from 'node:module'; const require = __cremaCreateRequire(import.meta.url);";

/** Writes the plugin bundle into `out` (default dist/plugin) and returns its path. */
export async function bundlePlugin(out = join(REPO, 'dist', 'plugin')): Promise<string> {
  await mkdir(out, { recursive: true });
  const outfile = join(out, 'kubectl-crema.js');
  await build({
    absWorkingDir: REPO,
    entryPoints: [join(REPO, 'operator/src/cli/main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    banner: { js: REQUIRE_SHIM },
    legalComments: 'none',
    logLevel: 'warning',
  });
  await writeFile(join(out, 'package.json'), JSON.stringify({ type: 'module', private: true }) + '\n');
  return outfile;
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  console.log(await bundlePlugin());
}
