/**
 * Loyalty offers from churn risk: users likely to lapse get a win-back discount on a drink
 * they like, middling risk gets bonus points, and anyone with enough points is shown what
 * they can redeem them for.
 */
import { USER_FEATURES, type CatalogItem } from '../../../contracts/features.js';

/** Points per dollar of drink price when redeeming. */
export const POINTS_PER_DOLLAR = 50;

const col = (name: (typeof USER_FEATURES)[number]) => USER_FEATURES.indexOf(name);

/** Churn risk in [0,1] from recency and frequency, used when no churn model is loaded. */
export function heuristicChurnRisk(user: ArrayLike<number>): number {
  const recency = user[col('recency_days')] ?? 90;
  const frequency = user[col('frequency_30d')] ?? 0;
  const z = 0.12 * (recency - 14) - 0.35 * frequency;
  return 1 / (1 + Math.exp(-z));
}

export type RiskBand = 'low' | 'medium' | 'high';

/** Band of a churn risk. */
export function riskBand(risk: number): RiskBand {
  return risk >= 0.6 ? 'high' : risk >= 0.3 ? 'medium' : 'low';
}

/** One offer shown to the user. */
export interface Offer {
  kind: 'win_back' | 'bonus_points' | 'redeem' | 'welcome';
  title: string;
  itemId?: string;
  discountPct?: number;
  pointsMultiplier?: number;
  pointsCost?: number;
}

/** Points needed to redeem an item. */
export function pointsCost(item: CatalogItem): number {
  return Math.ceil((item.price * POINTS_PER_DOLLAR) / 10) * 10;
}

/**
 * Offers for a user. `favorites` are catalog items the user recently ordered (best first),
 * `popular` the store's popular drinks; `known` is false for users without features.
 */
export function buildOffers(input: {
  risk: number;
  points: number;
  known: boolean;
  favorites: readonly CatalogItem[];
  popular: readonly CatalogItem[];
}): Offer[] {
  const offers: Offer[] = [];
  const pick = input.favorites[0] ?? input.popular[0];
  if (!input.known) {
    offers.push({
      kind: 'welcome',
      title: 'Welcome: double points on your first three orders',
      pointsMultiplier: 2,
    });
  } else if (riskBand(input.risk) === 'high') {
    offers.push({
      kind: 'win_back',
      title: pick ? `20% off your next ${pick.name}` : '20% off your next drink',
      discountPct: 20,
      ...(pick ? { itemId: pick.id } : {}),
    });
  } else if (riskBand(input.risk) === 'medium') {
    offers.push({ kind: 'bonus_points', title: 'Double points on your next visit', pointsMultiplier: 2 });
  }
  const seen = new Set<string>();
  for (const item of [...input.favorites, ...input.popular]) {
    if (offers.filter((o) => o.kind === 'redeem').length >= 2) break;
    if (seen.has(item.id) || item.kind !== 'drink') continue;
    seen.add(item.id);
    const cost = pointsCost(item);
    if (cost <= input.points) {
      offers.push({
        kind: 'redeem',
        title: `Redeem ${cost} points for a ${item.name}`,
        itemId: item.id,
        pointsCost: cost,
      });
    }
  }
  return offers;
}
