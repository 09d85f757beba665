/**
 * Helpers for integration tests: polling, counting writes from the API server's audit log, and,
 * for the control-plane-only tests of control flow (no kubelet there), a simulation of pod
 * readiness. Tests of what pods really do run on the real node (`*.node.test.ts`).
 */
import * as k8s from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { createKubeClient, type KubeClient, type KubeList, type KubeObject } from '../src/runtime/kube.js';

/** Polls `fn` until it returns a truthy value; fails with the last value/error after `timeoutMs`. */
export async function eventually<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 30_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`${what} not met within ${timeoutMs} ms; last: ${String(last)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** A KubeClient for the test cluster, identified as `userAgent` in the audit log. */
export async function testClient(kubeconfigPath: string, userAgent = 'crema-tests'): Promise<KubeClient> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return createKubeClient(kc, { userAgent });
}

export interface AuditEvent {
  stage: string;
  verb: string;
  userAgent?: string;
  requestURI: string;
  objectRef?: { resource?: string; namespace?: string; name?: string; subresource?: string };
  responseStatus?: { code?: number };
  /** The request body, for the resources the audit policy logs at Request level. */
  requestObject?: unknown;
}

/** Write requests (create/update/patch/delete) recorded by the API server whose user agent starts with `agentPrefix`. */
export async function auditedWrites(
  auditLogPath: string,
  agentPrefix: string,
  namespace?: string,
): Promise<AuditEvent[]> {
  const text = await readFile(auditLogPath, 'utf8');
  const out: AuditEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as AuditEvent;
    if (e.stage !== 'ResponseComplete') continue;
    if (!e.userAgent?.startsWith(agentPrefix)) continue;
    if (namespace && e.objectRef?.namespace !== namespace) continue;
    out.push(e);
  }
  return out;
}

/**
 * Control plane only (no kubelet, no container ever starts): simulates readiness by marking
 * every pod matching `labelSelector` in `namespace` Running and Ready through the status
 * subresource, so control-flow tests see ready replicas. Never used with a real node.
 * Returns how many pods it marked.
 */
export async function simulatePodsReady(
  client: KubeClient,
  namespace: string,
  labelSelector: string,
): Promise<number> {
  const pods = await client.request<KubeList<KubeObject & { status?: { phase?: string } }>>(
    'GET',
    `/api/v1/namespaces/${namespace}/pods`,
    { query: { labelSelector } },
  );
  const now = new Date().toISOString();
  let marked = 0;
  for (const pod of pods.items) {
    if (pod.status?.phase === 'Running') continue;
    await client.request('PATCH', `/api/v1/namespaces/${namespace}/pods/${pod.metadata!.name}/status`, {
      contentType: 'application/merge-patch+json',
      body: {
        status: {
          phase: 'Running',
          conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map((type) => ({
            type,
            status: 'True',
            lastTransitionTime: now,
          })),
        },
      },
    });
    marked++;
  }
  return marked;
}

/** One drift alert, as the tests send it through Alertmanager's webhook format. */
export interface WebhookDriftAlert {
  readonly status?: 'firing' | 'resolved';
  readonly namespace: string;
  /** The RecommenderModel's name (label `crema_model`). */
  readonly model: string;
  readonly revision: string;
  readonly variant: string;
  readonly feature?: string;
  readonly psi: number;
  /** Default: now. */
  readonly startsAt?: string;
}

/**
 * POSTs one Alertmanager v4 notification carrying `alert` to the operator's webhook on
 * `port` with bearer `token`, as Alertmanager does; resolves with the HTTP status and JSON body.
 */
export async function notifyAlertWebhook(
  port: number,
  token: string,
  alert: WebhookDriftAlert,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const status = alert.status ?? 'firing';
  const feature = alert.feature ?? 'hour';
  const res = await fetch(`http://127.0.0.1:${port}/alerts`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      version: '4',
      status,
      receiver: 'crema',
      groupLabels: {},
      commonLabels: {},
      commonAnnotations: {},
      externalURL: 'http://alertmanager',
      groupKey: 'k',
      alerts: [
        {
          status,
          labels: {
            alertname: 'CremaFeatureDrift',
            namespace: alert.namespace,
            crema_model: alert.model,
            revision: alert.revision,
            variant: alert.variant,
            feature,
          },
          annotations: {
            value: String(alert.psi),
            summary: `Feature ${feature} drifted: PSI ${alert.psi.toFixed(3)} > 0.2`,
          },
          startsAt: alert.startsAt ?? new Date().toISOString(),
          endsAt: status === 'resolved' ? new Date().toISOString() : '0001-01-01T00:00:00Z',
          generatorURL: '',
          fingerprint: 'f',
        },
      ],
    }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}
