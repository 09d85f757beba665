/**
 * A model's regional menus and capacity (ADR 0014): the operator writes them from the
 * StoreRegions that name the model (`regions.json` in ConfigMap `NAME-regions`), the serving
 * pods read the file the kubelet projects from it (REGION_MENU_DIR) and apply it per store.
 * The shape and its rules are defined here once.
 */

/** The ConfigMap holding the menus of model `model`'s regions. */
export function regionMenuConfigMapName(model: string): string {
  return `${model}-regions`;
}

/** Its key, and the file name in the mounted directory. */
export const REGION_MENU_KEY = 'regions.json';

/** Where serving pods see the ConfigMap (a read-only volume, optional: absent = full menu). */
export const REGION_MENU_DIR = '/etc/crema/regions';

/** One StoreRegion as serving needs it. */
export interface RegionMenuEntry {
  /** The StoreRegion's name. */
  readonly name: string;
  /** Its stores. */
  readonly stores: readonly string[];
  /**
   * `spec.menu.seasonal`: items offered in this region's stores whatever the catalog's season
   * window says, and (being a region's seasonal item) not in stores outside the regions naming them.
   */
  readonly seasonal: readonly string[];
  /** `spec.menu.unavailable`: items never recommended in this region's stores. */
  readonly unavailable: readonly string[];
  /** `spec.capacity.drinksPerHourPerStore`: bounds the pickup-time estimate of its stores. */
  readonly drinksPerHourPerStore?: number;
}

export interface RegionMenuConfig {
  readonly version: 1;
  /** The RecommenderModel the file was written for. */
  readonly model: string;
  /** Sorted by name. */
  readonly regions: readonly RegionMenuEntry[];
}

const isStrings = (x: unknown): x is string[] =>
  Array.isArray(x) && x.every((s) => typeof s === 'string' && s.length > 0 && s.length <= 128);

/** Problems with a config, each naming the field (empty when valid). */
export function validateRegionMenu(c: unknown): string[] {
  const o = c as Partial<RegionMenuConfig> | null;
  if (!o || typeof o !== 'object' || Array.isArray(o)) return ['config: not an object'];
  const errors: string[] = [];
  if (o.version !== 1) errors.push('version: must be 1');
  if (typeof o.model !== 'string' || o.model === '') errors.push('model: required');
  if (!Array.isArray(o.regions)) return [...errors, 'regions: a list required'];
  o.regions.forEach((r: Partial<RegionMenuEntry>, i) => {
    const at = `regions[${i}]`;
    if (!r || typeof r !== 'object') return void errors.push(`${at}: not an object`);
    if (typeof r.name !== 'string' || r.name === '') errors.push(`${at}.name: required`);
    for (const k of ['stores', 'seasonal', 'unavailable'] as const)
      if (!isStrings(r[k])) errors.push(`${at}.${k}: a list of ids required`);
    const cap = r.drinksPerHourPerStore;
    if (cap !== undefined && !(Number.isInteger(cap) && cap >= 1))
      errors.push(`${at}.drinksPerHourPerStore: a positive integer`);
  });
  return errors;
}

/**
 * Annotation training writes on a RecommenderModel: the catalog item ids the model was trained
 * on, comma-separated. The operator checks StoreRegion menus against it; without it, unchecked.
 */
export const ITEM_CATALOG_ANNOTATION = 'crema.dev/item-catalog';

/**
 * Largest ITEM_CATALOG_ANNOTATION value written (bytes). The API server refuses an object whose
 * annotations together exceed 256 KiB; a larger catalog is left out (menus are then unchecked,
 * MenuValid Unknown) rather than making the model's manifest impossible to apply.
 */
export const MAX_ITEM_CATALOG_BYTES = 128 * 1024;

/** The ITEM_CATALOG_ANNOTATION value for item ids `ids` (each once, in catalog order). */
export function formatItemCatalog(ids: readonly string[]): string {
  return [...new Set(ids)].join(',');
}

/** The annotation value for `ids`, or undefined when it would exceed MAX_ITEM_CATALOG_BYTES. */
export function itemCatalogAnnotation(ids: readonly string[]): string | undefined {
  const v = formatItemCatalog(ids);
  return v && Buffer.byteLength(v, 'utf8') <= MAX_ITEM_CATALOG_BYTES ? v : undefined;
}

/** The item ids of an ITEM_CATALOG_ANNOTATION value (empty entries dropped). */
export function parseItemCatalog(value: string): string[] {
  return value.split(',').filter(Boolean);
}
