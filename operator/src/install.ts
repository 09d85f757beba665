/**
 * Installs (server-side applies) the CRDs from crds/ and waits until the API server serves
 * them. Used by `npm start`, the tests and the benchmark; in a real cluster the Helm chart or
 * GitOps installs the same files.
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { FIELD_MANAGER } from './runtime/apply.js';
import type { KubeClient, KubeObject } from './runtime/kube.js';

/** Directory of the CRD YAML files (the single source of truth). */
export const CRDS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'crds');

interface Crd extends KubeObject {
  status?: { conditions?: Array<{ type: string; status: string }> };
}

/** Applies every CRD in `dir` and resolves once each is Established. */
export async function installCrds(client: KubeClient, dir = CRDS_DIR, timeoutMs = 30_000): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.yaml')).sort();
  const names: string[] = [];
  for (const f of files) {
    const crd = parse(await readFile(join(dir, f), 'utf8')) as Crd;
    const name = crd.metadata!.name!;
    names.push(name);
    await client.request('PATCH', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`, {
      body: crd,
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager: FIELD_MANAGER, force: true },
    });
  }
  const deadline = Date.now() + timeoutMs;
  for (const name of names) {
    for (;;) {
      const crd = await client.request<Crd>(
        'GET',
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`,
      );
      if (crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return names;
}
