import { describe, expect, it } from 'vitest';
import { Informer } from './informer.js';
import { KubeApiError, RESOURCES, type KubeClient, type KubeObject, type WatchEvent } from './kube.js';

const cm = (name: string, rv: string): KubeObject => ({
  metadata: { name, namespace: 'ns', resourceVersion: rv },
});

/** A scripted fake of our own KubeClient interface: lists return `lists` in turn, watches play `watches`. */
function fakeClient(lists: KubeObject[][], watches: Array<Array<WatchEvent<KubeObject>> | KubeApiError>) {
  const watchQueries: Array<Record<string, unknown>> = [];
  let listCalls = 0;
  const client: KubeClient = {
    requestCounts: {},
    async request<T>(): Promise<T> {
      const items = lists[Math.min(listCalls, lists.length - 1)]!;
      listCalls++;
      return { metadata: { resourceVersion: `list-${listCalls}` }, items } as T;
    },
    async watch<T>(
      _p: string,
      q: Record<string, unknown>,
      onEvent: (e: WatchEvent<T>) => void,
      signal: AbortSignal,
    ) {
      watchQueries.push(q);
      const script = watches.shift();
      if (script instanceof KubeApiError) throw script;
      if (!script) {
        await new Promise((r) => signal.addEventListener('abort', r));
        return;
      }
      for (const e of script) onEvent(e as WatchEvent<T>);
    },
    close() {},
  };
  return { client, watchQueries, listCalls: () => listCalls };
}

describe('Informer', () => {
  it('caches listed objects with their kind and apiVersion, like watched ones', async () => {
    const f = fakeClient(
      [[cm('a', '1')]],
      [[{ type: 'ADDED', object: { ...cm('b', '2'), kind: 'Deployment', apiVersion: 'apps/v1' } }]],
    );
    const inf = new Informer(f.client, { resource: RESOURCES.deployment });
    await inf.start();
    await new Promise((r) => setTimeout(r, 20));
    await inf.stop();
    expect(inf.get('ns', 'a')).toMatchObject({ apiVersion: 'apps/v1', kind: 'Deployment' });
  });

  it('resumes a closed watch from the last resourceVersion it saw', async () => {
    const f = fakeClient(
      [[cm('a', '1')]],
      [
        [
          { type: 'MODIFIED', object: cm('a', '5') },
          { type: 'BOOKMARK', object: cm('', '7') },
        ],
      ],
    );
    const inf = new Informer(f.client, { resource: RESOURCES.configMap });
    const events: string[] = [];
    inf.on((e, o) => events.push(`${e}:${o.metadata?.name}@${o.metadata?.resourceVersion}`));
    await inf.start();
    await new Promise((r) => setTimeout(r, 20));
    await inf.stop();
    expect(events).toEqual(['add:a@1', 'update:a@5']);
    expect(f.watchQueries.map((q) => q['resourceVersion'])).toEqual(['list-1', '7']);
    expect(f.listCalls()).toBe(1);
  });

  it('relists on 410 Gone and emits only the difference', async () => {
    const f = fakeClient(
      [
        [cm('a', '1'), cm('b', '1')],
        [cm('a', '1'), cm('c', '9')], // b deleted and c added while we were away
      ],
      [
        [
          {
            type: 'ERROR',
            object: { code: 410, message: 'too old resource version' } as unknown as KubeObject,
          },
        ],
      ],
    );
    const inf = new Informer(f.client, { resource: RESOURCES.configMap });
    const events: string[] = [];
    inf.on((e, o) => events.push(`${e}:${o.metadata?.name}`));
    await inf.start();
    await new Promise((r) => setTimeout(r, 20));
    await inf.stop();
    expect(events).toEqual(['add:a', 'add:b', 'delete:b', 'add:c']);
    expect(
      inf
        .list()
        .map((o) => o.metadata?.name)
        .sort(),
    ).toEqual(['a', 'c']);
    expect(inf.lists).toBe(2);
  });

  it('relists when the watch request itself answers 410', async () => {
    const f = fakeClient(
      [[cm('a', '1')], [cm('a', '2')]],
      [new KubeApiError('WATCH', '/x', 410, 'Expired', 'gone')],
    );
    const inf = new Informer(f.client, { resource: RESOURCES.configMap });
    const events: string[] = [];
    inf.on((e, o) => events.push(`${e}:${o.metadata?.name}@${o.metadata?.resourceVersion}`));
    await inf.start();
    await new Promise((r) => setTimeout(r, 20));
    await inf.stop();
    expect(events).toEqual(['add:a@1', 'update:a@2']);
  });
});
