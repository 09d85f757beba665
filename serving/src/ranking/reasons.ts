/**
 * One short, human reason per recommended drink, from the strongest signal behind it. Reasons
 * describe the user's own history only in words, never by echoing ids.
 */
import type { CatalogItem } from '../../../contracts/features.js';
import { categoryAffinity, recentlyOrdered } from './plan.js';

/** Signals available for explaining one item. */
export interface ReasonInput {
  readonly item: CatalogItem;
  readonly itemIndex: number;
  readonly user: ArrayLike<number>;
  readonly personalized: boolean;
  /** The item's store-hour popularity and the mean over the candidates. */
  readonly hourPopularity: number;
  readonly meanHourPopularity: number;
}

/** The reason text shown next to a recommended drink. */
export function explainRecommendation(r: ReasonInput): string {
  if (r.personalized && recentlyOrdered(r.user, r.itemIndex)) return 'One of your recent favorites';
  if (r.item.season) return 'Seasonal special, available for a limited time';
  if (r.personalized && r.item.category !== 'addon' && categoryAffinity(r.user, r.item) >= 0.4) {
    return `Because you enjoy ${r.item.category} drinks`;
  }
  if (r.meanHourPopularity > 0 && r.hourPopularity >= 1.5 * r.meanHourPopularity) {
    return 'Popular at this store at this time of day';
  }
  return r.personalized ? 'Picked for your taste' : 'Popular with new customers';
}
