/**
 * vitest global setup for the `integration` project: one real control plane and one real
 * redis-server for the whole run, handed to test files through `inject()`.
 */
import type {} from 'vitest';
import type { TestProject } from 'vitest/node';
import { startTestEnv, type TestEnv } from './environment.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Admin kubeconfig of the test control plane. */
    kubeconfigPath: string;
    /** https://127.0.0.1:PORT of kube-apiserver. */
    kubeServer: string;
    /** redis://127.0.0.1:PORT of the shared redis-server. */
    redisUrl: string;
    /** kube-apiserver's audit log (JSON lines, one per write request). */
    auditLogPath: string;
  }
}

let env: TestEnv | undefined;

export async function setup(project: TestProject): Promise<void> {
  env = await startTestEnv();
  project.provide('kubeconfigPath', env.kube!.kubeconfigPath);
  project.provide('kubeServer', env.kube!.server);
  project.provide('redisUrl', env.redis!.url);
  project.provide('auditLogPath', env.kube!.auditLogPath);
  console.error(`[testenv] ready in ${env.timings['total']} ms: ${JSON.stringify(env.timings)}`);
}

export async function teardown(): Promise<void> {
  if (env) {
    console.error(`[testenv] memory (KiB RSS): ${JSON.stringify(env.memoryKiB())}`);
    await env.stop();
  }
}
