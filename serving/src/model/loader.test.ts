import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArtifactServer, type ArtifactServer } from '../../../hack/testenv/host-services.js';
import { writeModel } from '../../test/fixtures.js';
import { loadModel, metadataUriOf, ModelLoadError } from './loader.js';
import { ModelStore } from './store.js';

let dir: string;
let http: ArtifactServer;
let base: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-loader-'));
  await writeModel({ dir, file: 'good', seed: 1 });
  await writeModel({ dir, file: 'corrupt', seed: 2, corrupt: true });
  await writeModel({ dir, file: 'pickup', task: 'pickup-time', features: ['queue'] });
  // A loopback model registry: serves the files of dir, 404 otherwise.
  http = await startArtifactServer(dir, '127.0.0.1');
  base = `http://127.0.0.1:${http.port}`;
});

afterAll(async () => {
  await http.close();
  await rm(dir, { recursive: true, force: true });
});

describe('model loading', () => {
  it('derives the metadata file next to the model', () => {
    expect(metadataUriOf('http://h/m/ranker.onnx')).toBe('http://h/m/ranker.meta.json');
    expect(metadataUriOf('file:///m/ranker')).toBe('file:///m/ranker.meta.json');
  });

  it('loads over http and over file, verified and warmed, with the sha256 as revision', async () => {
    const overHttp = await loadModel(`${base}/good.onnx`, { task: 'drink-ranking' });
    const meta = JSON.parse(await readFile(join(dir, 'good.meta.json'), 'utf8'));
    expect(overHttp.revision).toBe(meta.sha256);
    const scores = await overHttp.run(new Float32Array(3 * overHttp.columns), 3);
    expect(scores).toHaveLength(3);
    const overFile = await loadModel(`file://${join(dir, 'good.onnx')}`, { task: 'drink-ranking' });
    expect(overFile.revision).toBe(meta.sha256);
  });

  const failures: [string, () => string, object, RegExp][] = [
    [
      'a sha256 mismatch',
      () => `${base}/corrupt.onnx`,
      { task: 'drink-ranking' },
      /sha256 .* does not match/,
    ],
    [
      'a model other than the pinned digest',
      () => `${base}/good.onnx`,
      { task: 'drink-ranking', expectedSha256: 'f'.repeat(64) },
      /is not the pinned digest f{64}/,
    ],
    ['a missing file (HTTP 404)', () => `${base}/absent.onnx`, { task: 'drink-ranking' }, /HTTP 404/],
    [
      'a missing file (file://)',
      () => `file://${join(dir, 'absent.onnx')}`,
      { task: 'drink-ranking' },
      /ENOENT/,
    ],
    [
      'a model for another task',
      () => `${base}/pickup.onnx`,
      { task: 'drink-ranking' },
      /task is pickup-time/,
    ],
    ['an unsupported scheme', () => 's3://bucket/m.onnx', { task: 'drink-ranking' }, /not supported/],
    [
      'a plain path',
      () => '/models/churn.onnx',
      { task: 'churn' },
      /^model uri \/models\/churn.onnx is not a URL; a local file is written file:\/\/\/models\/churn.onnx$/,
    ],
    ['a bare word', () => '0', { task: 'churn' }, /^model uri 0 is not a URL/],
    ['an http URI without a host', () => 'http://', { task: 'churn' }, /^model uri http:\/\/ is not a URL/],
  ];
  for (const [name, uri, opts, re] of failures) {
    it(`refuses ${name}`, async () => {
      await expect(loadModel(uri(), opts as { task: 'drink-ranking' })).rejects.toThrow(re);
    });
  }

  it('a malformed URI is refused with ModelLoadError and leaves no rejection unhandled', async () => {
    // The metadata URI used to be derived (and throw) after the model's fetch had started, so
    // that fetch's rejection went unhandled and ended the serving process.
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      for (const uri of ['0', 'x.onnx', '/models/churn.onnx', 'http://']) {
        const err = await loadModel(uri, { task: 'churn' }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(ModelLoadError);
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('a retired model closes only after its last in-flight request', async () => {
    const store = new ModelStore();
    const first = await store.load('drink-ranking', `${base}/good.onnx`);
    const held = store.acquire('drink-ranking')!;
    await store.load('drink-ranking', `file://${join(dir, 'good.onnx')}`);
    // Still usable by the request that acquired it before the swap.
    await expect(held.run(new Float32Array(first.columns), 1)).resolves.toHaveLength(1);
    held.release();
    await new Promise((r) => setTimeout(r, 10));
    await expect(first.run(new Float32Array(first.columns), 1)).rejects.toThrow(/closed/);
    store.close();
  });
});
