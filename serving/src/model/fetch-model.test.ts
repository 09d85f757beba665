import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArtifactServer, type ArtifactServer } from '../../../hack/testenv/host-services.js';
import { writeModel } from '../../test/fixtures.js';
import { fetchModel, fetchSettingsFrom } from './fetch-model.js';
import { ModelLoadError, sha256Hex } from './loader.js';

let src: string;
let out: string;
let http: ArtifactServer;
let base: string;
let sha: string;

beforeAll(async () => {
  src = await mkdtemp(join(tmpdir(), 'crema-fetch-src-'));
  out = await mkdtemp(join(tmpdir(), 'crema-fetch-out-'));
  sha = (await writeModel({ dir: src, file: 'ranker', seed: 3 })).meta.sha256;
  // The artifact store: serves the files of src, 404 otherwise.
  http = await startArtifactServer(src, '127.0.0.1');
  base = `http://127.0.0.1:${http.port}`;
});

afterAll(async () => {
  await http.close();
  await rm(src, { recursive: true, force: true });
  await rm(out, { recursive: true, force: true });
});

describe('fetch-model (the serving pod init container)', () => {
  it('writes the verified model and metadata where serving loads them', async () => {
    const dir = join(out, 'ok');
    await fetchModel({ uri: `${base}/ranker.onnx`, sha256: sha, task: 'drink-ranking', dir });
    expect(sha256Hex(await readFile(join(dir, 'drink-ranking.onnx')))).toBe(sha);
    expect(JSON.parse(await readFile(join(dir, 'drink-ranking.meta.json'), 'utf8')).sha256).toBe(sha);
  });

  it.each([
    [
      'a digest other than the pinned one',
      (b: string) => `${b}/ranker.onnx`,
      'f'.repeat(64),
      /ranker\.onnx: sha256 [0-9a-f]{64} is not the pinned digest f{64}/,
    ],
    ['a URI that answers 404', (b: string) => `${b}/missing.onnx`, 'f'.repeat(64), /missing\.onnx: HTTP 404/],
    [
      'an unreachable host',
      () => 'http://127.0.0.1:1/ranker.onnx',
      'f'.repeat(64),
      /127\.0\.0\.1:1\/ranker\.onnx: /,
    ],
  ])('refuses %s with an error naming the URI, writing nothing', async (_what, uri, digest, message) => {
    const dir = join(out, `bad-${Math.random()}`);
    const err = await fetchModel({ uri: uri(base), sha256: digest, task: 'drink-ranking', dir }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toMatch(message);
    await expect(readFile(join(dir, 'drink-ranking.onnx'))).rejects.toThrow();
  });

  it('refuses a model of another task', async () => {
    await expect(
      fetchModel({ uri: `${base}/ranker.onnx`, sha256: sha, task: 'churn', dir: join(out, 'task') }),
    ).rejects.toThrow(/task is drink-ranking, expected churn/);
  });

  it('reads its settings from the environment and names a missing or malformed one', () => {
    const env = {
      CREMA_FETCH_URI: 'http://m/x.onnx',
      CREMA_FETCH_SHA256: sha,
      CREMA_FETCH_TASK: 'pickup-time',
      CREMA_FETCH_DIR: '/var/lib/crema/models',
    };
    expect(fetchSettingsFrom(env)).toEqual({
      uri: 'http://m/x.onnx',
      sha256: sha,
      task: 'pickup-time',
      dir: '/var/lib/crema/models',
    });
    expect(() => fetchSettingsFrom({ ...env, CREMA_FETCH_URI: '' })).toThrow('CREMA_FETCH_URI is required');
    expect(() => fetchSettingsFrom({ ...env, CREMA_FETCH_URI: '/models/x.onnx' })).toThrow(
      'CREMA_FETCH_URI is not a URL; a local file is written file:///models/x.onnx',
    );
    expect(() => fetchSettingsFrom({ ...env, CREMA_FETCH_METADATA_URI: 'x.meta.json' })).toThrow(
      /CREMA_FETCH_METADATA_URI is not a URL/,
    );
    expect(() => fetchSettingsFrom({ ...env, CREMA_FETCH_SHA256: 'abc' })).toThrow(
      /CREMA_FETCH_SHA256 is not a sha256/,
    );
    expect(() => fetchSettingsFrom({ ...env, CREMA_FETCH_TASK: 'ranking' })).toThrow(
      /CREMA_FETCH_TASK ranking is not one of/,
    );
  });
});
