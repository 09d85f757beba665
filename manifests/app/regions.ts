/** StoreRegion specs from the generator's store list: one region per generator region (pure). */
import { buildCatalog } from '../../feature-jobs/src/generate/catalog.js';
import { REGIONS, buildStores, type GenStore } from '../../feature-jobs/src/generate/stores.js';
import type { StoreRegionSpec } from '../../operator/src/api/v1alpha1/storeregion.js';
import type { SiteConfig } from './site.js';

/** One region's name and spec. */
export interface RegionSpec {
  readonly name: string;
  readonly spec: StoreRegionSpec;
}

/** The stores `crema-jobs generate` builds for the site's seed and sizes (same orders per day: 0.4 × users). */
export function generatorStores(site: SiteConfig): GenStore[] {
  const { seed, stores, users } = site.generator;
  const drinks = buildCatalog(seed).items.filter((i) => i.kind === 'drink');
  return buildStores(
    seed,
    stores,
    users * 0.4,
    drinks.map((d) => d.id),
  );
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)]!;
}

/**
 * One StoreRegion per generator region that has stores, in the generator's region order: its
 * stores, timezone, the median store capacity (what a typical store makes per hour; pickup-time
 * promises are bounded by it), the site's peak and freeze windows, and floors sized by store count.
 */
export function buildRegionSpecs(site: SiteConfig, stores: readonly GenStore[]): RegionSpec[] {
  return REGIONS.flatMap((r) => {
    const mine = stores.filter((s) => s.region === r.name);
    if (mine.length === 0) return [];
    const minReplicas = Math.max(1, Math.ceil(mine.length / site.storesPerFloorReplica));
    const maxReplicas = Math.max(minReplicas, Math.ceil(mine.length / site.storesPerMaxReplica));
    return [
      {
        name: r.name,
        spec: {
          stores: mine.map((s) => s.id),
          timezone: r.timezone,
          peakWindows: site.peakWindows.map((w) => ({ ...w, days: [...w.days] })),
          capacity: { drinksPerHourPerStore: median(mine.map((s) => s.capacityPerHour)) },
          serving: { modelRef: site.regionModel, minReplicas, maxReplicas },
          freezeWindows: site.freezeWindows.map((w) => ({ ...w, days: [...w.days] })),
        },
      },
    ];
  });
}
