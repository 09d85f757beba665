/**
 * Writes OCI images without a daemon or a registry: each layer is a reproducible tar of a
 * directory (GNU tar: sorted names, owner root, mtime 0), blobs are addressed by sha256, and
 * several images share one OCI image-layout archive (`oci-layout`, `index.json`, `blobs/`), which
 * `ctr images import` reads. Layers stay uncompressed: the archive only travels to the local
 * runtime, and import skips a gunzip of ~200 MB.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { sha256File } from '../testenv/binaries.js';

const run = promisify(execFile);

export const MEDIA = {
  layer: 'application/vnd.oci.image.layer.v1.tar',
  config: 'application/vnd.oci.image.config.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
} as const;

/** A content-addressed blob in a layout's blobs/sha256 directory. */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Record<string, string>;
}

/** A layer: its descriptor and the sha256 of its uncompressed tar (the diff id, same here). */
export type Layer = Descriptor;

/** Size of a blob gzipped (what a registry would store), counted in chunks; for size reports. */
export function gzipSizeOf(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    createReadStream(path)
      .pipe(createGzip({ level: 6 }))
      .on('data', (d: Buffer) => (n += d.length))
      .on('error', reject)
      .on('end', () => resolve(n));
  });
}

/** Creates `<blobs>/sha256/<digest>` from the directory `root` as a reproducible tar layer. */
export async function writeLayer(blobs: string, root: string): Promise<Layer> {
  await mkdir(join(blobs, 'sha256'), { recursive: true });
  const tmp = join(blobs, `layer-${process.pid}-${Date.now()}.tar`);
  try {
    await run(
      'tar',
      [
        '--create',
        `--file=${tmp}`,
        `--directory=${root}`,
        '--sort=name',
        '--owner=0',
        '--group=0',
        '--numeric-owner',
        '--mtime=@0',
        '--format=posix',
        '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
        '.',
      ],
      { maxBuffer: 16 << 20 },
    );
    const digest = await sha256File(tmp);
    const { size } = await stat(tmp);
    await rename(tmp, join(blobs, 'sha256', digest));
    return { mediaType: MEDIA.layer, digest: `sha256:${digest}`, size };
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Writes a JSON blob and returns its descriptor. */
export async function writeJsonBlob(blobs: string, mediaType: string, value: unknown): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = createHash('sha256').update(bytes).digest('hex');
  await mkdir(join(blobs, 'sha256'), { recursive: true });
  await writeFile(join(blobs, 'sha256', digest), bytes);
  return { mediaType, digest: `sha256:${digest}`, size: bytes.length };
}

/** What an image runs, in OCI image config terms. */
export interface ImageRuntime {
  readonly entrypoint: readonly string[];
  readonly cmd?: readonly string[];
  readonly env: readonly string[];
  readonly workingDir: string;
  readonly user: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** Writes config and manifest for `layers` and returns the manifest descriptor, tagged `ref`. */
export async function writeImage(
  blobs: string,
  ref: string,
  layers: readonly Layer[],
  rt: ImageRuntime,
): Promise<Descriptor & { readonly configDigest: string }> {
  const config = await writeJsonBlob(blobs, MEDIA.config, {
    architecture: 'amd64',
    os: 'linux',
    created: '1970-01-01T00:00:00Z',
    config: {
      User: rt.user,
      Entrypoint: rt.entrypoint,
      ...(rt.cmd ? { Cmd: rt.cmd } : {}),
      Env: rt.env,
      WorkingDir: rt.workingDir,
      Labels: rt.labels,
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    history: layers.map(() => ({ created: '1970-01-01T00:00:00Z', created_by: 'hack/images/build.ts' })),
  });
  const manifest = await writeJsonBlob(blobs, MEDIA.manifest, {
    schemaVersion: 2,
    mediaType: MEDIA.manifest,
    config,
    layers: layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
  });
  const tag = ref.slice(ref.lastIndexOf(':') + 1);
  return {
    ...manifest,
    configDigest: config.digest,
    annotations: {
      // containerd names the imported image after this; other tools read the OCI ref name.
      'io.containerd.image.name': normalizeRef(ref),
      'org.opencontainers.image.ref.name': tag,
    },
  };
}

/** `crema/serving:0.1.0` → `docker.io/crema/serving:0.1.0`, the name kubelet asks the runtime for. */
export function normalizeRef(ref: string): string {
  const first = ref.split('/')[0]!;
  const hasRegistry =
    ref.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
  if (hasRegistry) return ref;
  return ref.includes('/') ? `docker.io/${ref}` : `docker.io/library/${ref}`;
}

/**
 * Writes `index.json` and `oci-layout` into `layoutDir` (whose blobs/ holds every blob) and packs
 * the layout into the archive `out`.
 */
export async function writeLayoutArchive(layoutDir: string, manifests: readonly Descriptor[], out: string) {
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(layoutDir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.index, manifests }),
  );
  const tmp = `${out}.tmp-${process.pid}`;
  await run('tar', ['--create', `--file=${tmp}`, `--directory=${layoutDir}`, '--sort=name', '.'], {
    maxBuffer: 16 << 20,
  });
  await rename(tmp, out);
}
