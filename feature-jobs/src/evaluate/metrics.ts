/** Offline metrics, as pure functions (baseline histograms: contracts/drift-binning.ts). */

/** 1-based rank of `target` among `scores` over `candidates` (ties count against the target). */
export function rankOf(scores: ArrayLike<number>, candidates: ArrayLike<number>, target: number): number {
  const s = scores[target]!;
  let rank = 1;
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i]!;
    if (c !== target && scores[c]! >= s) rank++;
  }
  return rank;
}

/** Recall@k for one relevant item: 1 when its rank is within k. */
export function recallAtK(rank: number, k: number): number {
  return rank <= k ? 1 : 0;
}

/** NDCG@k for one relevant item (ideal DCG = 1). */
export function ndcgAtK(rank: number, k: number): number {
  return rank <= k ? 1 / Math.log2(rank + 1) : 0;
}

/** Area under the ROC curve (Mann-Whitney, ties averaged); NaN when one class is empty. */
export function auc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  let pos = 0;
  let rankSum = 0;
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && scores[idx[j + 1]!] === scores[idx[i]!]) j++;
    const avgRank = (i + j + 2) / 2;
    for (let k = i; k <= j; k++) {
      if (labels[idx[k]!]) {
        pos++;
        rankSum += avgRank;
      }
    }
    i = j + 1;
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) return Number.NaN;
  return (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

/** Mean absolute error. */
export function mae(pred: ArrayLike<number>, truth: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < pred.length; i++) s += Math.abs(pred[i]! - truth[i]!);
  return pred.length ? s / pred.length : Number.NaN;
}
