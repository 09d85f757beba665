/**
 * Offline metrics of the four models on held-out examples, given each model's scores for the
 * example rows. The same functions score the TypeScript models at training time and the ONNX
 * graphs in `evaluate`, so the two reports can be compared number for number.
 */
import type { WindowExamples } from '../train/examples.js';
import { ADDON_FEATURES, RANKING_FEATURES } from '../train/examples.js';
import { auc, mae, ndcgAtK, recallAtK } from './metrics.js';

const POP = RANKING_FEATURES.indexOf('popularity');
const STORE_POP = RANKING_FEATURES.indexOf('store_hour_popularity');
const ATTACH = ADDON_FEATURES.indexOf('addon_attach_rate');
const ADDON_POP = ADDON_FEATURES.indexOf('addon_popularity');

export interface RankingMetrics {
  readonly lists: number;
  readonly candidatesPerList: number;
  readonly recall_at_5: number;
  readonly ndcg_at_10: number;
  readonly popularity_recall_at_5: number;
  readonly popularity_ndcg_at_10: number;
  readonly store_hour_popularity_recall_at_5: number;
  readonly store_hour_popularity_ndcg_at_10: number;
  /** recall@5 of the model divided by the global popularity baseline's (goal ≥ 1.5). */
  readonly recall_at_5_lift: number;
}

/** Ranking metrics; `scores[r]` is the model's score of evaluation row r. */
export function computeRankingMetrics(ex: WindowExamples, scores: ArrayLike<number>): RankingMetrics {
  const x = ex.ranking.x;
  const cols = RANKING_FEATURES.length;
  const sums = { m5: 0, m10: 0, p5: 0, p10: 0, s5: 0, s10: 0 };
  let cands = 0;
  const rank = (score: (r: number) => number, row0: number, n: number, t: number) => {
    const st = score(row0 + t);
    let k = 1;
    for (let r = 0; r < n; r++) if (r !== t && score(row0 + r) >= st) k++;
    return k;
  };
  for (const g of ex.rankingEval) {
    const n = g.candidates.length;
    const t = g.candidates.indexOf(g.target);
    cands += n;
    const rm = rank((r) => scores[r]!, g.row0, n, t);
    const rp = rank((r) => x[r * cols + POP]!, g.row0, n, t);
    const rs = rank((r) => x[r * cols + STORE_POP]!, g.row0, n, t);
    sums.m5 += recallAtK(rm, 5);
    sums.m10 += ndcgAtK(rm, 10);
    sums.p5 += recallAtK(rp, 5);
    sums.p10 += ndcgAtK(rp, 10);
    sums.s5 += recallAtK(rs, 5);
    sums.s10 += ndcgAtK(rs, 10);
  }
  const n = ex.rankingEval.length || 1;
  const r5 = sums.m5 / n;
  const p5 = sums.p5 / n;
  return {
    lists: ex.rankingEval.length,
    candidatesPerList: round(cands / n),
    recall_at_5: round(r5),
    ndcg_at_10: round(sums.m10 / n),
    popularity_recall_at_5: round(p5),
    popularity_ndcg_at_10: round(sums.p10 / n),
    store_hour_popularity_recall_at_5: round(sums.s5 / n),
    store_hour_popularity_ndcg_at_10: round(sums.s10 / n),
    recall_at_5_lift: round(p5 ? r5 / p5 : Number.NaN),
  };
}

/** Add-on pair AUC, against (user's attach rate × add-on popularity) as the baseline score. */
export function computeAddonMetrics(ex: WindowExamples, scores: ArrayLike<number>) {
  const { x, y, rows, cols } = ex.addon;
  const base = Float64Array.from(
    { length: rows },
    (_, r) => x[r * cols + ATTACH]! * x[r * cols + ADDON_POP]!,
  );
  const labels = y.subarray(0, rows);
  return {
    rows,
    positive_share: round(labels.reduce((a, b) => a + b, 0) / (rows || 1)),
    auc: round(auc(scores, labels)),
    baseline_rate_x_popularity_auc: round(auc(base, labels)),
  };
}

/** Pickup MAE in minutes, against predicting the training mean. */
export function computePickupMetrics(ex: WindowExamples, scores: ArrayLike<number>, trainMean: number) {
  const truth = ex.pickup.y.subarray(0, ex.pickup.rows);
  return {
    rows: ex.pickup.rows,
    mae_minutes: round(mae(scores, truth)),
    baseline_mean_mae_minutes: round(mae(new Float64Array(truth.length).fill(trainMean), truth)),
    mean_minutes: round(truth.reduce((a, b) => a + b, 0) / (truth.length || 1)),
  };
}

/** Churn AUC, against days since the last order (recency) as the baseline score. */
export function computeChurnMetrics(ex: WindowExamples, scores: ArrayLike<number>) {
  const labels = ex.churn.y.subarray(0, ex.churn.rows);
  return {
    rows: ex.churn.rows,
    churn_rate: round(labels.reduce((a, b) => a + b, 0) / (labels.length || 1)),
    auc: round(auc(scores, labels)),
    baseline_recency_auc: round(auc(ex.churnRecency, labels)),
  };
}

function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
