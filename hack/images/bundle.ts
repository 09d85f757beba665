/**
 * Bundles each image's program with esbuild: one ESM file per entry point holding the program
 * and every pure-JS dependency it imports, nothing else. What is not imported from an entry
 * (tests, test stand-ins, benchmarks, dev tools) cannot end up in an image. onnxruntime-node is
 * native, so it stays external and is copied beside the bundle, pruned to linux/x64.
 *
 * Used by the local image build (hack/images/build.ts) and by the Containerfiles
 * (`node --import tsx hack/images/bundle.ts --component serving --out /out`).
 */
import { build } from 'esbuild';
import { cp, mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** One image's program. */
export interface Component {
  readonly name: 'operator' | 'serving' | 'feature-jobs';
  /** Output file (without .js) → source entry point, relative to the repo. */
  readonly entries: Readonly<Record<string, string>>;
  /** The entry the image runs. */
  readonly main: string;
  /** Native packages copied next to the bundle instead of bundled. */
  readonly native: readonly string[];
}

export const COMPONENTS: Readonly<Record<Component['name'], Component>> = {
  operator: { name: 'operator', entries: { operator: 'operator/src/main.ts' }, main: 'operator', native: [] },
  serving: {
    name: 'serving',
    // thread.ts starts the inference worker from './inference-worker.js' beside the bundle.
    entries: {
      serving: 'serving/src/server.ts',
      'inference-worker': 'serving/src/model/inference-worker.ts',
      // The serving pods' init container: fetches and verifies the model (desired.ts).
      'fetch-model': 'serving/src/model/fetch-model.ts',
      // The admission proxy container: runs nginx in front of serving (ADR 0019).
      proxy: 'serving/src/proxy/main.ts',
    },
    main: 'serving',
    native: ['onnxruntime-node'],
  },
  'feature-jobs': {
    name: 'feature-jobs',
    entries: { 'feature-jobs': 'feature-jobs/src/cli.ts' },
    main: 'feature-jobs',
    native: ['onnxruntime-node'],
  },
};

// Bundled CommonJS dependencies call require() for Node built-ins; an ESM bundle has none.
const REQUIRE_SHIM =
  "import { createRequire as __cremaCreateRequire } from 'node:module'; const require = __cremaCreateRequire(import.meta.url);";

/** The files of onnxruntime-node the runtime loads: its JS and the linux/x64 binaries. */
async function copyOnnxRuntime(out: string): Promise<void> {
  const src = join(REPO, 'node_modules');
  const dst = join(out, 'node_modules');
  for (const rel of [
    'onnxruntime-node/package.json',
    'onnxruntime-node/dist',
    'onnxruntime-node/bin/napi-v6/linux/x64',
    'onnxruntime-common',
  ]) {
    await cp(join(src, rel), join(dst, rel), { recursive: true });
  }
}

/**
 * Writes the bundle of `component` (and its native packages) into `out`, which is emptied first.
 * Returns the source files it contains (relative to the repository).
 */
export async function bundleComponent(component: Component, out: string): Promise<{ inputs: string[] }> {
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string };
  const result = await build({
    absWorkingDir: REPO,
    metafile: true,
    entryPoints: Object.fromEntries(Object.entries(component.entries).map(([k, v]) => [k, join(REPO, v)])),
    outdir: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: component.native.flatMap((n) => [n, `${n}/*`]),
    banner: { js: REQUIRE_SHIM },
    define: { 'process.env.CREMA_IMAGE_VERSION': JSON.stringify(pkg.version) },
    legalComments: 'none',
    logLevel: 'warning',
    sourcemap: false,
  });
  if (component.native.includes('onnxruntime-node')) await copyOnnxRuntime(out);
  // Node must treat the .js bundles as ES modules.
  await import('node:fs/promises').then((fs) =>
    fs.writeFile(join(out, 'package.json'), JSON.stringify({ type: 'module', private: true }) + '\n'),
  );
  return { inputs: Object.keys(result.metafile.inputs) };
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { values } = parseArgs({ options: { component: { type: 'string' }, out: { type: 'string' } } });
  const c = COMPONENTS[values.component as Component['name']];
  if (!c || !values.out) {
    console.error(`usage: bundle.ts --component ${Object.keys(COMPONENTS).join('|')} --out DIR`);
    process.exit(2);
  }
  await bundleComponent(c, values.out);
}
