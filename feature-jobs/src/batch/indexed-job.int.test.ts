/**
 * The shipped Indexed Job manifest is accepted by a real kube-apiserver (server-side dry run)
 * and its shard count matches its completions, so every user hash lands in exactly one pod.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { inject, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { parseShard } from './shard.js';

const FILE = 'manifests/jobs/feature-batch-indexed-job.yaml';

describe('feature batch Indexed Job', () => {
  it('is valid for the API server and runs one shard per completion index', () => {
    const job = parse(readFileSync(FILE, 'utf8'));
    const args: string[] = job.spec.template.spec.containers[0].args;
    const shards = Number(args[args.indexOf('--shards') + 1]);
    expect(job.spec.completionMode).toBe('Indexed');
    expect(shards).toBe(job.spec.completions);
    for (let i = 0; i < shards; i++)
      expect(parseShard(`${i}/${shards}`)).toEqual({ index: i, count: shards });

    const kubeconfig = inject('kubeconfigPath');
    try {
      execFileSync('kubectl', ['--kubeconfig', kubeconfig, 'create', 'namespace', 'crema'], {
        stdio: 'pipe',
      });
    } catch (err) {
      if (!String((err as { stderr?: Buffer }).stderr).includes('AlreadyExists')) throw err;
    }
    const out = execFileSync(
      'kubectl',
      ['--kubeconfig', kubeconfig, 'apply', '--dry-run=server', '-f', FILE, '-o', 'json'],
      {
        encoding: 'utf8',
      },
    );
    const accepted = JSON.parse(out);
    expect(accepted.spec.completions).toBe(8);
    expect(accepted.spec.backoffLimitPerIndex).toBe(3);
  });
});

describe('stream job Deployment', () => {
  it('is valid for the API server and names each consumer after its pod', () => {
    const file = 'manifests/jobs/stream-job-deployment.yaml';
    const dep = parse(readFileSync(file, 'utf8'));
    const c = dep.spec.template.spec.containers[0];
    expect(c.args.slice(0, 3)).toEqual(['stream', '--consumer', '$(POD_NAME)']);
    expect(c.env[0].valueFrom.fieldRef.fieldPath).toBe('metadata.name');
    const kubeconfig = inject('kubeconfigPath');
    const out = execFileSync(
      'kubectl',
      ['--kubeconfig', kubeconfig, 'apply', '--dry-run=server', '-f', file, '-o', 'json'],
      {
        encoding: 'utf8',
      },
    );
    expect(JSON.parse(out).spec.replicas).toBe(2);
  });
});
