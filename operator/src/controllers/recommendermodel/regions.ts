/**
 * A model's regional menus (ADR 0014): the StoreRegions naming the model become one ConfigMap
 * its serving pods read (contracts/region-menu.ts), and each region's menu is checked against
 * the item catalog training recorded on the model. Pure.
 */
import {
  ITEM_CATALOG_ANNOTATION,
  REGION_MENU_KEY,
  parseItemCatalog,
  regionMenuConfigMapName,
  type RegionMenuConfig,
} from '../../../../contracts/region-menu.js';
import type { StoreRegion } from '../../api/v1alpha1/index.js';
import type { KubeObject } from '../../runtime/kube.js';
import { MANAGED_BY, MODEL_LABEL } from './desired.js';
import type { RecommenderModel } from './types.js';

/** The regions.json of `model` from the regions (any namespace filtering done by the caller). */
export function buildRegionMenuConfig(model: string, regions: readonly StoreRegion[]): RegionMenuConfig {
  return {
    version: 1,
    model,
    regions: regions
      .filter((r) => r.spec.serving?.modelRef === model && r.metadata?.name)
      .map((r) => ({
        name: r.metadata!.name!,
        stores: [...r.spec.stores],
        seasonal: [...(r.spec.menu?.seasonal ?? [])],
        unavailable: [...(r.spec.menu?.unavailable ?? [])],
        ...(r.spec.capacity?.drinksPerHourPerStore !== undefined
          ? { drinksPerHourPerStore: r.spec.capacity.drinksPerHourPerStore }
          : {}),
      }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
  };
}

/** The ConfigMap `NAME-regions` of model `rm`, owned by it. */
export function buildRegionMenuConfigMap(rm: RecommenderModel, regions: readonly StoreRegion[]): KubeObject {
  const name = rm.metadata!.name!;
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: regionMenuConfigMapName(name),
      namespace: rm.metadata!.namespace!,
      labels: {
        'app.kubernetes.io/name': 'crema-serving',
        'app.kubernetes.io/instance': name,
        ...MANAGED_BY,
        [MODEL_LABEL]: name,
      },
      ownerReferences: [
        {
          apiVersion: 'crema.dev/v1alpha1',
          kind: 'RecommenderModel',
          name,
          uid: rm.metadata!.uid!,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    data: { [REGION_MENU_KEY]: JSON.stringify(buildRegionMenuConfig(name, regions)) },
  } as KubeObject;
}

/**
 * The most bytes of data the `NAME-regions` ConfigMap may hold. The API server refuses a
 * ConfigMap whose keys and values exceed 1 MiB (~40,000 stores per model at ~25 bytes a store);
 * 900 KiB leaves room for growth between two reconciles and for the rest of the object.
 */
export const REGION_MENU_MAX_BYTES = 900 * 1024;

/** The ConfigMap's data size as the API server counts it: bytes of every key and value. */
export function configMapDataBytes(cm: KubeObject): number {
  const data = (cm as KubeObject & { data?: Record<string, string> }).data ?? {};
  return Object.entries(data).reduce((a, [k, v]) => a + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
}

/** Why a model's region menus cannot be published, or undefined when they fit. */
export interface RegionMenuTooLarge {
  readonly configMap: string;
  readonly bytes: number;
  readonly limit: number;
  readonly regions: number;
  readonly stores: number;
}

/**
 * The model's region ConfigMap, or why it is not applied: data over `limit` bytes would be
 * refused by the API server (or come close), so the last ConfigMap that fit stays in place.
 */
export function buildRegionMenu(
  rm: RecommenderModel,
  regions: readonly StoreRegion[],
  limit = REGION_MENU_MAX_BYTES,
): { readonly configMap: KubeObject; readonly tooLarge?: RegionMenuTooLarge } {
  const configMap = buildRegionMenuConfigMap(rm, regions);
  const bytes = configMapDataBytes(configMap);
  if (bytes <= limit) return { configMap };
  const served = regions.filter((r) => r.spec.serving?.modelRef === rm.metadata?.name);
  return {
    configMap,
    tooLarge: {
      configMap: configMap.metadata!.name!,
      bytes,
      limit,
      regions: served.length,
      stores: served.reduce((a, r) => a + r.spec.stores.length, 0),
    },
  };
}

/** The MenuPublished condition of a region serving `model`: did its menu reach serving? */
export function checkRegionMenuPublished(
  model: string,
  tooLarge: RegionMenuTooLarge | undefined,
): { status: 'True' | 'False'; reason: string; message: string } {
  if (!tooLarge)
    return {
      status: 'True',
      reason: 'ConfigMapApplied',
      message: `the menus and capacity of the regions serving ${model} are in ConfigMap ${regionMenuConfigMapName(model)}`,
    };
  const kib = (n: number) => `${Math.round(n / 1024)} KiB`;
  return {
    status: 'False',
    reason: 'ConfigMapTooLarge',
    message:
      `ConfigMap ${tooLarge.configMap} of RecommenderModel ${model} would hold ${tooLarge.bytes} bytes ` +
      `(${kib(tooLarge.bytes)}: ${tooLarge.stores} stores in ${tooLarge.regions} regions), over the ` +
      `${kib(tooLarge.limit)} limit below the API server's 1 MiB; it is not applied and serving keeps ` +
      `the last one that fit, so changes to these regions' menus, capacity and stores do not reach ` +
      `serving. Serve fewer stores per model (split the regions over several RecommenderModels)`,
  };
}

/** The item ids training recorded on the model, or undefined (nothing to check against). */
export function itemCatalogOf(rm: RecommenderModel): ReadonlySet<string> | undefined {
  const a = rm.metadata?.annotations?.[ITEM_CATALOG_ANNOTATION];
  return a ? new Set(parseItemCatalog(a)) : undefined;
}

/** The MenuValid condition of a region serving `model`, checked against its catalog. */
export function checkRegionMenu(
  region: StoreRegion,
  model: string,
  catalog: ReadonlySet<string> | undefined,
): { status: 'True' | 'False' | 'Unknown'; reason: string; message: string } {
  if (!catalog)
    return {
      status: 'Unknown',
      reason: 'NoItemCatalog',
      message: `RecommenderModel ${model} records no item catalog (annotation ${ITEM_CATALOG_ANNOTATION}); menu items are not checked`,
    };
  const unknown: string[] = [];
  for (const field of ['seasonal', 'unavailable'] as const) {
    (region.spec.menu?.[field] ?? []).forEach((id, i) => {
      if (!catalog.has(id)) unknown.push(`spec.menu.${field}[${i}]: ${JSON.stringify(id)}`);
    });
  }
  if (unknown.length === 0)
    return { status: 'True', reason: 'ItemsKnown', message: `every menu item is in the catalog of ${model}` };
  return {
    status: 'False',
    reason: 'UnknownMenuItem',
    message: `not in the item catalog of RecommenderModel ${model}: ${unknown.slice(0, 20).join(', ')}${unknown.length > 20 ? `, and ${unknown.length - 20} more` : ''}`,
  };
}
