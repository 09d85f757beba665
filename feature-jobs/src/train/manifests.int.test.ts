/**
 * The committed RecommenderModel manifests are accepted by a real kube-apiserver with the
 * project's CRD (server-side dry run) and point at committed artifacts with matching digests.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { parse } from 'yaml';
import { sha256Hex } from './artifacts.js';

const DIR = 'manifests/models';

function kubectl(args: string[]): string {
  return execFileSync('kubectl', ['--kubeconfig', inject('kubeconfigPath'), ...args], {
    encoding: 'utf8',
    stdio: 'pipe',
  });
}

describe('GitOps model manifests', () => {
  it('each RecommenderModel validates against the CRD and matches its artifact and metadata', () => {
    try {
      kubectl(['create', '-f', 'crds/recommendermodels.crema.dev.yaml']);
    } catch (err) {
      if (!String((err as { stderr?: string }).stderr).includes('AlreadyExists')) throw err;
    }
    kubectl(['wait', '--for', 'condition=established', '--timeout=60s', 'crd/recommendermodels.crema.dev']);
    const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml'));
    expect(files.sort()).toEqual([
      'addon-attach.yaml',
      'churn.yaml',
      'drink-ranking.yaml',
      'pickup-time.yaml',
    ]);
    for (const f of files) {
      const doc = parse(readFileSync(join(DIR, f), 'utf8'));
      const name = doc.metadata.name as string;
      const onnx = readFileSync(join(DIR, 'artifacts', `${name}.onnx`));
      const meta = JSON.parse(readFileSync(join(DIR, 'artifacts', `${name}.meta.json`), 'utf8'));
      expect(doc.spec.model.sha256).toBe(sha256Hex(onnx));
      expect(meta.sha256).toBe(doc.spec.model.sha256);
      expect(doc.metadata.annotations['crema.dev/dataset-hash']).toBe(meta.lineage.datasetHash);
      // Eventual consistency of discovery right after the CRD is established: retry briefly.
      let out = '';
      for (let i = 0; ; i++) {
        try {
          out = kubectl(['apply', '--dry-run=server', '-n', 'default', '-f', join(DIR, f), '-o', 'json']);
          break;
        } catch (err) {
          if (i > 20) throw new Error(`${f}: ${String((err as { stderr?: string }).stderr)}`);
          execFileSync('sleep', ['0.3']);
        }
      }
      expect(JSON.parse(out).spec.model.task).toBe(meta.task);
    }
  });
});
