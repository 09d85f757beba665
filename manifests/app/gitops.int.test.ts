/**
 * `npx cdk8s synth` as a platform team runs it: with no network (a fresh network namespace when
 * root), twice, byte-identical to the committed manifests/gitops; then every rendered object is
 * accepted by the real API server with the CRDs installed (server-side apply, dry run).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { installCrds } from '../../operator/src/install.js';
import type { KubeClient } from '../../operator/src/runtime/kube.js';
import { testClient } from '../../operator/test/helpers.js';
import { isRoot, which } from '../../hack/testenv/debian.js';
import { SITE } from './site.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const dirs: string[] = [];
let client: KubeClient;

beforeAll(async () => {
  client = await testClient(inject('kubeconfigPath'));
  await installCrds(client);
  await client
    .request('POST', '/api/v1/namespaces', { body: { metadata: { name: SITE.namespace } } })
    .catch((err: { status?: number }) => {
      if (err.status !== 409) throw err;
    });
});

afterAll(async () => {
  client?.close();
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** Runs `npx cdk8s synth -o DIR` at the repo root, without network when we can take it away. */
async function synth(): Promise<Map<string, string>> {
  const out = await mkdtemp(join(tmpdir(), 'crema-gitops-'));
  dirs.push(out);
  const npx = ['npx', '--no-install', 'cdk8s', 'synth', '-o', out];
  // unshare -n: a network namespace with only a down loopback, so any fetch fails at once.
  const offline = isRoot() && which('unshare') !== null;
  const [cmd, ...args] = offline ? ['unshare', '-n', ...npx] : npx;
  await run(cmd!, args, { cwd: root, env: { ...process.env, npm_config_offline: 'true' } });
  const files = (await readdir(out)).sort();
  return new Map(
    await Promise.all(files.map(async (f) => [f, await readFile(join(out, f), 'utf8')] as const)),
  );
}

it('synthesizes offline, byte-stable and identical to the committed manifests', async () => {
  const first = await synth();
  const second = await synth();
  expect([...first.keys()]).toEqual(['experiments.yaml', 'models.yaml', 'regions.yaml']);
  expect(second).toEqual(first);
  for (const [f, text] of first) {
    expect(text, `manifests/gitops/${f} is stale: run npx cdk8s synth`).toBe(
      await readFile(join(root, 'manifests/gitops', f), 'utf8'),
    );
  }
}, 120_000);

it('every rendered object is accepted by the API server (server-side apply, dry run)', async () => {
  const objects = [];
  for (const f of (await readdir(join(root, 'manifests/gitops'))).sort())
    for (const d of parseAllDocuments(await readFile(join(root, 'manifests/gitops', f), 'utf8')))
      objects.push(d.toJS() as { kind: string; metadata: { name: string; namespace: string } });
  expect(objects.length).toBeGreaterThan(10);
  const plural = {
    RecommenderModel: 'recommendermodels',
    StoreRegion: 'storeregions',
    Experiment: 'experiments',
  };
  const kinds = new Set<string>();
  for (const o of objects) {
    const resource = plural[o.kind as keyof typeof plural];
    expect(resource, `unexpected kind ${o.kind}`).toBeDefined();
    const path = `/apis/crema.dev/v1alpha1/namespaces/${o.metadata.namespace}/${resource}/${o.metadata.name}`;
    const applied = await client.request<{ metadata: { name: string } }>('PATCH', path, {
      body: o,
      contentType: 'application/apply-patch+yaml',
      query: { dryRun: 'All', fieldManager: 'argocd-controller', force: true },
    });
    expect(applied.metadata.name).toBe(o.metadata.name);
    kinds.add(o.kind);
  }
  expect([...kinds].sort()).toEqual(['Experiment', 'RecommenderModel', 'StoreRegion']);
  // Dry run: nothing was stored.
  await expect(
    client.request('GET', `/apis/crema.dev/v1alpha1/namespaces/${SITE.namespace}/storeregions/northeast`),
  ).rejects.toMatchObject({ status: 404 });
});
