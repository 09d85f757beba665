/** Offline metrics and baseline histograms, as pure functions. */
import { binOf, type BaselineHistogram } from '../../../contracts/model-metadata.js';

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

/** Re-exported: the one binning shared with serving (contracts/model-metadata.ts). */
export { binOf };

/** A histogram with (up to) `bins` quantile bins of `values`; edges are distinct and ascending. */
export function computeHistogram(values: ArrayLike<number>, bins = 10): BaselineHistogram {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  if (n === 0) return { edges: [0, 1], probs: [1] };
  const edges: number[] = [];
  for (let b = 0; b <= bins; b++) {
    const v = round6(sorted[Math.min(n - 1, Math.floor((b / bins) * n))]!);
    if (edges.length === 0 || v > edges[edges.length - 1]!) edges.push(v);
  }
  const last = round6(sorted[n - 1]!);
  if (edges[edges.length - 1]! < last) edges.push(last);
  // A constant feature still gets one bin with a width.
  if (edges.length === 1) edges.push(edges[0]! + 1);
  const counts = new Array<number>(edges.length - 1).fill(0);
  for (let i = 0; i < n; i++) counts[binOf(edges, sorted[i]!)]!++;
  return { edges, probs: counts.map((c) => round6(c / n)) };
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}
