/**
 * Model revisions and users for the end-to-end tests, built from the real trained ranking model
 * in manifests/models/artifacts (drink-ranking.onnx + .meta.json), written into the directory
 * the test cluster's artifact store serves to pods.
 *
 * - Revision 1 of every test model is the trained file and metadata byte for byte (its sha256 is
 *   the one in manifests/models/drink-ranking.yaml).
 * - A later revision is the same trained graph with a protobuf `doc_string` appended to the
 *   ModelProto (field 6): different bytes, so a different sha256, and a valid model serving
 *   loads and verifies like any other. Its metadata can carry a different training baseline.
 * - Users get feature vectors drawn from the trained model's own baseline histograms, so the
 *   PSI that serving reports for live traffic against that baseline stays low. Serving compares
 *   each request with training's requests of its context (store timezone, local hour, weekend;
 *   ADR 0010), so users are drawn from the context the traffic will be in: the test stores are
 *   in New York and requests carry the current time.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import { computeDriftContext } from '../../../contracts/drift-binning.js';
import { SEGMENTS, USER_FEATURES } from '../../../contracts/features.js';
import type { ModelMetadata } from '../../../contracts/model-metadata.js';
import { LocalTimeResolver } from '../../../serving/src/ranking/context.js';
import { buildCatalog, rng, seedFeatures } from '../../../serving/test/fixtures.js';

const ARTIFACTS = fileURLToPath(new URL('../../../manifests/models/artifacts/', import.meta.url));

/** A model file serving can load, and what the RecommenderModel spec names. */
export interface Revision {
  readonly uri: string;
  readonly sha256: string;
}

export async function trainedRanker(): Promise<{ bytes: Buffer; meta: ModelMetadata }> {
  const bytes = await readFile(join(ARTIFACTS, 'drink-ranking.onnx'));
  const meta = JSON.parse(
    await readFile(join(ARTIFACTS, 'drink-ranking.meta.json'), 'utf8'),
  ) as ModelMetadata;
  return { bytes, meta };
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** The ModelProto with `doc_string` (field 6, length-delimited) appended. */
export function withDocString(onnx: Buffer, doc: string): Buffer {
  const text = Buffer.from(doc, 'utf8');
  return Buffer.concat([onnx, Buffer.from([(6 << 3) | 2]), varint(text.length), text]);
}

/**
 * Writes `<dir>/<file>.onnx` + `.meta.json`: the trained ranker (or, with `doc`, a new revision
 * of it); `mutate` may change the metadata (e.g. the baseline). The URI is `<baseUri>/<file>.onnx`
 * (where pods fetch it), or the file's own `file://` URI without a base.
 */
export async function writeRevision(
  dir: string,
  o: { file: string; doc?: string; mutate?: (meta: ModelMetadata) => ModelMetadata; baseUri?: string },
): Promise<Revision> {
  const trained = await trainedRanker();
  const bytes = o.doc ? withDocString(trained.bytes, o.doc) : trained.bytes;
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const same: ModelMetadata = { ...trained.meta, sha256 };
  const meta = o.mutate ? o.mutate(same) : same;
  const onnx = join(dir, `${o.file}.onnx`);
  await writeFile(onnx, bytes);
  await writeFile(join(dir, `${o.file}.meta.json`), JSON.stringify(meta, null, 2));
  return { uri: o.baseUri ? `${o.baseUri}/${o.file}.onnx` : pathToFileURL(onnx).toString(), sha256 };
}

/** A value drawn from a baseline histogram: a bin by its probability, uniform inside the bin. */
function draw(r: () => number, edges: readonly number[], probs: readonly number[]): number {
  let u = r();
  let i = 0;
  for (; i < probs.length - 1; i++) {
    if (u < probs[i]!) break;
    u -= probs[i]!;
  }
  const lo = edges[i]!;
  const hi = edges[i + 1]!;
  return lo + (hi - lo) * r() * 0.999;
}

/** The baseline of `feature` in New York now (its context's), or over all contexts. */
function probsNow(meta: ModelMetadata, feature: string, now: Date): readonly number[] | undefined {
  const b = meta.baseline.features[feature];
  const c = meta.baseline.contexts;
  if (!b || !c?.counts[feature]) return b?.probs;
  const local = new LocalTimeResolver().resolve(now.getTime(), 'America/New_York');
  const want = computeDriftContext('America/New_York', local.hour, local.weekday);
  const i = c.contexts.findIndex(
    (x) => x.hour === want.hour && x.weekend === want.weekend && x.timezone === want.timezone,
  );
  const row = i >= 0 ? c.counts[feature]![i]! : undefined;
  const n = row?.reduce((a, x) => a + x, 0) ?? 0;
  return row && n >= 100 ? row.map((x) => x / n) : b.probs;
}

/**
 * Seeds feature version `version` (synthetic catalog and stores from serving's fixtures) with
 * `count` users whose feature vectors follow the trained model's baseline; returns their ids.
 */
export async function seedUsers(redis: Redis, version: string, count: number): Promise<string[]> {
  const { meta } = await trainedRanker();
  const catalog = buildCatalog();
  const drinks = catalog.items.filter((i) => i.kind === 'drink').length;
  const r = rng(20261124);
  const now = new Date();
  const users: { id: string; features: Float32Array }[] = [];
  for (let n = 0; n < count; n++) {
    const v = new Float32Array(USER_FEATURES.length);
    USER_FEATURES.forEach((f, i) => {
      const b = meta.baseline.features[f];
      const probs = probsNow(meta, f, now);
      if (b && probs && b.edges.length === b.probs.length + 1) v[i] = draw(r, b.edges, probs);
      else if (f === 'segment') v[i] = 1 + Math.floor(r() * (SEGMENTS.length - 1));
      else v[i] = Math.floor(r() * drinks); // recent_1..5: item indexes
    });
    users.push({ id: `user-${n}-${Math.floor(r() * 1e9).toString(36)}`, features: v });
  }
  await seedFeatures(redis, { version, catalog, users });
  return users.map((u) => u.id);
}
