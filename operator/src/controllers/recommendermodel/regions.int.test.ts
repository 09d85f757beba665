/**
 * Regional menus reach serving (ADR 0014), against the real API server: the StoreRegions of a
 * model become its `NAME-regions` ConfigMap, which serving's own parser reads as the menu of the
 * region's stores; the serving Deployment mounts it where CREMA_REGION_MENU_PATH points; a change
 * to a region follows; an item the model's catalog does not know is a MenuValid condition on
 * the region naming the field. Control plane only (no kubelet projects the file here).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  ITEM_CATALOG_ANNOTATION,
  REGION_MENU_DIR,
  REGION_MENU_KEY,
} from '../../../../contracts/region-menu.js';
import { SERVING_ENV } from '../../../../contracts/serving-env.js';
import type { StoreRegion } from '../../api/v1alpha1/index.js';
import { RESOURCES, resourcePath, type KubeClient, type KubeObject } from '../../runtime/kube.js';
import { eventually } from '../../../test/helpers.js';
import { startOperatorForTest, type OperatorTestEnv } from '../../../test/operator.js';
import { parseRegionMenu } from '../../../../serving/src/menu/region-menu.js';

interface PodSpec {
  volumes: { name: string; configMap?: { name: string; optional?: boolean } }[];
  containers: {
    name: string;
    volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
    env: { name: string; value?: string }[];
  }[];
}

const ns = `regions-${Date.now().toString(36)}`;
let client: KubeClient;
let env: OperatorTestEnv;

beforeAll(async () => {
  env = await startOperatorForTest({ kubeconfigPath: inject('kubeconfigPath'), namespace: ns });
  client = env.client;
});
afterAll(async () => {
  await env?.op.stop();
  await env?.stop();
});

const menuFile = async (model: string) => {
  const cm = await client
    .request<KubeObject & { data: Record<string, string> }>(
      'GET',
      resourcePath(RESOURCES.configMap, ns, `${model}-regions`),
    )
    .catch(() => undefined);
  const text = cm?.data[REGION_MENU_KEY];
  if (!text) return undefined;
  const parsed = parseRegionMenu(text);
  if ('error' in parsed) throw new Error(parsed.error);
  return { text, menu: parsed.menu };
};

describe('regional menus reach serving', () => {
  it(
    'StoreRegion menu and capacity → the ConfigMap serving reads, mounted where it reads it',
    { timeout: 90_000 },
    async () => {
      await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
        body: {
          apiVersion: 'crema.dev/v1alpha1',
          kind: 'RecommenderModel',
          metadata: {
            name: 'drinks',
            namespace: ns,
            annotations: { [ITEM_CATALOG_ANNOTATION]: 'drink-1,drink-2,drink-3,drink-19' },
          },
          spec: {
            model: { uri: 'file:///models/a.onnx', sha256: 'a'.repeat(64), task: 'drink-ranking' },
            serving: { minReplicas: 1, maxReplicas: 2 },
          },
        },
      });
      const region = (menu: object, capacity = 40) => ({
        apiVersion: 'crema.dev/v1alpha1',
        kind: 'StoreRegion',
        metadata: { name: 'north', namespace: ns },
        spec: {
          stores: ['store-1', 'store-7'],
          timezone: 'America/Chicago',
          serving: { modelRef: 'drinks' },
          capacity: { drinksPerHourPerStore: capacity },
          menu,
        },
      });
      await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), {
        body: region({ seasonal: ['drink-19'], unavailable: ['drink-2'] }),
      });

      const first = await eventually(
        async () => {
          const f = await menuFile('drinks');
          return f?.menu.forStore('store-7') ? f : undefined;
        },
        60_000,
        'drinks-regions with region north',
      );
      expect(first.menu.forStore('store-7')).toMatchObject({ regions: ['north'], drinksPerHour: 40 });
      expect([...first.menu.forStore('store-1')!.unavailable]).toEqual(['drink-2']);
      expect([...first.menu.regionalSeasonal]).toEqual(['drink-19']);
      expect(first.menu.forStore('store-2')).toBeUndefined();

      // The serving pods mount it (optional: they start before it exists) where serving reads it.
      const d = await client.request<KubeObject & { spec: { template: { spec: PodSpec } } }>(
        'GET',
        resourcePath(RESOURCES.deployment, ns, 'drinks-stable'),
      );
      const pod = d.spec.template.spec;
      const vol = pod.volumes.find((v) => v.configMap?.name === 'drinks-regions')!;
      expect(vol.configMap?.optional).toBe(true);
      const serving = pod.containers.find((c) => c.name === 'serving')!;
      expect(serving.volumeMounts).toContainEqual({
        name: vol.name,
        mountPath: REGION_MENU_DIR,
        readOnly: true,
      });
      expect(serving.env).toContainEqual({
        name: SERVING_ENV.regionMenuPath,
        value: `${REGION_MENU_DIR}/${REGION_MENU_KEY}`,
      });

      // Every item is in the catalog training recorded.
      const getRegion = () =>
        client.request<StoreRegion>('GET', resourcePath(RESOURCES.storeRegion, ns, 'north'));
      const valid = (r: StoreRegion) => r.status?.conditions?.find((c) => c.type === 'MenuValid');
      await eventually(async () => valid(await getRegion())?.status === 'True', 30_000, 'MenuValid True');

      // A change to the region follows; an unknown item is named by its field.
      await client.request('PUT', resourcePath(RESOURCES.storeRegion, ns, 'north'), {
        body: {
          ...region({ seasonal: ['drink-19'], unavailable: ['drink-2', 'latte-of-doom'] }, 25),
          metadata: {
            name: 'north',
            namespace: ns,
            resourceVersion: (await getRegion()).metadata?.resourceVersion,
          },
        },
      });
      const changed = await eventually(
        async () => {
          const f = await menuFile('drinks');
          return f?.menu.forStore('store-1')?.drinksPerHour === 25 ? f : undefined;
        },
        30_000,
        'the new capacity in drinks-regions',
      );
      expect([...changed.menu.forStore('store-1')!.unavailable]).toEqual(['drink-2', 'latte-of-doom']);
      const invalid = await eventually(
        async () => {
          const c = valid(await getRegion());
          return c?.status === 'False' ? c : undefined;
        },
        30_000,
        'MenuValid False',
      );
      expect(invalid).toMatchObject({ reason: 'UnknownMenuItem' });
      expect(invalid.message).toMatch(/spec\.menu\.unavailable\[1\]: "latte-of-doom"/);
      expect(invalid.message).not.toMatch(/drink-2/);
    },
  );

  it(
    'menus over the size limit: the last ConfigMap that fit stays, the regions say ConfigMapTooLarge',
    { timeout: 90_000 },
    async () => {
      await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
        body: {
          apiVersion: 'crema.dev/v1alpha1',
          kind: 'RecommenderModel',
          metadata: { name: 'big', namespace: ns },
          spec: {
            model: { uri: 'file:///models/a.onnx', sha256: 'b'.repeat(64), task: 'drink-ranking' },
            serving: { minReplicas: 1, maxReplicas: 2 },
          },
        },
      });
      // Store ids of the CRD's longest (64 characters), 2,000 per region (its maximum).
      const bigRegion = (i: number, stores: number) => ({
        apiVersion: 'crema.dev/v1alpha1',
        kind: 'StoreRegion',
        metadata: { name: `big-${i}`, namespace: ns },
        spec: {
          stores: Array.from({ length: stores }, (_, j) => `${i}-${String(j).padStart(62, 'x')}`.slice(-64)),
          timezone: 'UTC',
          serving: { modelRef: 'big' },
        },
      });
      const published = async (name: string) =>
        (
          await client.request<StoreRegion>('GET', resourcePath(RESOURCES.storeRegion, ns, name))
        ).status?.conditions?.find((c) => c.type === 'MenuPublished');
      // 6 × 2,000 stores of 64 characters: ~785 KiB, under the 900 KiB limit.
      await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), { body: bigRegion(0, 10) });
      for (let i = 1; i <= 6; i++)
        await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), { body: bigRegion(i, 2000) });
      const last = bigRegion(6, 2000).spec.stores[1999]!;
      const good = await eventually(
        async () => {
          const f = await menuFile('big');
          return f?.menu.forStore(last) ? f : undefined;
        },
        30_000,
        'big-regions with 6 big regions',
      );
      await eventually(
        async () => (await published('big-0'))?.status === 'True',
        30_000,
        'MenuPublished True',
      );

      // A 7th: ~916 KiB, over the limit.
      await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), { body: bigRegion(7, 2000) });
      const refused = await eventually(
        async () => {
          const c = await published('big-0');
          return c?.status === 'False' ? c : undefined;
        },
        30_000,
        'MenuPublished False',
      );
      expect(refused.reason).toBe('ConfigMapTooLarge');
      expect(refused.message).toMatch(/ConfigMap big-regions of RecommenderModel big would hold \d+ bytes/);
      expect(refused.message).toContain('14010 stores in 8 regions');
      await eventually(
        async () => (await published('big-7'))?.reason === 'ConfigMapTooLarge',
        30_000,
        'big-7 ConfigMapTooLarge',
      );
      // The last ConfigMap that fit is still there, unchanged: serving keeps its menus.
      const kept = await menuFile('big');
      expect(kept?.text).toBe(good.text);
      expect(kept?.menu.forStore(bigRegion(7, 2000).spec.stores[0]!)).toBeUndefined();

      // Back under the limit: the ConfigMap follows again and the condition clears.
      await client.request('DELETE', resourcePath(RESOURCES.storeRegion, ns, 'big-6'));
      const after = await eventually(
        async () => {
          const f = await menuFile('big');
          return f?.menu.forStore(bigRegion(7, 2000).spec.stores[0]!) ? f : undefined;
        },
        30_000,
        'big-regions with big-7 instead of big-6',
      );
      expect(after.menu.forStore(last)).toBeUndefined();
      await eventually(
        async () => (await published('big-0'))?.status === 'True',
        30_000,
        'MenuPublished True again',
      );
    },
  );
});
