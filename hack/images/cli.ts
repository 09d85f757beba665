/**
 * `npm run images`: builds (or reuses) Crema's images on this machine and prints what was built:
 * the OCI archive to import (`ctr -n k8s.io images import <archive>`) and each image's size.
 * `-- --out FILE` also copies the archive there.
 */
import { copyFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { ensureImages } from './build.js';

const { values } = parseArgs({ options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
if (values.help) {
  console.log(`usage: npm run images [-- --out FILE]

Builds crema/operator, crema/serving and crema/feature-jobs (Debian-package base, Node runtime,
esbuild bundle) into one OCI image-layout archive, without a Docker daemon or a registry.
Containerfiles for docker/podman/buildah: operator/Containerfile, serving/Containerfile,
feature-jobs/Containerfile.`);
  process.exit(0);
}
const set = await ensureImages({ sizes: true });
console.log(`${set.built ? 'built' : 'up to date'} in ${set.seconds.toFixed(1)} s: ${set.archive}`);
const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
for (const i of set.images) {
  console.log(
    `  ${i.ref.padEnd(26)} ${mb(i.bytes).padStart(9)} unpacked, ${mb(i.gzipBytes ?? 0).padStart(8)} gzipped  ${i.manifestDigest}`,
  );
  const [base, node, ...rest] = i.layers;
  const app = rest.at(-1)!;
  const proxy = rest.length > 1 ? `, nginx ${mb(rest[0]!.size)}` : '';
  console.log(
    `    layers: Debian base ${mb(base!.size)}, Node ${mb(node!.size)}${proxy}, app ${mb(app.size)}`,
  );
}
if (values.out) {
  await copyFile(set.archive, values.out);
  console.log(`copied to ${values.out}`);
}
