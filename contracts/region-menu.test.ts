import { describe, expect, it } from 'vitest';
import {
  MAX_ITEM_CATALOG_BYTES,
  formatItemCatalog,
  itemCatalogAnnotation,
  parseItemCatalog,
} from './region-menu.js';

describe('the item catalog annotation', () => {
  it('round-trips item ids, each once', () => {
    expect(parseItemCatalog(formatItemCatalog(['d001', 'a150', 'd001']))).toEqual(['d001', 'a150']);
  });

  it('is left out when it would make the manifest too large for the API server', () => {
    // 20,000 ids of 9 characters: 200 KB of the 256 KiB all annotations may take together.
    const big = Array.from({ length: 20_000 }, (_, i) => `item-${String(i).padStart(4, '0')}`);
    expect(formatItemCatalog(big).length).toBeGreaterThan(MAX_ITEM_CATALOG_BYTES);
    expect(itemCatalogAnnotation(big)).toBeUndefined();
    expect(itemCatalogAnnotation(big.slice(0, 1000))).toBe(formatItemCatalog(big.slice(0, 1000)));
    expect(itemCatalogAnnotation([])).toBeUndefined();
  });
});
