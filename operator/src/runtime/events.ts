/**
 * Kubernetes Events for important transitions, visible in `kubectl describe` and
 * `kubectl events`. Recording is best effort: a failed event is logged, never fails a reconcile.
 */
import { RESOURCES, resourcePath, type KubeClient, type KubeObject } from './kube.js';

export type EventType = 'Normal' | 'Warning';

export interface EventRecorder {
  record(obj: KubeObject, type: EventType, reason: string, message: string): Promise<void>;
}

/** Creates core/v1 Events from component `crema-operator`. */
export function createEventRecorder(
  client: KubeClient,
  opts: { component?: string; instance?: string; now?: () => Date; log?: (m: string) => void } = {},
): EventRecorder {
  const component = opts.component ?? 'crema-operator';
  const now = opts.now ?? (() => new Date());
  let seq = 0;
  return {
    async record(obj, type, reason, message) {
      const ns = obj.metadata?.namespace ?? 'default';
      const t = now().toISOString();
      try {
        await client.request('POST', resourcePath(RESOURCES.event, ns), {
          body: {
            apiVersion: 'v1',
            kind: 'Event',
            metadata: {
              name: `${obj.metadata?.name}.${Date.now().toString(16)}${(seq++).toString(16)}`,
              namespace: ns,
            },
            involvedObject: {
              apiVersion: obj.apiVersion,
              kind: obj.kind,
              name: obj.metadata?.name,
              namespace: ns,
              uid: obj.metadata?.uid,
              resourceVersion: obj.metadata?.resourceVersion,
            },
            type,
            reason,
            message: message.slice(0, 1024),
            source: { component },
            reportingComponent: component,
            reportingInstance: opts.instance ?? component,
            firstTimestamp: t,
            lastTimestamp: t,
            count: 1,
          },
        });
      } catch (err) {
        opts.log?.(`recording event ${reason} on ${obj.kind} ${obj.metadata?.name}: ${String(err)}`);
      }
    },
  };
}
