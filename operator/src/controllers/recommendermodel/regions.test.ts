import { describe, expect, it } from 'vitest';
import type { StoreRegion } from '../../api/v1alpha1/index.js';
import type { RecommenderModel } from './types.js';
import {
  REGION_MENU_MAX_BYTES,
  buildRegionMenu,
  checkRegionMenuPublished,
  configMapDataBytes,
} from './regions.js';

const model = {
  apiVersion: 'crema.dev/v1alpha1',
  kind: 'RecommenderModel',
  metadata: { name: 'drinks', namespace: 'shop', uid: 'u1' },
  spec: { model: { uri: 'file:///m.onnx', sha256: 'a'.repeat(64), task: 'drink-ranking' } },
} as RecommenderModel;

/** `n` regions of `stores` stores each, store ids of `idLength` characters, on model drinks. */
function regions(n: number, stores: number, idLength = 24): StoreRegion[] {
  return Array.from({ length: n }, (_, i) => ({
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'StoreRegion',
    metadata: { name: `region-${i}`, namespace: 'shop' },
    spec: {
      stores: Array.from({ length: stores }, (_, j) => `r${i}-${String(j).padStart(idLength - 4, '0')}`),
      timezone: 'UTC',
      serving: { modelRef: 'drinks' },
      menu: { unavailable: ['d003'] },
    },
  }));
}

describe('the regions ConfigMap size guard', () => {
  it('counts bytes as the API server does (keys and UTF-8 values)', () => {
    expect(configMapDataBytes({ data: { 'a.json': 'é' } } as never)).toBe(6 + 2);
  });

  it.each([
    // [regions, stores each, id length, applied]
    [8, 100, 24, true], // 800 stores: ~22 KiB
    [20, 2000, 16, true], // 40,000 stores of 16-character ids: ~742 KiB, fits
    [20, 2000, 24, false], // 40,000 stores of 24-character ids: ~1 MiB, the API server would refuse it
    [24, 2000, 64, false], // the CRD's longest ids
  ])('%i regions x %i stores (ids of %i chars): applied %s', (n, stores, idLength, applied) => {
    const { configMap, tooLarge } = buildRegionMenu(model, regions(n, stores, idLength));
    const bytes = configMapDataBytes(configMap);
    expect(tooLarge === undefined).toBe(applied);
    expect(bytes <= REGION_MENU_MAX_BYTES).toBe(applied);
    if (tooLarge)
      expect(tooLarge).toEqual({
        configMap: 'drinks-regions',
        bytes,
        limit: REGION_MENU_MAX_BYTES,
        regions: n,
        stores: n * stores,
      });
  });

  it('regions of other models do not count', () => {
    const other = regions(20, 2000, 24).map((r) => ({
      ...r,
      spec: { ...r.spec, serving: { modelRef: 'muffins' } },
    }));
    expect(buildRegionMenu(model, [...regions(2, 10), ...other]).tooLarge).toBeUndefined();
  });

  it('a region of a model whose menus do not fit says so, naming the ConfigMap, the model and the size', () => {
    const { tooLarge } = buildRegionMenu(model, regions(20, 2000, 24));
    const c = checkRegionMenuPublished('drinks', tooLarge);
    expect(c).toMatchObject({ status: 'False', reason: 'ConfigMapTooLarge' });
    expect(c.message).toContain(
      `ConfigMap drinks-regions of RecommenderModel drinks would hold ${tooLarge!.bytes} bytes`,
    );
    expect(c.message).toContain('40000 stores in 20 regions');
    expect(c.message).toContain('900 KiB');
    expect(checkRegionMenuPublished('drinks', undefined)).toMatchObject({
      status: 'True',
      reason: 'ConfigMapApplied',
    });
  });
});
