/**
 * Builds Crema's three images on this machine without a Docker daemon or a registry:
 *
 *   layer 1  a Debian rootfs of exactly the runtime libraries Node and onnxruntime link against
 *            (libc6, libgcc-s1, libstdc++6 from Debian's packages, unpacked with dpkg-deb),
 *            plus /etc/passwd and /etc/group with the unprivileged user 65532 ("nonroot");
 *   layer 2  the Node.js runtime (this machine's `node`, the version the tests run on);
 *   (serving) nginx and its libraries from Debian's packages, for the admission proxy;
 *   layer 3  the component's esbuild bundle under /app (hack/images/bundle.ts): no test code,
 *            no dev dependencies, onnxruntime-node pruned to linux/x64 where it is needed.
 *
 * Layers 1–2 are shared by all three images and cached by their inputs; the archive (an OCI
 * image layout holding all three) is rebuilt only when a layer changes. The Containerfiles next
 * to each component build the same layout with docker/podman/buildah from public bases.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  chmod,
  copyFile,
  link,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { COMPONENTS, REPO, bundleComponent, type Component } from './bundle.js';
import {
  gzipSizeOf,
  writeImage,
  writeLayer,
  writeLayoutArchive,
  type Descriptor,
  type Layer,
} from './oci.js';

const run = promisify(execFile);
type Log = (line: string) => void;

/** Debian packages of the base layer: what `ldd` lists for node and libonnxruntime.so. */
export const BASE_PACKAGES = ['libc6', 'libgcc-s1', 'libstdc++6'] as const;
/**
 * Debian packages of the serving image's proxy layer: nginx, for the admission proxy
 * (`--mode proxy`, ADR 0019), and the libraries `ldd /usr/sbin/nginx` lists beyond the base.
 */
export const PROXY_PACKAGES = ['nginx', 'libcrypt1', 'libpcre2-8-0', 'libssl3', 'zlib1g'] as const;
/** The unprivileged user every image runs as (the distroless convention). */
export const IMAGE_USER = 65532;

/** Raised when the build cannot run here; the message says what to do. */
export class ImageBuildError extends Error {
  override readonly name = 'ImageBuildError';
}

/** One built image. */
export interface BuiltImage {
  readonly component: Component['name'];
  /** Reference as written in manifests, e.g. crema/serving:0.1.0. */
  readonly ref: string;
  readonly manifestDigest: string;
  readonly configDigest: string;
  /** Sum of layer tar sizes (what the runtime unpacks). */
  readonly bytes: number;
  /** Sum of gzip-compressed layer sizes (what a registry would store), with `sizes: true`. */
  readonly gzipBytes?: number;
  readonly layers: readonly Layer[];
}

export interface ImageSet {
  /** OCI image-layout archive holding every image; `ctr images import` takes it. */
  readonly archive: string;
  readonly images: readonly BuiltImage[];
  /** True when this call wrote a new archive. */
  readonly built: boolean;
  readonly seconds: number;
}

/** $CREMA_IMAGES_CACHE, else $XDG_CACHE_HOME/crema/images, else ~/.cache/crema/images. */
export function imagesCacheRoot(): string {
  if (process.env['CREMA_IMAGES_CACHE']) return process.env['CREMA_IMAGES_CACHE'];
  const xdg = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(xdg, 'crema', 'images');
}

/** The image reference of `component` at the package version. */
export async function imageRef(component: Component['name']): Promise<string> {
  const pkg = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { version: string };
  return `crema/${component}:${pkg.version}`;
}

/** Downloads packages' .deb files (apt-get download needs no root, only package lists). */
async function downloadDebs(dir: string, log: Log, packages: readonly string[]): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const attempt = () => run('apt-get', ['download', ...packages], { cwd: dir, maxBuffer: 16 << 20 });
  try {
    await attempt();
  } catch (err) {
    const msg = (err as { stderr?: string }).stderr ?? String(err);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new ImageBuildError(
        'apt-get not found: the local image build unpacks Debian packages (Debian/Ubuntu only)',
      );
    if (!/Unable to locate|has no installation candidate|Failed to fetch/i.test(msg)) throw err;
    if (process.getuid?.() !== 0)
      throw new ImageBuildError(`apt-get download failed (${msg.trim()}); run: sudo apt-get update`);
    log('apt package lists are missing; running apt-get update');
    await run('apt-get', ['update', '-qq'], { maxBuffer: 16 << 20 });
    await attempt();
  }
  const files = (await readdir(dir)).filter((f) => f.endsWith('.deb'));
  // Keep one version per package: the newest download wins, older ones are removed.
  const newest = new Map<string, string>();
  for (const f of files.sort()) newest.set(f.split('_')[0]!, f);
  for (const f of files) if (!newest.get(f.split('_')[0]!)?.includes(f)) await rm(join(dir, f));
  return packages.map((p) => {
    const f = newest.get(p);
    if (!f) throw new ImageBuildError(`apt-get download gave no .deb for ${p}`);
    return join(dir, f);
  });
}

const PASSWD = `root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:${IMAGE_USER}:${IMAGE_USER}:nonroot:/home/nonroot:/sbin/nologin\n`;
const GROUP = `root:x:0:\nnonroot:x:${IMAGE_USER}:\n`;

/** Reuses a cached layer (descriptor file + blob) or builds it with `make(root)`. */
async function cachedLayer(
  cache: string,
  key: string,
  make: (root: string) => Promise<void>,
): Promise<{ layer: Layer; built: boolean }> {
  const meta = join(cache, 'layers', `${key}.json`);
  if (existsSync(meta)) {
    const layer = JSON.parse(await readFile(meta, 'utf8')) as Layer;
    if (existsSync(join(cache, 'blobs', 'sha256', layer.digest.slice(7)))) return { layer, built: false };
  }
  const root = await mkdtemp(join(tmpdir(), 'crema-image-root-'));
  try {
    await make(root);
    const layer = await writeLayer(join(cache, 'blobs'), root);
    await mkdir(join(cache, 'layers'), { recursive: true });
    await writeFile(meta, JSON.stringify(layer));
    return { layer, built: true };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function baseLayer(cache: string, log: Log) {
  const debs = await downloadDebs(join(cache, 'debs'), log, BASE_PACKAGES);
  const key = `base-${debs.map((d) => d.slice(d.lastIndexOf('/') + 1).replace(/\.deb$/, '')).join('+')}`;
  return cachedLayer(cache, key, async (root) => {
    for (const deb of debs) await run('dpkg-deb', ['-x', deb, root]);
    // Docs and man pages are not needed at run time.
    await rm(join(root, 'usr', 'share', 'doc'), { recursive: true, force: true });
    await rm(join(root, 'usr', 'share', 'lintian'), { recursive: true, force: true });
    await mkdir(join(root, 'etc'), { recursive: true });
    await writeFile(join(root, 'etc', 'passwd'), PASSWD);
    await writeFile(join(root, 'etc', 'group'), GROUP);
    await writeFile(join(root, 'etc', 'nsswitch.conf'), 'hosts: files dns\n');
    for (const d of ['tmp', 'home/nonroot', 'app']) await mkdir(join(root, d), { recursive: true });
    await chmod(join(root, 'tmp'), 0o1777);
  });
}

/** nginx and its libraries, nothing else of the packages (no docs, no config, no units). */
async function proxyLayer(cache: string, log: Log) {
  const debs = await downloadDebs(join(cache, 'debs'), log, PROXY_PACKAGES);
  const key = `proxy-${debs.map((d) => d.slice(d.lastIndexOf('/') + 1).replace(/\.deb$/, '')).join('+')}`;
  return cachedLayer(cache, key, async (root) => {
    for (const deb of debs) await run('dpkg-deb', ['-x', deb, root]);
    for (const d of ['usr/share', 'etc', 'lib/systemd', 'usr/lib/systemd', 'var'])
      await rm(join(root, d), { recursive: true, force: true });
    if (!existsSync(join(root, 'usr', 'sbin', 'nginx')))
      throw new ImageBuildError('the nginx package holds no usr/sbin/nginx');
  });
}

async function nodeLayer(cache: string) {
  const st = await stat(process.execPath);
  const key = `node-${process.version}-${st.size}-${Math.floor(st.mtimeMs)}`;
  return cachedLayer(cache, key, async (root) => {
    await mkdir(join(root, 'usr', 'local', 'bin'), { recursive: true });
    await copyFile(process.execPath, join(root, 'usr', 'local', 'bin', 'node'));
    await chmod(join(root, 'usr', 'local', 'bin', 'node'), 0o755);
  });
}

async function appLayer(cache: string, component: Component): Promise<Layer> {
  const root = await mkdtemp(join(tmpdir(), 'crema-image-app-'));
  try {
    await bundleComponent(component, join(root, 'app'));
    return await writeLayer(join(cache, 'blobs'), root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** What the layers take gzipped (each layer compressed once per build of this process). */
async function gzippedSize(blobs: string, layers: readonly Layer[]): Promise<number> {
  let total = 0;
  for (const l of layers) {
    let n = gzipCache.get(l.digest);
    if (n === undefined) {
      n = await gzipSizeOf(join(blobs, 'sha256', l.digest.slice(7)));
      gzipCache.set(l.digest, n);
    }
    total += n;
  }
  return total;
}
const gzipCache = new Map<string, number>();

/** Removes blobs no layer descriptor or current archive needs, and older archives. */
async function prune(cache: string, keepArchive: string, keep: ReadonlySet<string>): Promise<void> {
  for (const f of await readdir(cache)) {
    if (f.endsWith('.oci.tar') && join(cache, f) !== keepArchive) await rm(join(cache, f), { force: true });
  }
  const blobDir = join(cache, 'blobs', 'sha256');
  for (const f of await readdir(blobDir).catch(() => [] as string[])) {
    if (!keep.has(`sha256:${f}`)) await rm(join(blobDir, f), { force: true });
  }
}

/**
 * Builds (or reuses) the operator, serving and feature-jobs images and returns the archive to
 * import. Bundling runs every time (a few seconds); everything else only when its inputs change.
 */
export async function ensureImages(opts: { log?: Log; sizes?: boolean } = {}): Promise<ImageSet> {
  const log = opts.log ?? ((l: string) => console.error(`[images] ${l}`));
  const t0 = Date.now();
  const cache = imagesCacheRoot();
  await mkdir(join(cache, 'blobs', 'sha256'), { recursive: true });
  const base = await baseLayer(cache, log);
  const node = await nodeLayer(cache);
  const proxy = await proxyLayer(cache, log);
  if (proxy.built) log(`built the nginx layer (${(proxy.layer.size / 1e6).toFixed(1)} MB)`);
  if (base.built) log(`built the Debian base layer (${(base.layer.size / 1e6).toFixed(1)} MB)`);
  if (node.built) log(`built the Node ${process.version} layer (${(node.layer.size / 1e6).toFixed(1)} MB)`);
  const blobs = join(cache, 'blobs');
  const images: BuiltImage[] = [];
  const manifests: Descriptor[] = [];
  const keep = new Set<string>([base.layer.digest, node.layer.digest, proxy.layer.digest]);
  for (const component of Object.values(COMPONENTS)) {
    const app = await appLayer(cache, component);
    const ref = await imageRef(component.name);
    const layers = [base.layer, node.layer, ...(component.name === 'serving' ? [proxy.layer] : []), app];
    const manifest = await writeImage(blobs, ref, layers, {
      entrypoint: ['/usr/local/bin/node', `/app/${component.main}.js`],
      env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'NODE_ENV=production', 'HOME=/home/nonroot'],
      workingDir: '/app',
      user: `${IMAGE_USER}:${IMAGE_USER}`,
      labels: {
        'org.opencontainers.image.title': `crema-${component.name}`,
        'org.opencontainers.image.version': ref.slice(ref.lastIndexOf(':') + 1),
        'dev.crema.node-version': process.version,
      },
    });
    manifests.push(manifest);
    for (const d of [app.digest, manifest.digest, manifest.configDigest]) keep.add(d);
    images.push({
      component: component.name,
      ref,
      manifestDigest: manifest.digest,
      configDigest: manifest.configDigest,
      bytes: layers.reduce((s, l) => s + l.size, 0),
      ...(opts.sizes ? { gzipBytes: await gzippedSize(blobs, layers) } : {}),
      layers,
    });
  }
  const id = manifests.map((m) => m.digest.slice(7, 19)).join('-');
  const archive = join(cache, `crema-images-${id}.oci.tar`);
  let built = false;
  if (!existsSync(archive)) {
    const layout = await mkdtemp(join(tmpdir(), 'crema-image-layout-'));
    try {
      await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
      for (const d of keep)
        await link(join(blobs, 'sha256', d.slice(7)), join(layout, 'blobs', 'sha256', d.slice(7)));
      await writeLayoutArchive(layout, manifests, archive);
      built = true;
    } finally {
      await rm(layout, { recursive: true, force: true });
    }
  }
  await prune(cache, archive, keep);
  return { archive, images, built, seconds: (Date.now() - t0) / 1000 };
}
